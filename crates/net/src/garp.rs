//! Gratuitous ARP on an `AF_PACKET` socket.
//!
//! A new active unit announces each VIP with a gratuitous ARP (a broadcast
//! request whose sender and target address are the VIP, sent from the
//! virtual MAC) so that switches relearn the MAC's port and hosts refresh
//! their ARP caches. [`GarpSender`] owns one raw packet socket bound to one
//! interface and sends such frames, built by `duet_wire::arp`, exactly as
//! given: the kernel adds nothing, so the Ethernet source can be the virtual
//! MAC whatever the interface's own address is.
//!
//! It sends one frame per call: how many announcements to make and how far
//! apart is the caller's decision. It never receives: the socket is opened
//! with protocol 0, which makes the kernel deliver it no frames at all, where
//! a socket for `ETH_P_ARP` would get (and queue, unread) a copy of every ARP
//! frame on the segment. The protocol of outgoing frames is given per send.
//! Needs `CAP_NET_RAW`.

use std::io;
use std::net::Ipv4Addr;

use duet_wire::arp::{ArpPacket, BROADCAST, ETHERTYPE_ARP};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::packet::link_addr;

/// Why a gratuitous ARP could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum GarpError {
    /// The interface index cannot name an interface (0 would mean "any").
    #[error("{ifname}: {ifindex} is not a valid interface index")]
    InvalidIndex { ifname: String, ifindex: u32 },
    /// The packet socket could not be created or configured (needs
    /// `CAP_NET_RAW`).
    #[error("{ifname}: cannot open an AF_PACKET socket: {source}")]
    Open {
        ifname: String,
        #[source]
        source: io::Error,
    },
    /// Binding to the interface failed (ENODEV: no interface has that index).
    #[error("{ifname}: cannot bind the ARP socket to interface index {ifindex}: {source}")]
    Bind {
        ifname: String,
        ifindex: u32,
        #[source]
        source: io::Error,
    },
    /// The kernel did not take the frame (ENETDOWN when the interface is
    /// down, ENXIO when it is gone, EAGAIN when its queue is full).
    #[error("{ifname}: cannot send a gratuitous ARP for {ip}: {source}")]
    Send {
        ifname: String,
        ip: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    /// The kernel took only part of the frame.
    #[error("{ifname}: gratuitous ARP for {ip} went out short ({sent} of {len} bytes)")]
    ShortSend { ifname: String, ip: Ipv4Addr, sent: usize, len: usize },
}

/// Sends gratuitous ARPs on one interface.
#[derive(Debug)]
pub struct GarpSender {
    socket: Socket,
    ifname: String,
    /// Where each frame goes: the interface, as protocol `ETH_P_ARP`.
    dest: SockAddr,
}

impl GarpSender {
    /// Opens a send-only packet socket bound to interface `ifindex`.
    ///
    /// `ifindex` decides the interface; `ifname` only names it in errors.
    /// The socket belongs to the calling thread's network namespace.
    pub fn open(ifname: &str, ifindex: u32) -> Result<Self, GarpError> {
        let invalid = || GarpError::InvalidIndex { ifname: ifname.to_owned(), ifindex };
        let index = i32::try_from(ifindex).map_err(|_| invalid())?;
        if index == 0 {
            return Err(invalid());
        }
        let open_error = |source| GarpError::Open { ifname: ifname.to_owned(), source };
        // Protocol 0 (`None`): receive nothing, see the module doc.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None).map_err(open_error)?;
        // A send must never block its caller, even with the device queue
        // full: better an error (EAGAIN) now than an election stalled.
        socket.set_nonblocking(true).map_err(open_error)?;
        socket.bind(&link_addr(index, 0, BROADCAST)).map_err(|source| GarpError::Bind {
            ifname: ifname.to_owned(),
            ifindex,
            source,
        })?;
        Ok(Self { socket, ifname: ifname.to_owned(), dest: link_addr(index, ETHERTYPE_ARP, BROADCAST) })
    }

    /// Sends one gratuitous ARP announcing `ip` at `mac`: a broadcast frame
    /// whose Ethernet source and ARP sender are `mac`.
    pub fn send(&self, mac: [u8; 6], ip: Ipv4Addr) -> Result<(), GarpError> {
        let frame = ArpPacket::gratuitous(mac, ip).to_frame();
        let sent = self.socket.send_to(&frame, &self.dest).map_err(|source| GarpError::Send {
            ifname: self.ifname.clone(),
            ip,
            source,
        })?;
        if sent != frame.len() {
            return Err(GarpError::ShortSend { ifname: self.ifname.clone(), ip, sent, len: frame.len() });
        }
        Ok(())
    }
}

/// A `sockaddr_ll` for interface `ifindex` and EtherType `protocol` (0: none),
/// with the broadcast address as link-layer destination.
///
/// socket2 0.6 has no safe constructor for link-layer addresses, so this
/// fills its zeroed storage as a `sockaddr_ll` and wraps it with the length
/// of one. Going through socket2's own storage type keeps the unsafe part to
/// a typed view and one constructor, instead of raw `bind`/`sendto` calls
/// with pointers and lengths.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_address_is_a_packet_address() {
        let addr = link_addr(3, ETHERTYPE_ARP, BROADCAST);
        assert_eq!(addr.family(), libc::AF_PACKET as libc::sa_family_t);
        assert_eq!(addr.len() as usize, size_of::<libc::sockaddr_ll>());
        assert!(addr.as_socket().is_none());
    }

    #[test]
    fn index_zero_and_out_of_range_are_refused_before_any_syscall() {
        for ifindex in [0, u32::MAX] {
            assert!(matches!(GarpSender::open("eth0", ifindex), Err(GarpError::InvalidIndex { .. })));
        }
    }
}
