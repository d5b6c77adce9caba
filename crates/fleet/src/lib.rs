//! A fleet of duet pairs in etcd (O7): each pair's image generations with
//! a head written by compare-and-swap, and each unit's status under its
//! lease. [`keys`] is the layout, [`client`] what a unit or `duetctl` can
//! do with one connection, [`session`] the task a unit keeps. The rules
//! (what a new head means for the unit) are configsync's.
//!
//! Why a crate of its own: the etcd client stays out of configsync's and
//! duetctl's other code, and the adapter is tested against a real etcd on
//! its own (`tests/etcd.rs`).

pub mod client;
pub mod keys;
pub mod record;
pub mod session;

pub use client::{Fleet, FleetError, Settings, Written};
pub use keys::Keys;
pub use record::{Head, Square, UnitRecord};
