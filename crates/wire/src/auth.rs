//! Advert authentication: ucarp's HMAC-SHA1 and duet's HMAC-SHA256.
//!
//! ucarp keys HMAC-SHA1 with the password (at most 19 bytes: it keeps 20
//! with the terminating NUL, and zero padding does not change an HMAC key)
//! over `version, type, vhid, virtual address, counter`, all in network
//! order. Nothing else of the advert is covered: advbase and advskew can be
//! changed by anyone on the wire, which is why duet's own mode signs
//! `version, type, vhid, advskew, authlen, key id, advbase, counter`, the
//! sender's address and the virtual address with HMAC-SHA256.
//!
//! Keys are prepared once (the fixed prefix hashed in advance, as ucarp
//! does) so that checking a packet costs one clone and a few blocks.

use std::net::Ipv4Addr;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::carp::{AUTHLEN_SHA256, TYPE_ADVERTISEMENT, VERSION};

/// Longest password ucarp accepts.
pub const UCARP_MAX_PASSWORD: usize = 19;

/// A ucarp password prepared for one vhid and virtual address.
#[derive(Clone)]
pub struct Sha1Key {
    prefixed: Hmac<Sha1>,
}

impl std::fmt::Debug for Sha1Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha1Key(..)")
    }
}

impl Sha1Key {
    /// Prepares the HMAC state for `password`, `vhid` and the virtual
    /// address `vaddr` (ucarp's `--addr`).
    pub fn new(password: &[u8], vhid: u8, vaddr: Ipv4Addr) -> Self {
        let mut prefixed = <Hmac<Sha1> as KeyInit>::new_from_slice(password).expect("HMAC takes keys of any length");
        prefixed.update(&[VERSION, TYPE_ADVERTISEMENT, vhid]);
        prefixed.update(&vaddr.octets());
        Self { prefixed }
    }

    /// The digest of an advert carrying `counter`.
    pub fn digest(&self, counter: u64) -> [u8; 20] {
        let mut m = self.prefixed.clone();
        m.update(&counter.to_be_bytes());
        m.finalize().into_bytes().into()
    }

    /// Constant-time check of a received digest.
    pub fn verify(&self, counter: u64, digest: &[u8; 20]) -> bool {
        let mut m = self.prefixed.clone();
        m.update(&counter.to_be_bytes());
        m.verify_slice(digest).is_ok()
    }
}

/// The fields an HMAC-SHA256 advert signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256Signed {
    pub vhid: u8,
    pub advskew: u8,
    pub advbase: u8,
    pub key_id: u8,
    pub counter: u64,
    /// The advert's IPv4 source.
    pub src: Ipv4Addr,
}

/// A duet HMAC-SHA256 key for one virtual address.
#[derive(Clone)]
pub struct Sha256Key {
    prefixed: Hmac<Sha256>,
}

impl std::fmt::Debug for Sha256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256Key(..)")
    }
}

impl Sha256Key {
    /// Prepares `secret` for adverts about `vaddr`.
    pub fn new(secret: &[u8], vaddr: Ipv4Addr) -> Self {
        let mut prefixed = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
        prefixed.update(b"duet-carp-sha256\0");
        prefixed.update(&vaddr.octets());
        Self { prefixed }
    }

    fn mac(&self, s: &Sha256Signed) -> Hmac<Sha256> {
        let mut m = self.prefixed.clone();
        m.update(&[VERSION, TYPE_ADVERTISEMENT, s.vhid, s.advskew, AUTHLEN_SHA256, s.key_id, s.advbase]);
        m.update(&s.counter.to_be_bytes());
        m.update(&s.src.octets());
        m
    }

    /// The digest of an advert with these fields.
    pub fn digest(&self, s: &Sha256Signed) -> [u8; 32] {
        self.mac(s).finalize().into_bytes().into()
    }

    /// Constant-time check of a received digest.
    pub fn verify(&self, s: &Sha256Signed, digest: &[u8; 32]) -> bool {
        self.mac(s).verify_slice(digest).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computes ucarp's digest the long way, as its carp.c does: ipad from
    /// a 20-byte zero-padded key in a 64-byte block, inner SHA-1 over
    /// ipad|2|1|vhid|vaddr|counter, outer over opad|inner.
    fn ucarp_reference(pass: &[u8], vhid: u8, vaddr: Ipv4Addr, counter: u64) -> [u8; 20] {
        use sha1::Digest;
        let mut key = [0u8; 20];
        key[..pass.len()].copy_from_slice(pass);
        let mut pad = [0u8; 64];
        pad[..20].copy_from_slice(&key);
        let ipad: Vec<u8> = pad.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = pad.iter().map(|b| b ^ 0x5c).collect();
        let mut inner = Sha1::new();
        inner.update(&ipad);
        inner.update([2, 1, vhid]);
        inner.update(vaddr.octets());
        inner.update(counter.to_be_bytes());
        let inner = inner.finalize();
        let mut outer = Sha1::new();
        outer.update(&opad);
        outer.update(inner);
        outer.finalize().into()
    }

    #[test]
    fn sha1_matches_ucarp_construction() {
        let vaddr = Ipv4Addr::new(198, 18, 0, 10);
        for (pass, counter) in
            [(&b"secret"[..], 1u64), (b"0123456789abcdefghi", u64::MAX), (b"x", 0x8000_0000_0000_0001)]
        {
            let k = Sha1Key::new(pass, 10, vaddr);
            let d = k.digest(counter);
            assert_eq!(d, ucarp_reference(pass, 10, vaddr, counter));
            assert!(k.verify(counter, &d));
            assert!(!k.verify(counter.wrapping_add(1), &d));
        }
    }

    #[test]
    fn sha1_binds_vhid_address_and_password() {
        let a = Ipv4Addr::new(198, 18, 0, 10);
        let base = Sha1Key::new(b"pw", 10, a).digest(5);
        assert_ne!(base, Sha1Key::new(b"pw", 11, a).digest(5));
        assert_ne!(base, Sha1Key::new(b"pw", 10, Ipv4Addr::new(198, 18, 0, 11)).digest(5));
        assert_ne!(base, Sha1Key::new(b"pW", 10, a).digest(5));
    }

    #[test]
    fn sha256_binds_every_field() {
        let k = Sha256Key::new(b"a long shared secret", Ipv4Addr::new(198, 18, 0, 10));
        let s = Sha256Signed {
            vhid: 10,
            advskew: 0,
            advbase: 1,
            key_id: 1,
            counter: 42,
            src: Ipv4Addr::new(198, 18, 0, 1),
        };
        let d = k.digest(&s);
        assert!(k.verify(&s, &d));
        for other in [
            Sha256Signed { vhid: 11, ..s },
            Sha256Signed { advskew: 1, ..s },
            Sha256Signed { advbase: 0, ..s },
            Sha256Signed { key_id: 2, ..s },
            Sha256Signed { counter: 43, ..s },
            Sha256Signed { src: Ipv4Addr::new(198, 18, 0, 9), ..s },
        ] {
            assert!(!k.verify(&other, &d), "{other:?}");
        }
    }
}
