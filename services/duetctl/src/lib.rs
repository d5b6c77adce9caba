//! The library side of `duetctl`: what the CLI does, callable from tests.

pub mod certs;
