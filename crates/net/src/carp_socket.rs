//! Raw sockets for CARP adverts on one interface.
//!
//! Sending uses a raw IPv4 socket for protocol 112: the kernel builds the
//! IPv4 header (TTL 255, DSCP CS6, source = the unit's address, DF), the
//! socket is bound to the interface, joins 224.0.0.18 there so that the NIC
//! accepts the group, does not loop its own multicast back, and has a
//! drop-everything filter so its receive queue never fills.
//!
//! Receiving uses an `AF_PACKET` datagram socket bound to the interface
//! with a BPF filter that keeps only incoming IPv4 protocol-112 packets. It
//! sees each packet as it came off the wire, *before* the IP layer: a bad
//! IP checksum, a bad length or a wrong destination reaches the election
//! core, which checks and counts every field itself (E15). The filter runs
//! in the kernel, so a flood of other traffic costs nothing here.
//!
//! This module knows nothing of CARP's fields; it moves bytes.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::packet::link_addr;

/// IP protocol number of CARP.
const PROTO_CARP: i32 = 112;
/// CARP's multicast group.
pub const CARP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// DSCP CS6 (network control), as routing protocols use.
const TOS_CS6: u32 = 0xc0;
/// Receive buffer: enough for a burst of a flood without starving the
/// partner's adverts while the election is busy for a moment.
const RECV_BUFFER: usize = 1 << 20;

/// Why a CARP socket could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum CarpSocketError {
    /// Creating or configuring a socket failed (needs CAP_NET_RAW).
    #[error("{iface}: cannot set up the CARP socket ({what}): {source}")]
    Setup {
        iface: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// Sending an advert failed.
    #[error("{iface}: cannot send an advert to {dst}: {source}")]
    Send {
        iface: String,
        dst: Ipv4Addr,
        #[source]
        source: io::Error,
    },
    /// Receiving failed.
    #[error("{iface}: cannot receive: {source}")]
    Recv {
        iface: String,
        #[source]
        source: io::Error,
    },
}

/// How adverts leave this interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    Multicast,
    Broadcast,
    Unicast,
}

/// The send and receive sockets of one interface.
#[derive(Debug)]
pub struct CarpSocket {
    iface: String,
    send: Socket,
    recv: AsyncFd<Socket>,
}

/// Classic BPF: keep incoming IPv4 packets whose protocol is 112.
///
/// ```text
/// ld  [pkttype]          ; ancillary load (SKF_AD_OFF + SKF_AD_PKTTYPE)
/// jeq #PACKET_OUTGOING, drop
/// ldb [9]                ; IPv4 protocol (the socket is SOCK_DGRAM: data starts at the IP header)
/// jeq #112, keep, drop
/// keep: ret #262144
/// drop: ret #0
/// ```
fn carp_filter() -> [SockFilter; 6] {
    const SKF_AD_PKTTYPE: u32 = 0xffff_f000 + 4;
    const PACKET_OUTGOING: u32 = 4;
    [
        SockFilter::new(0x20, 0, 0, SKF_AD_PKTTYPE),
        SockFilter::new(0x15, 3, 0, PACKET_OUTGOING),
        SockFilter::new(0x30, 0, 0, 9),
        SockFilter::new(0x15, 0, 1, PROTO_CARP as u32),
        SockFilter::new(0x06, 0, 0, 0x4_0000),
        SockFilter::new(0x06, 0, 0, 0),
    ]
}

/// Classic BPF that drops everything (for the send-only socket).
fn drop_all() -> [SockFilter; 1] {
    [SockFilter::new(0x06, 0, 0, 0)]
}

impl CarpSocket {
    /// Opens the sockets of interface `iface` (index `ifindex`) whose own
    /// address is `unit_addr`. Must run inside a tokio runtime.
    pub fn open(iface: &str, ifindex: u32, unit_addr: Ipv4Addr, mode: SendMode) -> Result<Self, CarpSocketError> {
        let setup = |what: &'static str| {
            let iface = iface.to_string();
            move |source: io::Error| CarpSocketError::Setup { iface: iface.clone(), what, source }
        };
        let send =
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(PROTO_CARP))).map_err(setup("raw socket"))?;
        send.attach_filter(&drop_all()).map_err(setup("send socket filter"))?;
        send.bind_device(Some(iface.as_bytes())).map_err(setup("SO_BINDTODEVICE"))?;
        send.bind(&SockAddr::from(SocketAddrV4::new(unit_addr, 0))).map_err(setup("bind to the unit address"))?;
        send.set_ttl_v4(255).map_err(setup("IP_TTL"))?;
        send.set_multicast_ttl_v4(255).map_err(setup("IP_MULTICAST_TTL"))?;
        send.set_multicast_loop_v4(false).map_err(setup("IP_MULTICAST_LOOP"))?;
        send.set_multicast_if_v4(&unit_addr).map_err(setup("IP_MULTICAST_IF"))?;
        send.set_tos_v4(TOS_CS6).map_err(setup("IP_TOS"))?;
        send.set_nonblocking(true).map_err(setup("non-blocking"))?;
        match mode {
            SendMode::Multicast => send.join_multicast_v4(&CARP_GROUP, &unit_addr).map_err(setup("join 224.0.0.18"))?,
            SendMode::Broadcast => send.set_broadcast(true).map_err(setup("SO_BROADCAST"))?,
            SendMode::Unicast => {}
        }

        // Protocol 0 at creation: the socket receives nothing until it is
        // bound (with ETH_P_IP) to the interface, after its filter is in
        // place; created with ETH_P_IP it would take every IP packet of
        // every interface until then.
        let eth_p_ip = libc::ETH_P_IP as u16;
        let recv = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(0))).map_err(setup("packet socket"))?;
        recv.attach_filter(&carp_filter()).map_err(setup("receive filter"))?;
        recv.bind(&link_addr(i32::try_from(ifindex).unwrap_or(0), eth_p_ip, [0; 6]))
            .map_err(setup("bind packet socket"))?;
        // Best effort: the default is fine when the limit is lower.
        let _ = recv.set_recv_buffer_size(RECV_BUFFER);
        recv.set_nonblocking(true).map_err(setup("non-blocking"))?;
        // Anything queued before the bind took effect is not ours to judge.
        let mut scratch = [0u8; 64];
        while recv_into(&recv, &mut scratch).is_ok() {}
        let recv = register(recv).map_err(setup("register with tokio"))?;
        Ok(Self { iface: iface.to_string(), send, recv })
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Sends one CARP payload to `dst`.
    pub fn send(&self, dst: Ipv4Addr, payload: &[u8]) -> Result<(), CarpSocketError> {
        self.send
            .send_to(payload, &SockAddr::from(SocketAddrV4::new(dst, 0)))
            .map(|_| ())
            .map_err(|source| CarpSocketError::Send { iface: self.iface.clone(), dst, source })
    }

    /// Waits for and receives one IPv4 packet into `buf`; returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize, CarpSocketError> {
        loop {
            let mut guard = self
                .recv
                .readable()
                .await
                .map_err(|source| CarpSocketError::Recv { iface: self.iface.clone(), source })?;
            match guard.try_io(|fd| recv_into(fd.get_ref(), buf)) {
                Ok(r) => return r.map_err(|source| CarpSocketError::Recv { iface: self.iface.clone(), source }),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one packet if one is queued, without waiting.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>, CarpSocketError> {
        match recv_into(self.recv.get_ref(), buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(source) => Err(CarpSocketError::Recv { iface: self.iface.clone(), source }),
        }
    }

    /// The raw receive descriptor (for diagnostics).
    pub fn recv_fd(&self) -> i32 {
        self.recv.get_ref().as_raw_fd()
    }
}

fn recv_into(s: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    io::Read::read(&mut &*s, buf)
}

/// Registers an owned socket with tokio's reactor for readability.
#[allow(unsafe_code)]
pub(crate) fn register(s: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor: it stays open and `as_raw_fd`
    // returns the same value until the `Socket` (moved into the `AsyncFd`)
    // is dropped together with it.
    unsafe { AsyncFd::register_with_interest(s, Interest::READABLE) }.map_err(io::Error::from)
}
