//! The library side of `duetctl`: what the CLI does, callable from tests.
//!
//! `duetctl` talks to the services of the unit it runs on (their gRPC
//! addresses come from the unit file given with `--config`, or the
//! defaults) and prints text or, with `--json`, the protobuf JSON of the
//! answers (the same JSON grpcurl prints). With `--etcd` it reads a
//! fleet's etcd instead (O7): `fleet status` for every pair, `--pair NAME
//! config ...` for one pair's image there ([`etcd_args`], [`fleet`]).

pub mod certs;
pub mod client;
pub mod config_cmd;
pub mod doctor;
pub mod etcd_args;
pub mod fleet;
pub mod status;
