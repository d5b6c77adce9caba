//! The CARP version 2 advertisement, as ucarp 1.5 puts it on the wire,
//! plus duet's HMAC-SHA256 variant.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | VirtualHostID |    AdvSkew    |    Auth Len   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Reserved    |     AdvBase   |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Counter (1)                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Counter (2)                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            SHA-1 HMAC (5 words) or SHA-256 HMAC (8 words)     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Auth Len counts the 32-bit words of counter and digest: 7 for SHA-1
//! (ucarp), 10 for duet's SHA-256 mode, in which the reserved byte carries
//! the key id. The checksum is the Internet checksum of the whole advert.

use crate::checksum;

/// CARP protocol version carried in every advert.
pub const VERSION: u8 = 2;
/// The only CARP message type: an advertisement.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Auth Len of a ucarp-compatible advert (HMAC-SHA1).
pub const AUTHLEN_SHA1: u8 = 7;
/// Auth Len of a duet HMAC-SHA256 advert.
pub const AUTHLEN_SHA256: u8 = 10;
/// Bytes of a ucarp-compatible advert.
pub const LEN_SHA1: usize = 36;
/// Bytes of an HMAC-SHA256 advert.
pub const LEN_SHA256: usize = 48;
/// Fixed part before the counter.
const FIXED_LEN: usize = 8;

/// Why bytes are not an acceptable CARP advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CarpError {
    /// Shorter than the fixed header.
    #[error("CARP packet too short")]
    TooShort,
    /// The version nibble is not 2.
    #[error("CARP version {0} is not 2")]
    BadVersion(u8),
    /// The type nibble is not 1 (advertisement).
    #[error("CARP type {0} is not an advertisement")]
    BadType(u8),
    /// Auth Len is neither 7 nor 10, or the length does not match it.
    #[error("CARP length {len} does not match auth len {authlen}")]
    BadLength {
        /// The Auth Len field.
        authlen: u8,
        /// Bytes present.
        len: usize,
    },
    /// The Internet checksum does not verify.
    #[error("bad CARP checksum")]
    BadChecksum,
}

/// The authentication part of an advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthData {
    /// ucarp-compatible HMAC-SHA1 over vhid, virtual address and counter.
    Sha1([u8; 20]),
    /// duet HMAC-SHA256 over the whole advert, the sender and the virtual address.
    Sha256 {
        /// Which configured key signed it (the reserved byte on the wire).
        key_id: u8,
        /// The digest.
        digest: [u8; 32],
    },
}

/// A CARP advertisement. Timing: the sender adverts every
/// `advbase + advskew / 256` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    pub vhid: u8,
    pub advskew: u8,
    pub advbase: u8,
    /// ucarp's 64-bit counter: random at start, then one more per advert.
    pub counter: u64,
    pub auth: AuthData,
}

impl Advert {
    /// Parses a CARP payload (what follows the IPv4 header): length, version,
    /// type, auth len and checksum are all checked.
    pub fn parse(bytes: &[u8]) -> Result<Self, CarpError> {
        if bytes.len() < FIXED_LEN {
            return Err(CarpError::TooShort);
        }
        let version = bytes[0] >> 4;
        if version != VERSION {
            return Err(CarpError::BadVersion(version));
        }
        let kind = bytes[0] & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(CarpError::BadType(kind));
        }
        let authlen = bytes[3];
        let expected = match authlen {
            AUTHLEN_SHA1 => LEN_SHA1,
            AUTHLEN_SHA256 => LEN_SHA256,
            _ => 0,
        };
        if expected == 0 || bytes.len() != expected {
            return Err(CarpError::BadLength { authlen, len: bytes.len() });
        }
        if !checksum::verify(bytes) {
            return Err(CarpError::BadChecksum);
        }
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&bytes[8..16]);
        let auth = if authlen == AUTHLEN_SHA1 {
            let mut d = [0u8; 20];
            d.copy_from_slice(&bytes[16..36]);
            AuthData::Sha1(d)
        } else {
            let mut d = [0u8; 32];
            d.copy_from_slice(&bytes[16..48]);
            AuthData::Sha256 { key_id: bytes[4], digest: d }
        };
        Ok(Self { vhid: bytes[1], advskew: bytes[2], advbase: bytes[5], counter: u64::from_be_bytes(counter), auth })
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        match self.auth {
            AuthData::Sha1(_) => LEN_SHA1,
            AuthData::Sha256 { .. } => LEN_SHA256,
        }
    }

    /// Auth Len field of this advert.
    pub fn authlen(&self) -> u8 {
        match self.auth {
            AuthData::Sha1(_) => AUTHLEN_SHA1,
            AuthData::Sha256 { .. } => AUTHLEN_SHA256,
        }
    }

    /// The reserved byte: zero for SHA-1, the key id for SHA-256.
    pub fn reserved(&self) -> u8 {
        match self.auth {
            AuthData::Sha1(_) => 0,
            AuthData::Sha256 { key_id, .. } => key_id,
        }
    }

    /// Writes the advert, checksum included, into `buf[..self.buffer_len()]`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`buffer_len`](Self::buffer_len).
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..self.buffer_len()];
        b[0] = (VERSION << 4) | TYPE_ADVERTISEMENT;
        b[1] = self.vhid;
        b[2] = self.advskew;
        b[3] = self.authlen();
        b[4] = self.reserved();
        b[5] = self.advbase;
        b[6] = 0;
        b[7] = 0;
        b[8..16].copy_from_slice(&self.counter.to_be_bytes());
        match &self.auth {
            AuthData::Sha1(d) => b[16..36].copy_from_slice(d),
            AuthData::Sha256 { digest, .. } => b[16..48].copy_from_slice(digest),
        }
        let c = checksum::internet(b);
        b[6..8].copy_from_slice(&c.to_be_bytes());
    }

    /// The advert as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![0; self.buffer_len()];
        self.emit(&mut v);
        v
    }

    /// The advertisement interval in microseconds: `advbase + advskew/256` s.
    pub fn interval_us(&self) -> u64 {
        interval_us(self.advbase, self.advskew)
    }
}

/// `advbase + advskew/256` seconds in microseconds, rounded down as ucarp does.
pub fn interval_us(advbase: u8, advskew: u8) -> u64 {
    u64::from(advbase) * 1_000_000 + u64::from(advskew) * 1_000_000 / 256
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1_advert() -> Advert {
        Advert { vhid: 10, advskew: 1, advbase: 1, counter: 0x0102_0304_0506_0708, auth: AuthData::Sha1([7; 20]) }
    }

    #[test]
    fn round_trip_over_junk_both_modes() {
        for a in [sha1_advert(), Advert { auth: AuthData::Sha256 { key_id: 3, digest: [9; 32] }, ..sha1_advert() }] {
            let mut buf = [0xa5u8; 64];
            a.emit(&mut buf);
            assert_eq!(Advert::parse(&buf[..a.buffer_len()]).unwrap(), a);
        }
    }

    #[test]
    fn layout_matches_ucarp_struct() {
        let b = sha1_advert().to_bytes();
        assert_eq!(b.len(), 36);
        assert_eq!(b[0], 0x21, "version 2 in the high nibble, type 1 in the low");
        assert_eq!(&b[1..6], &[10, 1, 7, 0, 1]);
        assert_eq!(&b[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn each_defect_is_named() {
        let good = sha1_advert().to_bytes();
        assert_eq!(Advert::parse(&good[..7]), Err(CarpError::TooShort));
        let mut v = good.clone();
        v[0] = 0x31;
        assert_eq!(Advert::parse(&v), Err(CarpError::BadVersion(3)));
        let mut t = good.clone();
        t[0] = 0x22;
        assert_eq!(Advert::parse(&t), Err(CarpError::BadType(2)));
        assert_eq!(Advert::parse(&good[..35]), Err(CarpError::BadLength { authlen: 7, len: 35 }));
        let mut l = good.clone();
        l[3] = 8;
        assert_eq!(Advert::parse(&l), Err(CarpError::BadLength { authlen: 8, len: 36 }));
        let mut c = good.clone();
        c[20] ^= 1;
        assert_eq!(Advert::parse(&c), Err(CarpError::BadChecksum));
    }

    #[test]
    fn interval_of_fast_profile() {
        assert_eq!(interval_us(1, 0), 1_000_000);
        assert_eq!(interval_us(0, 8), 31_250);
        assert_eq!(interval_us(255, 255), 255_996_093);
    }
}
