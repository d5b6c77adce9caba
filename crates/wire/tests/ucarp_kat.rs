//! Known-answer tests against adverts a real ucarp sent (see
//! `fixtures/ucarp-adverts.txt` for how they were made): duet parses them,
//! verifies their HMAC-SHA1, and emits byte-identical CARP payloads.

use std::net::Ipv4Addr;

use duet_wire::auth::Sha1Key;
use duet_wire::{Advert, AuthData, Ipv4Header};

fn frames() -> Vec<Vec<u8>> {
    include_str!("fixtures/ucarp-adverts.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| hex::decode(l.trim()).unwrap())
        .collect()
}

#[test]
fn ucarp_adverts_parse_verify_and_re_emit_identically() {
    let key = Sha1Key::new(b"secret", 10, Ipv4Addr::new(198, 18, 0, 10));
    let wrong = Sha1Key::new(b"Secret", 10, Ipv4Addr::new(198, 18, 0, 10));
    let f = frames();
    assert_eq!(f.len(), 2);
    for frame in f {
        // Ethernet: to the 224.0.0.18 group MAC, from ucarp's 00:00:5e:00:00:<vhid>.
        assert_eq!(&frame[0..6], &[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
        assert_eq!(&frame[6..12], &[0x00, 0x00, 0x5e, 0x00, 0x00, 10]);
        let ip = &frame[14..];
        let h = Ipv4Header::parse(ip).unwrap();
        assert_eq!((h.ttl, h.protocol, h.tos), (255, 112, 0x10));
        assert_eq!((h.src, h.dst), (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(224, 0, 0, 18)));
        let payload = &ip[h.header_len..h.header_len + h.payload_len];
        let a = Advert::parse(payload).unwrap();
        assert_eq!((a.vhid, a.advbase, a.advskew), (10, 1, 1));
        let AuthData::Sha1(d) = a.auth else { panic!("ucarp sends SHA-1") };
        assert!(key.verify(a.counter, &d), "duet accepts ucarp's digest");
        assert!(!wrong.verify(a.counter, &d));
        // duet's own advert with the same fields is the same bytes.
        let ours = Advert { auth: AuthData::Sha1(key.digest(a.counter)), ..a };
        assert_eq!(ours.to_bytes(), payload);
    }
}
