//! `AF_PACKET` plumbing shared by the modules that work below IP: the
//! `sockaddr_ll` that names an interface, and a sender of whole Ethernet
//! frames (used by tests and tools that must put exactly given bytes on the
//! wire, such as a frame with a wrong IP checksum, which a raw IP socket
//! would fix).

use std::io;

use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};

/// The `sockaddr_ll` for interface `ifindex`, protocol `protocol` (host
/// order) and link-layer destination `dest`.
#[allow(unsafe_code)]
pub(crate) fn link_addr(ifindex: i32, protocol: u16, dest: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `view_as` requires one of this platform's `sockaddr_*` types,
    // which `sockaddr_ll` is; it asserts that the type fits in the storage
    // (20 of 128 bytes). The storage is zeroed, and all zeros is a valid
    // `sockaddr_ll` (integers and a byte array only).
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = ifindex;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&dest);
    // SAFETY: `SockAddr::new` needs family, length and contents to agree:
    // the storage holds an initialised `sockaddr_ll` with family AF_PACKET,
    // and the length is exactly that of a `sockaddr_ll`.
    unsafe { SockAddr::new(storage, size_of::<libc::sockaddr_ll>() as libc::socklen_t) }
}

/// Sends whole Ethernet frames, as given, out of one interface.
#[derive(Debug)]
pub struct FrameSender {
    socket: Socket,
    dest: SockAddr,
}

impl FrameSender {
    /// A send-only packet socket on interface `ifindex` (of the calling
    /// thread's network namespace). Needs `CAP_NET_RAW`.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let index = i32::try_from(ifindex)
            .ok()
            .filter(|i| *i > 0)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // Protocol 0: this socket receives nothing.
        let socket = Socket::new(Domain::PACKET, Type::RAW, None)?;
        socket.bind(&link_addr(index, 0, [0; 6]))?;
        Ok(Self { socket, dest: link_addr(index, 0, [0; 6]) })
    }

    /// Sends `frame` (destination MAC, source MAC, EtherType, payload).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sent = self.socket.send_to(frame, &self.dest)?;
        if sent == frame.len() { Ok(()) } else { Err(io::Error::from(io::ErrorKind::WriteZero)) }
    }
}
