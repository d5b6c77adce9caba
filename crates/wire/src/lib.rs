//! Bytes on the wire, and nothing else.
//!
//! This crate parses and emits the packets duet speaks: the IPv4 header
//! around a CARP advert ([`ipv4`]), the CARP version 2 advert itself as
//! ucarp 1.5 sends it, with its HMAC-SHA1 and duet's HMAC-SHA256 mode
//! ([`carp`], [`auth`]), and the Ethernet/ARP frame of a gratuitous ARP
//! ([`arp`]). It knows no sockets, clocks or state: every function maps
//! bytes to values or values to bytes. Length is checked once when a view
//! is made; after that no accessor can panic, whatever the input.

pub mod arp;
pub mod auth;
pub mod carp;
pub mod checksum;
pub mod ipv4;
pub mod peer;

pub use carp::{Advert, AuthData, CarpError};
pub use ipv4::{Ipv4Error, Ipv4Header};
