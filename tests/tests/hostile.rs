//! Election on a hostile wire (issue 7, SPEC E15): floods, single-defect
//! packets, replays and forgeries from an attacker namespace on the same
//! bridge change nothing.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use duet_proto::common::v1::Role;
use duet_proto::election::v1::DropReason;
use duet_testkit::{HostId, Proc, wait_for};
use duet_tests::*;
use duet_wire::auth::Sha1Key;
use duet_wire::{Advert, AuthData};

const T: Duration = Duration::from_secs(20);
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("address")
}

fn key() -> Sha1Key {
    Sha1Key::new(b"secret", 10, ip(SHARED))
}

/// A validly signed advert with the given fields.
fn signed(advbase: u8, advskew: u8, counter: u64) -> Advert {
    Advert { vhid: 10, advskew, advbase, counter, auth: AuthData::Sha1(key().digest(counter)) }
}

/// Fixes the IPv4 header checksum after an edit.
fn fix_ip_checksum(p: &mut [u8]) {
    p[10] = 0;
    p[11] = 0;
    let c = duet_wire::checksum::internet(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

fn fix_carp_checksum(p: &mut [u8]) {
    p[26] = 0;
    p[27] = 0;
    let c = duet_wire::checksum::internet(&p[20..]);
    p[26..28].copy_from_slice(&c.to_be_bytes());
}

fn drops(l: &PairLab, h: HostId, r: DropReason) -> u64 {
    l.status(h).ok().and_then(|s| s.drops.iter().find(|d| d.reason == r as i32).map(|d| d.count)).unwrap_or(0)
}

fn total_drops(l: &PairLab, h: HostId) -> u64 {
    l.status(h).map(|s| s.drops.iter().map(|d| d.count).sum()).unwrap_or(0)
}

fn pair(l: &mut PairLab, extra_ha: &str, takeover: bool) -> anyhow::Result<Vec<Proc>> {
    let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
    let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
    for c in [&mut c1, &mut c2] {
        c.ha.push_str(extra_ha);
        c.extra.push_str("[election]\ndrop_log_window_s = 5\n");
    }
    let mut procs = vec![l.election(l.a, &c1)?, l.election(l.b, &c2)?];
    if takeover {
        procs.push(l.takeover(l.a, &c1)?);
        procs.push(l.takeover(l.b, &c2)?);
    }
    l.wait_role(l.a, Role::Active, T)?;
    l.wait_role(l.b, Role::Standby, T)?;
    Ok(procs)
}

/// Reads a pcap file of Ethernet frames and returns the IPv4 packets.
fn read_pcap(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let d = std::fs::read(path)?;
    anyhow::ensure!(d.len() >= 24 && d[..4] == [0xd4, 0xc3, 0xb2, 0xa1], "not a little-endian pcap file");
    let mut off = 24;
    let mut out = Vec::new();
    while off + 16 <= d.len() {
        let incl = u32::from_le_bytes([d[off + 8], d[off + 9], d[off + 10], d[off + 11]]) as usize;
        off += 16;
        if off + incl > d.len() {
            break;
        }
        let frame = &d[off..off + incl];
        if frame.len() > 14 && frame[12..14] == [0x08, 0x00] {
            out.push(frame[14..].to_vec());
        }
        off += incl;
    }
    Ok(out)
}

/// Captures `n` adverts of `src` in the attacker's namespace.
fn capture(l: &mut PairLab, src: &str, n: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let x = l.x.expect("attacker");
    let file = l.lab.dir().join(format!("capture-{src}.pcap"));
    let f = file.to_string_lossy().into_owned();
    let cnt = n.to_string();
    let mut p = l.lab.spawn(
        x,
        "capture",
        &["tcpdump", "-U", "-n", "-i", "eth0", "-c", &cnt, "-w", &f, &format!("ip proto 112 and src host {src}")],
        &[],
    )?;
    wait_for("the capture", Duration::from_secs(n as u64 + 10), Duration::from_millis(100), || {
        p.try_wait().ok().flatten()
    })?;
    let pkts = read_pcap(&file)?;
    anyhow::ensure!(pkts.len() == n, "captured {} of {n}", pkts.len());
    Ok(pkts)
}

#[test]
fn a_flood_of_invalid_packets_changes_nothing_and_keeps_adverts_on_time() {
    lab_test("hostile_flood", true, |l| {
        let procs = pair(l, "", true)?;
        let x = l.x.expect("attacker");
        let mac_a = l.lab.mac(l.a, "eth0")?;
        let cap = capture_adverts_from(&mut l.lab, l.c, &mac_a, "adverts")?;
        let pid_a = pids_of(&l.lab, l.a, "duet-election");
        let cpu0 = cpu_ticks(&pid_a);
        let log_lines_before = procs[0].log().lines().count();

        // 100,000 packets at 5,000/s: unauthenticated adverts (right vhid,
        // good checksums, garbage digest) claiming the best timing, and
        // malformed ones, spoofing both units.
        let mut flood = Vec::with_capacity(100_000);
        for k in 0..100_000u64 {
            let (src, dst) = if k % 2 == 0 { (ip(UNIT2), GROUP) } else { (ip(UNIT1), GROUP) };
            let a = Advert {
                vhid: 10,
                advskew: 0,
                advbase: 0,
                counter: k.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                auth: AuthData::Sha1([k as u8; 20]),
            };
            let mut p = ip_packet(src, dst, 255, &a.to_bytes());
            match k % 5 {
                0 | 1 => {}
                2 => {
                    p[20] = 0x22; // wrong type
                    fix_carp_checksum(&mut p);
                }
                3 => {
                    p[8] = 1; // wrong TTL
                    fix_ip_checksum(&mut p);
                }
                _ => p[30] ^= 0xff, // bad checksum
            }
            flood.push(p);
        }
        let ns = l.lab.ns(x);
        let start = Instant::now();
        let sender = std::thread::spawn(move || send_paced(&ns, flood, 5_000));
        // The client keeps reaching the shared address meanwhile.
        let mut pings = 0;
        let mut lost = 0;
        while !sender.is_finished() {
            pings += 1;
            if !l.lab.ping(l.c, SHARED)? {
                lost += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        sender.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
        let took = start.elapsed();
        let cpu = cpu_ticks(&pid_a) - cpu0;
        std::thread::sleep(Duration::from_millis(1200));

        assert_eq!(l.role(l.a), Some(Role::Active));
        assert_eq!(l.role(l.b), Some(Role::Standby));
        assert_eq!(lost, 0, "the client lost {lost} of {pings} pings to the shared address during the flood");
        // The active's adverts on the wire during the flood.
        let t0 = epoch_now() - took.as_secs_f64() - 1.2;
        let seen: Vec<f64> =
            parse_adverts(&cap.log()).into_iter().filter(|s| s.src == ip(UNIT1) && s.at >= t0).map(|s| s.at).collect();
        let worst = seen.windows(2).map(|w| ((w[1] - w[0]) - 1.0).abs() * 1000.0).fold(0.0, f64::max);
        let s = l.status(l.a)?;
        let counted: u64 = s.drops.iter().map(|d| d.count).sum();
        let lines = procs[0].log().lines().count() - log_lines_before;
        let tl = s.timer_lateness.unwrap_or_default();
        eprintln!(
            "flood: 100000 packets in {:.1} s; election CPU {:.2} s ({:.1} % of one core); {} adverts, worst interval deviation {:.2} ms; \
             timer late p99 {} us max {} us; {} packets counted as dropped on lb1; {} log lines",
            took.as_secs_f64(),
            cpu as f64 / 100.0,
            cpu as f64 / took.as_secs_f64(),
            seen.len(),
            worst,
            tl.p99_us,
            tl.max_us,
            counted,
            lines
        );
        assert!(seen.len() >= 15, "{} adverts seen", seen.len());
        assert!(worst <= 5.0, "advert interval off by {worst:.2} ms during the flood");
        assert!(counted >= 99_000, "every packet counted ({counted})");
        assert!(lines < 200, "{lines} log lines for 100000 dropped packets");
        procs[0].wait_log("Suppressed drop log lines in the last", Duration::from_secs(8))?;
        Ok(())
    });
}

/// Sends packets (IPv4, header included) at `rate` per second from `ns`.
fn send_paced(ns: &str, packets: Vec<Vec<u8>>, rate: u32) -> anyhow::Result<()> {
    duet_testkit::in_netns(ns, move || -> anyhow::Result<()> {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))?;
        s.set_header_included_v4(true)?;
        s.bind_device(Some(b"eth0"))?;
        let start = Instant::now();
        for (k, p) in packets.iter().enumerate() {
            let due = start + Duration::from_secs_f64(k as f64 / f64::from(rate));
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            let _ = s.send_to(p, &SockAddr::from(std::net::SocketAddrV4::new(dst, 0)));
        }
        Ok(())
    })?
}

fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

#[test]
fn single_defect_packets_are_all_dropped_and_counted() {
    lab_test("hostile_defects", true, |l| {
        let _p = pair(l, "", false)?;
        let x = l.ns_attacker();
        // Each from lb1's address (lb2's partner) with a fresh, validly
        // signed counter, and exactly one field wrong.
        let base = |c: u64| ip_packet(ip(UNIT1), GROUP, 255, &signed(1, 0, c).to_bytes());
        let mut cases: Vec<(&str, Vec<u8>, DropReason)> = Vec::new();
        let mut p = base(1 << 40);
        p[20] = 0x22;
        fix_carp_checksum(&mut p);
        cases.push(("type", p, DropReason::BadType));
        let mut p = base((1 << 40) + 1);
        p[20] = 0x31;
        fix_carp_checksum(&mut p);
        cases.push(("version", p, DropReason::BadVersion));
        let mut p = base((1 << 40) + 2);
        p[8] = 64;
        fix_ip_checksum(&mut p);
        cases.push(("ttl", p, DropReason::BadTtl));
        let mut bad_ip = base((1 << 40) + 3);
        bad_ip[10] ^= 0x55;
        let mut p = base((1 << 40) + 4);
        p[26] ^= 0x55;
        cases.push(("carp checksum", p, DropReason::BadChecksum));
        let a = Advert { vhid: 11, ..signed(1, 0, (1 << 40) + 5) };
        cases.push(("vhid", ip_packet(ip(UNIT1), GROUP, 255, &a.to_bytes()), DropReason::ForeignVhid));
        cases.push((
            "destination",
            ip_packet(ip(UNIT1), ip(UNIT2), 255, &signed(1, 0, (1 << 40) + 6).to_bytes()),
            DropReason::BadDestination,
        ));
        let mut short = signed(1, 0, (1 << 40) + 7).to_bytes();
        short.truncate(32);
        let mut p = ip_packet(ip(UNIT1), GROUP, 255, &short);
        fix_carp_checksum(&mut p);
        cases.push(("length", p, DropReason::BadLength));
        // A wrong IP checksum can only be put on the wire as a whole frame.
        let before = drops(l, l.b, DropReason::BadIpChecksum);
        send_frames(&l.lab, l.x.expect("attacker"), vec![bad_ip])?;
        wait_for("ip checksum counted", Duration::from_secs(3), Duration::from_millis(20), || {
            (drops(l, l.b, DropReason::BadIpChecksum) == before + 1).then_some(())
        })?;
        for (what, pkt, reason) in cases {
            let before = drops(l, l.b, reason);
            send_raw(&x, vec![pkt], Duration::ZERO)?;
            wait_for(
                &format!("{what} counted as {reason:?}"),
                Duration::from_secs(3),
                Duration::from_millis(20),
                || (drops(l, l.b, reason) == before + 1).then_some(()),
            )?;
        }
        assert_eq!(l.role(l.b), Some(Role::Standby));
        assert_eq!(l.role(l.a), Some(Role::Active));
        Ok(())
    });
}

#[test]
fn replays_of_a_dead_active_never_keep_it_alive() {
    lab_test("hostile_replay", true, |l| {
        let mut procs = pair(l, "", false)?;
        let captured = capture(l, UNIT1, 3)?;
        let x = l.ns_attacker();
        procs[0].kill()?;
        let killed = Instant::now();
        let replayer = {
            let packets = captured.clone();
            std::thread::spawn(move || {
                for round in 0..60 {
                    let _ = send_raw(&x, vec![packets[round % packets.len()].clone()], Duration::ZERO);
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        let took = l.wait_role(l.b, Role::Active, Duration::from_secs(6))?;
        let took = took.max(killed.elapsed().saturating_sub(Duration::from_secs(6)));
        eprintln!("active killed, replay running: standby took over after {:?}", killed.elapsed());
        assert!(
            killed.elapsed() <= Duration::from_secs(4) + Duration::from_millis(300),
            "timeout 3 s + one interval: {took:?}"
        );
        // And keeps the role while the replay goes on.
        for _ in 0..30 {
            assert_eq!(l.role(l.b), Some(Role::Active));
            std::thread::sleep(Duration::from_millis(250));
        }
        replayer.join().map_err(|_| anyhow::anyhow!("replayer panicked"))?;
        assert!(drops(l, l.b, DropReason::Replay) >= 20);
        Ok(())
    });
}

#[test]
fn replays_while_both_live_and_the_standby_restarts_flip_nothing() {
    lab_test("hostile_replay_restart", true, |l| {
        let mut procs = pair(l, "", false)?;
        let captured = capture(l, UNIT1, 3)?;
        let x = l.ns_attacker();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = std::sync::Arc::clone(&stop);
        let replayer = std::thread::spawn(move || {
            let mut k = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = send_raw(&x, vec![captured[k % captured.len()].clone()], Duration::ZERO);
                k += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // The standby restarts (its replay windows come back from disk).
        procs[1].terminate(Duration::from_secs(5))?;
        let c2 = UnitConfig::new("lb2", "second", l.lab.dir());
        let b2 = l.election_labeled(l.b, &c2, "election-lb2-again")?;
        l.wait_role(l.b, Role::Standby, Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_secs(6));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        replayer.join().map_err(|_| anyhow::anyhow!("replayer panicked"))?;
        assert_eq!(l.role(l.a), Some(Role::Active));
        assert_eq!(l.role(l.b), Some(Role::Standby));
        assert!(!b2.log().contains("Switching to state: Active"), "{}", b2.log());
        assert!(drops(l, l.b, DropReason::Replay) >= 10);
        Ok(())
    });
}

#[test]
fn forged_adverts_without_the_key_flip_nothing() {
    lab_test("hostile_forgery", true, |l| {
        let _p = pair(l, "", false)?;
        let x = l.ns_attacker();
        let mut forged = Vec::new();
        for k in 0..40u64 {
            // "lb2, preferred": advbase 0, advskew 0, to the active.
            let a =
                Advert { vhid: 10, advskew: 0, advbase: 0, counter: (7 << 48) + k, auth: AuthData::Sha1([0x5a; 20]) };
            forged.push(ip_packet(ip(UNIT2), GROUP, 255, &a.to_bytes()));
            // "lb1 resigns": 255/255, to the standby.
            let r = Advert {
                vhid: 10,
                advskew: 255,
                advbase: 255,
                counter: (9 << 48) + k,
                auth: AuthData::Sha1([0xa5; 20]),
            };
            forged.push(ip_packet(ip(UNIT1), GROUP, 255, &r.to_bytes()));
        }
        send_raw(&x, forged, Duration::from_millis(50))?;
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(l.role(l.a), Some(Role::Active));
        assert_eq!(l.role(l.b), Some(Role::Standby));
        assert!(drops(l, l.a, DropReason::BadDigest) >= 40 && drops(l, l.b, DropReason::BadDigest) >= 40);
        let _ = total_drops(l, l.a);
        Ok(())
    });
}

#[test]
fn no_password_is_a_loud_warning_at_start_and_in_status() {
    lab_test("hostile_nopassword", false, |l| {
        let mut c = UnitConfig::new("lb1", "first", l.lab.dir());
        c.ha = "timeout_s = 3\n".into();
        let p = l.election(l.a, &c)?;
        p.wait_log(
            "No HA password set (ha.password): any host on the segment can take the active role",
            Duration::from_secs(10),
        )?;
        let s = l.status(l.a)?;
        assert!(s.warnings.iter().any(|w| w.contains("No HA password set")), "{:?}", s.warnings);
        Ok(())
    });
}
