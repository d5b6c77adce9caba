//! Ethernet II frames carrying ARP (RFC 826), for gratuitous ARP.
//!
//! ```text
//! Ethernet: dst(6) src(6) ethertype(2) = 0x0806
//! ARP:      htype(2)=1 ptype(2)=0x0800 hlen(1)=6 plen(1)=4 oper(2)
//!           sha(6) spa(4) tha(6) tpa(4)
//! ```
//!
//! A gratuitous ARP announces `ip is at mac` to the segment: a broadcast
//! request whose sender and target address are both the announced address
//! (what ucarp and keepalived send; every stack updates its cache from it).

use std::net::Ipv4Addr;

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Bytes of an Ethernet header.
pub const ETHER_HEADER_LEN: usize = 14;
/// Bytes of an IPv4-over-Ethernet ARP message.
pub const ARP_LEN: usize = 28;
/// Broadcast MAC address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// ARP operation codes.
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// An IPv4-over-Ethernet ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    /// The gratuitous request announcing `ip` at `mac`.
    pub fn gratuitous(mac: [u8; 6], ip: Ipv4Addr) -> Self {
        Self { op: OP_REQUEST, sender_mac: mac, sender_ip: ip, target_mac: [0; 6], target_ip: ip }
    }

    /// True for a gratuitous announcement (sender and target address equal).
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// Parses an ARP message (without the Ethernet header).
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < ARP_LEN || b[0..2] != [0, 1] || b[2..4] != [8, 0] || b[4] != 6 || b[5] != 4 {
            return None;
        }
        let mac = |o: usize| -> [u8; 6] { [b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5]] };
        let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
        Some(Self {
            op: u16::from_be_bytes([b[6], b[7]]),
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }

    /// Writes the ARP message into `buf[..ARP_LEN]`.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..ARP_LEN];
        b[0..2].copy_from_slice(&[0, 1]);
        b[2..4].copy_from_slice(&[8, 0]);
        b[4] = 6;
        b[5] = 4;
        b[6..8].copy_from_slice(&self.op.to_be_bytes());
        b[8..14].copy_from_slice(&self.sender_mac);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac);
        b[24..28].copy_from_slice(&self.target_ip.octets());
    }

    /// A whole broadcast Ethernet frame carrying this message.
    pub fn to_frame(&self) -> [u8; ETHER_HEADER_LEN + ARP_LEN] {
        let mut f = [0u8; ETHER_HEADER_LEN + ARP_LEN];
        f[0..6].copy_from_slice(&BROADCAST);
        f[6..12].copy_from_slice(&self.sender_mac);
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        self.emit(&mut f[ETHER_HEADER_LEN..]);
        f
    }

    /// Parses a whole Ethernet frame; `None` unless it is ARP.
    pub fn parse_frame(f: &[u8]) -> Option<(Self, [u8; 6])> {
        if f.len() < ETHER_HEADER_LEN + ARP_LEN || f[12..14] != ETHERTYPE_ARP.to_be_bytes() {
            return None;
        }
        let src = [f[6], f[7], f[8], f[9], f[10], f[11]];
        Self::parse(&f[ETHER_HEADER_LEN..]).map(|p| (p, src))
    }
}

/// The VRRP/CARP virtual MAC of a vhid: 00:00:5e:00:01:<vhid> (SPEC T2).
pub fn virtual_mac(vhid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vhid]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_frame_round_trip() {
        let mac = [2, 0, 0, 0, 0, 1];
        let ip = Ipv4Addr::new(198, 18, 0, 10);
        let g = ArpPacket::gratuitous(mac, ip);
        let f = g.to_frame();
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        let (p, src) = ArpPacket::parse_frame(&f).unwrap();
        assert_eq!(p, g);
        assert_eq!(src, mac);
        assert!(p.is_gratuitous());
    }

    #[test]
    fn virtual_mac_format() {
        assert_eq!(format_mac(&virtual_mac(0x48)), "00:00:5e:00:01:48");
    }
}
