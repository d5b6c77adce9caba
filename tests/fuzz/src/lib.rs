//! Structure-aware random mutation of every parser of bytes from outside
//! (issue 17, part 2): the CARP advert and its IPv4 header, ARP frames, the
//! peer-status datagram, ctnetlink datagrams, the peer links' messages
//! (configsync's push, the replicator's stream, the role stream), the unit
//! file and the image JSON.
//!
//! Each [`Target`] starts from seeds (real captures: the ucarp adverts in
//! `crates/wire/tests/fixtures`, and messages the code itself emits), then
//! mutates them (bit flips, byte values that matter, truncation, growth,
//! splices of two seeds, length fields) with a seeded generator, so a run
//! is replayed by its seed. Every input must parse or be refused without a
//! panic (a panic is caught and reported with the input), and where both
//! directions exist, what parses re-emits to the same value. Inputs are at
//! most [`MAX_INPUT`] bytes.
//!
//! This toolchain is stable, so the mutation is not coverage-guided; the
//! nightly toolchain here could run cargo-fuzz, which is not set up.

use std::net::Ipv4Addr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use prost::Message as _;

/// Largest input tried.
pub const MAX_INPUT: usize = 8192;

pub use duet_testkit::Rng;

/// Byte values that tend to matter to parsers.
const INTERESTING: &[u8] = &[0, 1, 2, 4, 7, 8, 15, 16, 20, 32, 63, 64, 127, 128, 254, 255];

/// One mutation of `seed` (another seed `other` for splices).
pub fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next_u64() as u8;
            }
            3 => v.truncate(rng.below(v.len() + 1)),
            4 if v.len() < MAX_INPUT => {
                let n = 1 + rng.below(64);
                v.extend((0..n).map(|_| rng.next_u64() as u8));
            }
            5 if !other.is_empty() => {
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            6 if v.len() >= 2 => {
                // A 16-bit field (a length, a type) set to an edge value.
                let i = rng.below(v.len() - 1);
                let x: u16 =
                    [0, 1, 0x7fff, 0x8000, 0xffff, v.len() as u16, (v.len() as u16).wrapping_add(4)][rng.below(7)];
                v[i..i + 2].copy_from_slice(&x.to_be_bytes());
            }
            7 if v.len() >= 4 => {
                let i = rng.below(v.len() - 3);
                let x: u32 = [0, 1, 0x7fff_ffff, 0xffff_ffff, v.len() as u32][rng.below(5)];
                v[i..i + 4].copy_from_slice(&x.to_ne_bytes());
            }
            _ => {
                // A run of bytes duplicated in place.
                if !v.is_empty() && v.len() < MAX_INPUT {
                    let a = rng.below(v.len());
                    let b = (a + 1 + rng.below(16)).min(v.len());
                    let run = v[a..b].to_vec();
                    let at = rng.below(v.len() + 1);
                    v.splice(at..at, run);
                }
            }
        }
    }
    v.truncate(MAX_INPUT);
    v
}

/// A parser under test.
pub struct Target {
    pub name: &'static str,
    /// Where its seeds come from, for the report.
    pub seeds_from: &'static str,
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Parses `input`; `Err` names a broken invariant (a panic is caught
    /// by the runner).
    pub check: fn(&[u8]) -> Result<(), String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// What one target's run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub target: &'static str,
    pub inputs: u64,
    pub took: Duration,
    /// The first failure: what broke and the input, in hex.
    pub failure: Option<(String, String)>,
}

/// Runs `target` on its seeds and then `inputs` mutations, from `seed`.
/// Stops at the first failure.
pub fn run(target: &Target, inputs: u64, seed: u64) -> Outcome {
    let seeds = (target.seeds)();
    let mut rng = Rng::new(seed ^ fnv(target.name));
    let start = Instant::now();
    let mut n = 0u64;
    let try_one = |input: &[u8]| -> Option<(String, String)> {
        let r = catch_unwind(AssertUnwindSafe(|| (target.check)(input)));
        let why = match r {
            Ok(Ok(())) => return None,
            Ok(Err(why)) => why,
            Err(p) => format!(
                "panic: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            ),
        };
        Some((why, input.iter().map(|b| format!("{b:02x}")).collect()))
    };
    for s in &seeds {
        n += 1;
        if let Some(f) = try_one(s) {
            return Outcome { target: target.name, inputs: n, took: start.elapsed(), failure: Some(f) };
        }
    }
    while n < inputs {
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, a, b);
        n += 1;
        if let Some(f) = try_one(&input) {
            return Outcome { target: target.name, inputs: n, took: start.elapsed(), failure: Some(f) };
        }
    }
    Outcome { target: target.name, inputs: n, took: start.elapsed(), failure: None }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The ucarp captures (Ethernet frames in hex, one per line).
fn ucarp_frames() -> Vec<Vec<u8>> {
    include_str!("../../../crates/wire/tests/fixtures/ucarp-adverts.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| (0..l.len() / 2).map(|i| u8::from_str_radix(&l[2 * i..2 * i + 2], 16).unwrap_or(0)).collect())
        .collect()
}

const SHARED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

fn carp_seeds() -> Vec<Vec<u8>> {
    // The IPv4 packets of the captured frames, and adverts emitted here.
    let mut v: Vec<Vec<u8>> = ucarp_frames().into_iter().map(|f| f[14..].to_vec()).collect();
    let key = duet_wire::auth::Sha1Key::new(b"secret", 10, SHARED);
    for (base, skew, counter) in [(1u8, 0u8, 1u64), (0, 23, u64::MAX), (255, 255, 7)] {
        let a = duet_wire::Advert {
            vhid: 10,
            advskew: skew,
            advbase: base,
            counter,
            auth: duet_wire::AuthData::Sha1(key.digest(counter)),
        };
        let payload = a.to_bytes();
        let h = duet_wire::Ipv4Header {
            tos: 0x10,
            ident: 7,
            dont_fragment: true,
            ttl: 255,
            protocol: 112,
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(224, 0, 0, 18),
            header_len: 20,
            payload_len: payload.len(),
        };
        let mut p = vec![0; 20 + payload.len()];
        h.emit(&mut p);
        p[20..].copy_from_slice(&payload);
        v.push(p);
    }
    v
}

fn carp_check(input: &[u8]) -> Result<(), String> {
    let Ok(h) = duet_wire::Ipv4Header::parse(input) else { return Ok(()) };
    let payload = input.get(h.header_len..h.header_len + h.payload_len).unwrap_or(&[]);
    if let Ok(a) = duet_wire::Advert::parse(payload) {
        let again = duet_wire::Advert::parse(&a.to_bytes()).map_err(|e| format!("re-emitted advert refused: {e}"))?;
        if again != a {
            return Err(format!("advert changed on re-emit: {a:?} -> {again:?}"));
        }
    }
    Ok(())
}

fn arp_seeds() -> Vec<Vec<u8>> {
    let mac = [2, 0, 0, 0, 0, 1];
    let mut v = vec![duet_wire::arp::ArpPacket::gratuitous(mac, SHARED).to_frame().to_vec()];
    let reply = duet_wire::arp::ArpPacket {
        op: duet_wire::arp::OP_REPLY,
        sender_mac: mac,
        sender_ip: SHARED,
        target_mac: [2, 0, 0, 0, 0, 2],
        target_ip: Ipv4Addr::new(198, 18, 0, 2),
    };
    v.push(reply.to_frame().to_vec());
    v
}

fn arp_check(input: &[u8]) -> Result<(), String> {
    if let Some((p, _)) = duet_wire::arp::ArpPacket::parse_frame(input) {
        let again = duet_wire::arp::ArpPacket::parse_frame(&p.to_frame()).map(|x| x.0);
        if again != Some(p) {
            return Err(format!("ARP changed on re-emit: {p:?} -> {again:?}"));
        }
    }
    Ok(())
}

fn peer_key() -> duet_wire::peer::PeerKey {
    duet_wire::peer::PeerKey::new(b"secret")
}

const PEER_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn peer_seeds() -> Vec<Vec<u8>> {
    use duet_wire::peer::{FLAG_READY, FLAG_UNHEALTHY, PeerStatus};
    [
        PeerStatus {
            mode: 2,
            role: 2,
            vhid: 10,
            flags: FLAG_READY,
            counter: 1,
            generation: 3,
            hold_ms: 2950,
            failing: 0,
            penalty: 0,
        },
        PeerStatus {
            mode: 1,
            role: 3,
            vhid: 255,
            flags: 0xff,
            counter: u64::MAX,
            generation: u64::MAX,
            hold_ms: u32::MAX,
            failing: 255,
            penalty: u16::MAX,
        },
        PeerStatus {
            mode: 0,
            role: 0,
            vhid: 0,
            flags: FLAG_UNHEALTHY,
            counter: 0,
            generation: 0,
            hold_ms: 0,
            failing: 1,
            penalty: 50,
        },
    ]
    .iter()
    .map(|s| s.emit(&peer_key(), PEER_SRC).to_vec())
    .collect()
}

fn peer_check(input: &[u8]) -> Result<(), String> {
    if let Ok(s) = duet_wire::peer::PeerStatus::parse(input, &peer_key(), PEER_SRC) {
        let again = duet_wire::peer::PeerStatus::parse(&s.emit(&peer_key(), PEER_SRC), &peer_key(), PEER_SRC);
        if again != Ok(s) {
            return Err(format!("peer status changed on re-emit: {s:?} -> {again:?}"));
        }
    }
    Ok(())
}

fn ctnetlink_seeds() -> Vec<Vec<u8>> {
    use duet_net::conntrack::{Flow, PROTO_TCP, PROTO_UDP, TcpInfo, Tuple};
    let t = |proto, a: [u8; 4], sp, b: [u8; 4], dp| Tuple {
        proto,
        src: Ipv4Addr::from(a),
        sport: sp,
        dst: Ipv4Addr::from(b),
        dport: dp,
    };
    let tcp = Flow {
        orig: t(PROTO_TCP, [198, 18, 0, 100], 40000, [198, 18, 0, 10], 80),
        reply: t(PROTO_TCP, [198, 19, 0, 100], 8080, [198, 18, 0, 100], 40000),
        status: 0x18e,
        timeout_s: 431_999,
        mark: 0,
        zone: 0,
        tcp: Some(TcpInfo { state: 3, wscale_orig: 7, wscale_reply: 7, flags_orig: 3, flags_reply: 3 }),
    };
    let udp = Flow {
        orig: t(PROTO_UDP, [198, 18, 0, 100], 1234, [198, 18, 0, 10], 53),
        reply: t(PROTO_UDP, [198, 18, 0, 10], 53, [198, 18, 0, 100], 1234),
        status: 8,
        timeout_s: 30,
        mark: u32::MAX,
        zone: 513,
        tcp: None,
    };
    let mut both = duet_net::conntrack::encode_create(&tcp);
    both.extend(duet_net::conntrack::encode_create(&udp));
    vec![duet_net::conntrack::encode_create(&tcp), duet_net::conntrack::encode_create(&udp), both]
}

fn ctnetlink_check(input: &[u8]) -> Result<(), String> {
    for flow in duet_net::conntrack::decode_datagram(input).into_iter().flatten().flatten() {
        // What reads back from what it writes reads back the same again.
        let once = duet_net::conntrack::decode_datagram(&duet_net::conntrack::encode_create(&flow));
        let Some(Ok(Some(g))) = once.into_iter().next() else {
            return Err(format!("a decoded flow does not read back: {flow:?}"));
        };
        let twice = duet_net::conntrack::decode_datagram(&duet_net::conntrack::encode_create(&g));
        if twice.first() != Some(&Ok(Some(g.clone()))) {
            return Err(format!("flow not stable through encode/decode: {g:?} -> {twice:?}"));
        }
    }
    Ok(())
}

fn image_sample() -> duet_proto::config::v1::Image {
    let json = include_str!("../seeds/image.json");
    duet_proto::json::from_json(json, "duet.config.v1.Image").unwrap_or_default()
}

fn peer_link_seeds() -> Vec<Vec<u8>> {
    use duet_proto::configsync::v1 as cs;
    use duet_proto::replicator::v1 as rp;
    let mut v = Vec::new();
    let push = cs::PushRequest { image: Some(image_sample()), from_unit: "lb1".into(), from_role: 3, full: true };
    v.push([&[0u8][..], &push.encode_to_vec()].concat());
    let change = |c: rp::change::Change, ttl_ms| rp::Change { change: Some(c), ttl_ms };
    let batch = rp::ReplicateRequest {
        msg: Some(rp::replicate_request::Msg::Batch(rp::Batch {
            first: 1,
            last: 3,
            changes: vec![
                change(rp::change::Change::UpsertFlow(rp::Flow::default()), 30_000),
                change(rp::change::Change::DeleteFlow(rp::Tuple::default()), 0),
                change(rp::change::Change::UpsertPersistence(rp::PersistenceEntry::default()), u64::MAX),
            ],
        })),
    };
    v.push([&[1u8][..], &batch.encode_to_vec()].concat());
    let role = duet_proto::election::v1::WatchRoleResponse {
        epoch: 7,
        seq: 3,
        kind: 2,
        role: 3,
        previous_role: 2,
        reason: "partner silent".into(),
        ha_timeout_ms: 3000,
        vhid: 10,
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ..Default::default()
    };
    v.push([&[2u8][..], &role.encode_to_vec()].concat());
    v
}

/// The first byte picks the message: 0 configsync's push (and the image it
/// carries, as a unit would check it), 1 the replicator's stream (and each
/// change as the receiver turns it into a log operation), 2 the role stream.
fn peer_link_check(input: &[u8]) -> Result<(), String> {
    use duet_proto::configsync::v1 as cs;
    use duet_proto::replicator::v1 as rp;
    let Some((&kind, body)) = input.split_first() else { return Ok(()) };
    match kind % 3 {
        0 => {
            if let Ok(p) = cs::PushRequest::decode(body)
                && let Some(i) = &p.image
            {
                let _ = duet_model::ImageContent::checked(i, true);
            }
        }
        1 => {
            if let Ok(rp::ReplicateRequest { msg: Some(rp::replicate_request::Msg::Batch(b)) }) =
                rp::ReplicateRequest::decode(body)
            {
                for c in &b.changes {
                    let _ = duet_replicator::model::change_from(c, 1_700_000_000_000);
                }
            }
        }
        _ => {
            if let Ok(m) = duet_proto::election::v1::WatchRoleResponse::decode(body)
                && let Ok(e) = duet_carp::RoleEvent::try_from(&m)
            {
                let back = duet_proto::election::v1::WatchRoleResponse::from(&e);
                if duet_carp::RoleEvent::try_from(&back).as_ref() != Ok(&e) {
                    return Err(format!("role event changed through its message: {e:?}"));
                }
            }
        }
    }
    Ok(())
}

fn unit_file_seeds() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../../../deploy/lb1.toml").to_vec(),
        include_bytes!("../../../deploy/lb2.toml").to_vec(),
        include_bytes!("../seeds/unit-full.toml").to_vec(),
    ]
}

fn unit_file_check(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let _ = duet_config::from_toml(&text);
    Ok(())
}

fn image_json_seeds() -> Vec<Vec<u8>> {
    vec![include_bytes!("../seeds/image.json").to_vec()]
}

fn image_json_check(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    if let Ok(i) = duet_proto::json::from_json::<duet_proto::config::v1::Image>(&text, "duet.config.v1.Image") {
        let _ = duet_model::ImageContent::checked(&i, true);
    }
    Ok(())
}

/// Every target.
pub fn targets() -> Vec<Target> {
    vec![
        Target { name: "carp", seeds_from: "ucarp captures, emitted adverts", seeds: carp_seeds, check: carp_check },
        Target { name: "arp", seeds_from: "emitted frames", seeds: arp_seeds, check: arp_check },
        Target { name: "peer-status", seeds_from: "emitted datagrams", seeds: peer_seeds, check: peer_check },
        Target { name: "ctnetlink", seeds_from: "emitted messages", seeds: ctnetlink_seeds, check: ctnetlink_check },
        Target {
            name: "peer-link",
            seeds_from: "push, batch, role messages",
            seeds: peer_link_seeds,
            check: peer_link_check,
        },
        Target {
            name: "unit-file",
            seeds_from: "deploy/lb1.toml, lb2.toml, seeds/unit-full.toml",
            seeds: unit_file_seeds,
            check: unit_file_check,
        },
        Target { name: "image-json", seeds_from: "seeds/image.json", seeds: image_json_seeds, check: image_json_check },
    ]
}
