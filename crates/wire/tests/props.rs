//! Property tests: any bytes never panic; parse(emit(x)) == x.

use std::net::Ipv4Addr;

use duet_wire::arp::ArpPacket;
use duet_wire::{Advert, AuthData, Ipv4Header};
use proptest::prelude::*;

fn advert() -> impl Strategy<Value = Advert> {
    let sha1 = any::<[u8; 20]>().prop_map(AuthData::Sha1);
    let sha256 = (any::<u8>(), any::<[u8; 32]>()).prop_map(|(key_id, digest)| AuthData::Sha256 { key_id, digest });
    (any::<u8>(), any::<u8>(), any::<u8>(), any::<u64>(), prop_oneof![sha1, sha256])
        .prop_map(|(vhid, advskew, advbase, counter, auth)| Advert { vhid, advskew, advbase, counter, auth })
}

proptest! {
    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = Ipv4Header::parse(&bytes);
        let _ = Advert::parse(&bytes);
        let _ = ArpPacket::parse_frame(&bytes);
        if let Ok(h) = Ipv4Header::parse(&bytes) {
            prop_assert!(h.header_len + h.payload_len <= bytes.len());
            let _ = Advert::parse(&bytes[h.header_len..h.header_len + h.payload_len]);
        }
    }

    #[test]
    fn advert_round_trip(a in advert(), junk in any::<u8>()) {
        let mut buf = vec![junk; 64];
        a.emit(&mut buf);
        prop_assert_eq!(Advert::parse(&buf[..a.buffer_len()]), Ok(a));
    }

    #[test]
    fn any_single_bit_flip_is_caught(a in advert(), bit in 0usize..(36 * 8)) {
        // A flipped bit in the header either breaks the checksum or changes
        // a checked field; it never yields the same advert.
        let mut b = a.to_bytes();
        b[bit / 8] ^= 1 << (bit % 8);
        prop_assert_ne!(Advert::parse(&b), Ok(a));
    }

    #[test]
    fn ipv4_round_trip(ttl in any::<u8>(), ident in any::<u16>(), src in any::<u32>(), dst in any::<u32>(), len in 0usize..100) {
        let h = Ipv4Header { tos: 0, ident, dont_fragment: true, ttl, protocol: 112, src: Ipv4Addr::from(src), dst: Ipv4Addr::from(dst), header_len: 20, payload_len: len };
        let mut buf = vec![0x5a; 20 + len];
        h.emit(&mut buf);
        prop_assert_eq!(Ipv4Header::parse(&buf), Ok(h));
    }
}
