//! Who answers ARP for an address: a request (an RFC 5227 probe, sender
//! address 0.0.0.0, so no neighbour learns anything from it) broadcast on
//! one interface, and every reply collected for a while. `duetctl doctor`
//! uses it to find a host that answers for the pair's shared address.

use std::io::{self, Read as _};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use duet_wire::arp::{ArpPacket, ETHERTYPE_ARP, OP_REPLY, OP_REQUEST};
use socket2::{Domain, Protocol, Socket, Type};

use crate::packet::link_addr;

/// One answer: who (`ip`) is at `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

/// The index and MAC address of interface `ifname`, from sysfs (which shows
/// the network namespace it was mounted in: a process started in the
/// namespace, as by `ip netns exec`, sees its own).
pub fn interface(ifname: &str) -> io::Result<(i32, [u8; 6])> {
    let index: i32 = std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex"))?
        .trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((index, parse_mac(ifname, &std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?)?))
}

/// `aa:bb:cc:dd:ee:ff` of interface `ifname`.
pub fn parse_mac(ifname: &str, s: &str) -> io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{ifname}: no Ethernet address")));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    Ok(mac)
}

/// Broadcasts one request for each of `targets` on the interface of index
/// `ifindex` (whose MAC is `own`) and collects the replies for `wait`.
/// Blocking; needs `CAP_NET_RAW`.
pub fn who_has(ifindex: i32, own: [u8; 6], targets: &[Ipv4Addr], wait: Duration) -> io::Result<Vec<Answer>> {
    let proto = Protocol::from(i32::from(ETHERTYPE_ARP.to_be()));
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(proto))?;
    socket.bind(&link_addr(ifindex, ETHERTYPE_ARP, [0; 6]))?;
    for &t in targets {
        let probe = ArpPacket {
            op: OP_REQUEST,
            sender_mac: own,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: [0; 6],
            target_ip: t,
        };
        socket.send_to(&probe.to_frame(), &link_addr(ifindex, ETHERTYPE_ARP, [0xff; 6]))?;
    }
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 1600];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(out);
        }
        socket.set_read_timeout(Some(left))?;
        let n = match (&socket).read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(out),
            Err(e) => return Err(e),
        };
        if let Some((a, _)) = ArpPacket::parse_frame(&buf[..n])
            && a.op == OP_REPLY
            && targets.contains(&a.sender_ip)
        {
            let answer = Answer { ip: a.sender_ip, mac: a.sender_mac };
            if !out.contains(&answer) {
                out.push(answer);
            }
        }
    }
}
