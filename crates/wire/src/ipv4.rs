//! The IPv4 header (RFC 791), as far as CARP needs it.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

use crate::checksum;

/// IP protocol number of CARP (shared with VRRP).
pub const PROTO_CARP: u8 = 112;
/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// Why bytes are not an acceptable IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4Error {
    /// Fewer bytes than the header claims, or than 20.
    #[error("packet too short for an IPv4 header")]
    TooShort,
    /// The version nibble is not 4.
    #[error("IP version {0} is not 4")]
    BadVersion(u8),
    /// IHL below 5 or total length not covering the header, or beyond the bytes received.
    #[error("inconsistent IPv4 header or total length")]
    BadLength,
    /// The header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadChecksum,
    /// A fragment (MF set or offset non-zero): adverts are never fragmented.
    #[error("IPv4 fragment")]
    Fragment,
}

/// The fields of an IPv4 header that CARP uses; options are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub tos: u8,
    pub ident: u16,
    pub dont_fragment: bool,
    pub ttl: u8,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Header length in bytes (20 without options).
    pub header_len: usize,
    /// Length of the payload after the header, from the total length field.
    pub payload_len: usize,
}

impl Ipv4Header {
    /// Parses and checks the header at the start of `packet`: version,
    /// lengths against the bytes present, checksum, no fragmentation. The
    /// payload is `packet[h.header_len..h.header_len + h.payload_len]`.
    pub fn parse(packet: &[u8]) -> Result<Self, Ipv4Error> {
        if packet.len() < MIN_HEADER_LEN {
            return Err(Ipv4Error::TooShort);
        }
        let version = packet[0] >> 4;
        if version != 4 {
            return Err(Ipv4Error::BadVersion(version));
        }
        let header_len = usize::from(packet[0] & 0x0f) * 4;
        let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if header_len < MIN_HEADER_LEN || total_len < header_len {
            return Err(Ipv4Error::BadLength);
        }
        if packet.len() < header_len || packet.len() < total_len {
            return Err(Ipv4Error::TooShort);
        }
        if !checksum::verify(&packet[..header_len]) {
            return Err(Ipv4Error::BadChecksum);
        }
        let flags_frag = u16::from_be_bytes([packet[6], packet[7]]);
        if flags_frag & 0x2000 != 0 || flags_frag & 0x1fff != 0 {
            return Err(Ipv4Error::Fragment);
        }
        Ok(Self {
            tos: packet[1],
            ident: u16::from_be_bytes([packet[4], packet[5]]),
            dont_fragment: flags_frag & 0x4000 != 0,
            ttl: packet[8],
            protocol: packet[9],
            src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
            dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
            header_len,
            payload_len: total_len - header_len,
        })
    }

    /// Writes a 20-byte header (no options) with its checksum into `buf[..20]`.
    /// `payload_len` is the length of what follows.
    ///
    /// # Panics
    /// If `buf` is shorter than 20 bytes or the total length overflows 16 bits.
    pub fn emit(&self, buf: &mut [u8]) {
        let total = u16::try_from(MIN_HEADER_LEN + self.payload_len).expect("IPv4 total length fits 16 bits");
        let b = &mut buf[..MIN_HEADER_LEN];
        b[0] = 0x45;
        b[1] = self.tos;
        b[2..4].copy_from_slice(&total.to_be_bytes());
        b[4..6].copy_from_slice(&self.ident.to_be_bytes());
        let flags: u16 = if self.dont_fragment { 0x4000 } else { 0 };
        b[6..8].copy_from_slice(&flags.to_be_bytes());
        b[8] = self.ttl;
        b[9] = self.protocol;
        b[10..12].copy_from_slice(&[0, 0]);
        b[12..16].copy_from_slice(&self.src.octets());
        b[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::internet(b);
        b[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ipv4Header {
        Ipv4Header {
            tos: 0x10,
            ident: 0xbeef,
            dont_fragment: true,
            ttl: 255,
            protocol: PROTO_CARP,
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(224, 0, 0, 18),
            header_len: 20,
            payload_len: 36,
        }
    }

    #[test]
    fn round_trip_over_junk() {
        let mut buf = [0xa5u8; 56];
        sample().emit(&mut buf);
        assert_eq!(Ipv4Header::parse(&buf).unwrap(), sample());
    }

    #[test]
    fn each_defect_is_named() {
        let mut buf = [0u8; 56];
        sample().emit(&mut buf);
        assert_eq!(Ipv4Header::parse(&buf[..19]), Err(Ipv4Error::TooShort));
        assert_eq!(Ipv4Header::parse(&buf[..40]), Err(Ipv4Error::TooShort));
        let mut v = buf;
        v[0] = 0x65;
        assert_eq!(Ipv4Header::parse(&v), Err(Ipv4Error::BadVersion(6)));
        let mut c = buf;
        c[11] ^= 0xff;
        assert_eq!(Ipv4Header::parse(&c), Err(Ipv4Error::BadChecksum));
        let mut f = sample();
        f.dont_fragment = false;
        let mut fb = [0u8; 56];
        f.emit(&mut fb);
        fb[6] |= 0x20;
        fb[10] = 0;
        fb[11] = 0;
        let cs = checksum::internet(&fb[..20]);
        fb[10..12].copy_from_slice(&cs.to_be_bytes());
        assert_eq!(Ipv4Header::parse(&fb), Err(Ipv4Error::Fragment));
    }
}
