//! Thin adapters between duet's pure logic and the Linux kernel.
//!
//! Each module wraps one kernel interface and does no protocol work of its
//! own: [`carp_socket`] (raw IPv4 sockets for protocol 112: send with TTL
//! 255, join 224.0.0.18, receive every advert as it came off the wire),
//! [`netlink`] (links, their state and events, IPv4 addresses, macvlan),
//! [`garp`] (gratuitous ARP on an AF_PACKET socket), [`sysctl`],
//! [`watch`] (a file replaced in a directory, over inotify) and [`timer`]
//! (a deadline on a timerfd, exact where tokio's wheel wakes early).
//! This is the only crate of the workspace allowed `unsafe`, and only for
//! socket addresses and options the safe crates do not cover ([`packet`]
//! builds the one `sockaddr_ll`); each use says why. [`conntrack`] is the
//! kernel connection-tracking table over ctnetlink (dump, create with NAT
//! bindings, update, delete, events) for the replicator.

pub mod arp_probe;
pub mod carp_socket;
pub mod conntrack;
pub mod garp;
pub mod netlink;
pub mod packet;
pub mod pidfd;
pub mod sched;
pub mod sysctl;
pub mod timer;
pub mod watch;
