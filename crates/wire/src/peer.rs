//! The duet peer-status datagram (UDP 6973), sent by both units.
//!
//! CARP adverts come from the active unit only, so on their own they cannot
//! tell the active whether its standby is alive, nor either unit which HA
//! mode its partner is in. Each duet unit therefore sends this small signed
//! datagram to its partner's unit address once a second and at every role
//! change. ucarp never sees it (it is UDP, not protocol 112). It only feeds
//! the status squares and checks (same mode, readiness) and, with a
//! witness (E14), tells the active how long the partner promises not to
//! take over; it never moves the role by itself.
//!
//! ```text
//!  0       4   5    6    7    8     9    10      12        20   28      32
//! +-------+---+----+----+----+-----+----+---------+-----------+--------+
//! | DUET  |ver|mode|role|vhid|flags|fail|penalty| counter |gen.|hold_ms|
//! +-------+---+----+----+----+-----+----+---------+-----------+--------+
//! | HMAC-SHA256 over bytes 0..32 and the sender's address (32 bytes)    |
//! +---------------------------------------------------------------------+
//! ```
//!
//! Version 1 throughout: `hold_ms` and the flags `HEARS_ADVERTS` and
//! `WITNESS` were added in bytes an older unit sends as zeros and ignores
//! (the digest covers them either way), so an older partner reads as "no
//! promise, does not hear you, no witness", the cautious answer. So were
//! the tracked checks' summary (E16: `fail`, the failing checks, at most
//! 255; `penalty`, the sum of the failing checks' weights; the flag
//! `UNHEALTHY`), which an older partner reads as "healthy".

use std::net::Ipv4Addr;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of a peer-status datagram.
pub const LEN: usize = 64;
const MAGIC: &[u8; 4] = b"DUET";
const VERSION: u8 = 1;

/// Flag: the unit has finished its start-up state sync and may take over.
pub const FLAG_READY: u8 = 0x01;
/// Flag: the unit runs without a password.
pub const FLAG_NO_PASSWORD: u8 = 0x02;
/// Flag: the unit hears its partner's adverts (a valid one within its
/// down interval).
pub const FLAG_HEARS_ADVERTS: u8 = 0x04;
/// Flag: the unit has a witness configured (E14).
pub const FLAG_WITNESS: u8 = 0x08;
/// Flag: the unit is stopping (its last status): the partner should not
/// hand over to it, nor count it as there.
pub const FLAG_LEAVING: u8 = 0x10;
/// Flag: a tracked check that demotes the unit fails (E16): it is not
/// ready because of its own health, not its state sync.
pub const FLAG_UNHEALTHY: u8 = 0x20;

/// What one unit tells its partner about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    /// 0 non-HA, 1 first, 2 second.
    pub mode: u8,
    /// 1 init, 2 standby, 3 active, 4 pacified, 5 stopping.
    pub role: u8,
    pub vhid: u8,
    pub flags: u8,
    /// Strictly increasing per sender (time-based at start).
    pub counter: u64,
    /// The configuration generation the unit holds (0 when unknown).
    pub generation: u64,
    /// E14: the sender will not take over from a silent partner within
    /// this many milliseconds of sending (its down timer's time left; 0:
    /// no such promise).
    pub hold_ms: u32,
    /// E16: how many of the sender's tracked checks fail (at most 255).
    pub failing: u8,
    /// E16: the sum of the weights of the sender's failing checks.
    pub penalty: u16,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("peer status datagram has the wrong length or magic")]
    Malformed,
    #[error("peer status datagram of unknown version {0}")]
    Version(u8),
    #[error("peer status datagram has a bad digest")]
    BadDigest,
}

/// A prepared key for signing and checking peer-status datagrams.
#[derive(Clone)]
pub struct PeerKey {
    prefixed: Hmac<Sha256>,
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

impl PeerKey {
    /// Prepares `secret` (the pair's password or send key).
    pub fn new(secret: &[u8]) -> Self {
        let mut prefixed = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
        prefixed.update(b"duet-peer-status\0");
        Self { prefixed }
    }

    fn mac(&self, body: &[u8], src: Ipv4Addr) -> Hmac<Sha256> {
        let mut m = self.prefixed.clone();
        m.update(body);
        m.update(&src.octets());
        m
    }
}

impl PeerStatus {
    /// Signed bytes as sent from `src`.
    pub fn emit(&self, key: &PeerKey, src: Ipv4Addr) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = self.mode;
        b[6] = self.role;
        b[7] = self.vhid;
        b[8] = self.flags;
        b[9] = self.failing;
        b[10..12].copy_from_slice(&self.penalty.to_be_bytes());
        b[12..20].copy_from_slice(&self.counter.to_be_bytes());
        b[20..28].copy_from_slice(&self.generation.to_be_bytes());
        b[28..32].copy_from_slice(&self.hold_ms.to_be_bytes());
        let d: [u8; 32] = key.mac(&b[..32], src).finalize().into_bytes().into();
        b[32..64].copy_from_slice(&d);
        b
    }

    /// Checks length, magic, version and digest, then decodes.
    pub fn parse(bytes: &[u8], key: &PeerKey, src: Ipv4Addr) -> Result<Self, PeerError> {
        if bytes.len() != LEN || &bytes[0..4] != MAGIC {
            return Err(PeerError::Malformed);
        }
        if bytes[4] != VERSION {
            return Err(PeerError::Version(bytes[4]));
        }
        if key.mac(&bytes[..32], src).verify_slice(&bytes[32..64]).is_err() {
            return Err(PeerError::BadDigest);
        }
        let mut c = [0u8; 8];
        c.copy_from_slice(&bytes[12..20]);
        let mut g = [0u8; 8];
        g.copy_from_slice(&bytes[20..28]);
        let mut h = [0u8; 4];
        h.copy_from_slice(&bytes[28..32]);
        Ok(Self {
            mode: bytes[5],
            role: bytes[6],
            vhid: bytes[7],
            flags: bytes[8],
            counter: u64::from_be_bytes(c),
            generation: u64::from_be_bytes(g),
            hold_ms: u32::from_be_bytes(h),
            failing: bytes[9],
            penalty: u16::from_be_bytes([bytes[10], bytes[11]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let k = PeerKey::new(b"pw");
        let src = Ipv4Addr::new(198, 18, 0, 2);
        let s = PeerStatus {
            mode: 2,
            role: 2,
            vhid: 10,
            flags: FLAG_READY | FLAG_HEARS_ADVERTS,
            counter: 7,
            generation: 3,
            hold_ms: 2950,
            failing: 2,
            penalty: 300,
        };
        let b = s.emit(&k, src);
        assert_eq!(PeerStatus::parse(&b, &k, src), Ok(s));
        assert_eq!(PeerStatus::parse(&b, &k, Ipv4Addr::new(198, 18, 0, 3)), Err(PeerError::BadDigest));
        assert_eq!(PeerStatus::parse(&b, &PeerKey::new(b"other"), src), Err(PeerError::BadDigest));
        assert_eq!(PeerStatus::parse(&b[..63], &k, src), Err(PeerError::Malformed));
        let mut v = b;
        v[4] = 9;
        assert_eq!(PeerStatus::parse(&v, &k, src), Err(PeerError::Version(9)));
    }

    /// What a unit of before the witness sent (hold and the new flags zero,
    /// as in its reserved bytes) reads as no promise; and the new fields sit
    /// where the older layout had its reserved bytes.
    #[test]
    fn an_older_units_datagram_reads_as_no_promise() {
        let k = PeerKey::new(b"pw");
        let src = Ipv4Addr::new(198, 18, 0, 1);
        let older = PeerStatus {
            mode: 1,
            role: 3,
            vhid: 10,
            flags: FLAG_READY,
            counter: 9,
            generation: 1,
            hold_ms: 0,
            failing: 0,
            penalty: 0,
        };
        let b = older.emit(&k, src);
        assert_eq!(&b[28..32], &[0; 4]);
        assert_eq!(&b[9..12], &[0; 3], "an older unit's reserved bytes: no check failing");
        assert_eq!(PeerStatus::parse(&b, &k, src).map(|s| (s.hold_ms, s.flags & FLAG_HEARS_ADVERTS)), Ok((0, 0)));
        let newer = PeerStatus { hold_ms: 0x0102_0304, flags: FLAG_WITNESS, ..older };
        assert_eq!(&newer.emit(&k, src)[28..32], &[1, 2, 3, 4]);
        let checks = PeerStatus { failing: 3, penalty: 0x0506, flags: FLAG_UNHEALTHY, ..older };
        assert_eq!(&checks.emit(&k, src)[9..12], &[3, 5, 6]);
    }
}
