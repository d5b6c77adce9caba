//! Issue 5 in namespaces: unicast adverts where multicast and broadcast are
//! filtered, HMAC-SHA256 with replays, forgeries and a live key rotation,
//! and the sub-second fast profile.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use duet_proto::common::v1::{Role, UnitStatus};
use duet_proto::election::v1::DropReason;
use duet_testkit::{HostId, Proc, wait_for};
use duet_tests::*;

const T: Duration = Duration::from_secs(20);

fn drops(l: &PairLab, h: HostId, r: DropReason) -> u64 {
    l.status(h).ok().and_then(|s| s.drops.iter().find(|d| d.reason == r as i32).map(|d| d.count)).unwrap_or(0)
}

fn start(l: &mut PairLab, ha: &str) -> anyhow::Result<(UnitConfig, UnitConfig, Proc, Proc)> {
    let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
    let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
    c1.ha = ha.into();
    c2.ha = ha.into();
    let p1 = l.election(l.a, &c1)?;
    let p2 = l.election(l.b, &c2)?;
    Ok((c1, c2, p1, p2))
}

/// Filters IP multicast and broadcast between the units at the switch
/// (ARP still passes, so unicast works).
fn filter_multicast(l: &PairLab) -> anyhow::Result<()> {
    l.lab.add_switch_rule("ip daddr 224.0.0.0/4 drop")?;
    l.lab.add_switch_rule("ip daddr 255.255.255.255 drop")?;
    Ok(())
}

#[test]
fn where_multicast_is_filtered_a_multicast_pair_has_two_actives_and_says_so() {
    lab_test("fast_mcast_filtered", false, |l| {
        filter_multicast(l)?;
        let (_c1, _c2, p1, p2) = start(l, "password = \"secret\"\ntimeout_s = 3\n")?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Active, T)?;
        for (h, p) in [(l.a, &p1), (l.b, &p2)] {
            p.wait_log("[CRITICAL] Both units are active", Duration::from_secs(5))?;
            let s = l.status(h)?;
            assert!(s.squares.iter().all(|q| q.status == UnitStatus::Indeterminate as i32), "{:?}", s.squares);
            assert!(s.warnings.iter().any(|w| w.contains("ha.unicast")), "{:?}", s.warnings);
        }
        Ok(())
    });
}

#[test]
fn where_multicast_is_filtered_a_unicast_pair_works_and_hears_only_its_partner() {
    lab_test("fast_unicast", true, |l| {
        filter_multicast(l)?;
        let (_c1, _c2, mut p1, _p2) = start(l, "password = \"secret\"\ntimeout_s = 3\nunicast = true\n")?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(l.role(l.b), Some(Role::Standby));
        // A valid advert (right password) from another address is refused.
        let key = duet_wire::auth::Sha1Key::new(b"secret", 10, SHARED.parse()?);
        let a = duet_wire::Advert {
            vhid: 10,
            advskew: 0,
            advbase: 0,
            counter: 99,
            auth: duet_wire::AuthData::Sha1(key.digest(99)),
        };
        let pkt = ip_packet(ATTACKER.parse()?, UNIT2.parse()?, 255, &a.to_bytes());
        let before = drops(l, l.b, DropReason::NotPartner);
        send_raw(&l.ns_attacker(), vec![pkt], Duration::ZERO)?;
        wait_for("not-partner counted", Duration::from_secs(3), Duration::from_millis(20), || {
            (drops(l, l.b, DropReason::NotPartner) == before + 1).then_some(())
        })?;
        // And it fails over as usual.
        p1.kill()?;
        l.wait_role(l.b, Role::Active, Duration::from_secs(5))?;
        Ok(())
    });
}

const SHA256: &str =
    "timeout_s = 3\n[ha.auth]\nmode = \"sha256\"\nkeys = [{ id = 1, secret = \"first key, long enough\" }]\n";

#[test]
fn sha256_replays_from_a_third_namespace_are_dropped_and_reset_no_timer() {
    lab_test("fast_sha256_replay", true, |l| {
        let (_c1, _c2, mut p1, _p2) = start(l, SHA256)?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        // Capture three of lb1's adverts from the attacker's namespace.
        let x = l.x.expect("attacker");
        let file = l.lab.dir().join("sha256.pcap");
        let f = file.to_string_lossy().into_owned();
        let mut cap = l.lab.spawn(
            x,
            "capture",
            &["tcpdump", "-U", "-n", "-i", "eth0", "-c", "3", "-w", &f, &format!("ip proto 112 and src host {UNIT1}")],
            &[],
        )?;
        wait_for("capture", Duration::from_secs(10), Duration::from_millis(100), || cap.try_wait().ok().flatten())?;
        let captured = read_pcap_ipv4(&file)?;
        assert_eq!(captured.len(), 3);
        assert_eq!(captured[0].len(), 20 + 48, "an HMAC-SHA256 advert");
        p1.kill()?;
        let killed = Instant::now();
        let ns = l.ns_attacker();
        let replay = std::thread::spawn(move || {
            for k in 0..40 {
                let _ = send_raw(&ns, vec![captured[k % 3].clone()], Duration::ZERO);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        l.wait_role(l.b, Role::Active, Duration::from_secs(6))?;
        let took = killed.elapsed();
        assert!(took <= Duration::from_millis(4300), "replays reset no timer: took {took:?}");
        replay.join().map_err(|_| anyhow::anyhow!("replay thread"))?;
        assert_eq!(l.role(l.b), Some(Role::Active));
        assert!(drops(l, l.b, DropReason::Replay) >= 15);
        Ok(())
    });
}

#[test]
fn sha256_forged_better_adverts_cannot_take_the_role() {
    lab_test("fast_sha256_forgery", true, |l| {
        let _p = start(l, SHA256)?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        let mut forged = Vec::new();
        for k in 0..30u64 {
            let a = duet_wire::Advert {
                vhid: 10,
                advskew: 0,
                advbase: 0,
                counter: u64::MAX - k,
                auth: duet_wire::AuthData::Sha256 { key_id: 1, digest: [k as u8; 32] },
            };
            forged.push(ip_packet(UNIT2.parse()?, "224.0.0.18".parse()?, 255, &a.to_bytes()));
        }
        send_raw(&l.ns_attacker(), forged, Duration::from_millis(30))?;
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(l.role(l.a), Some(Role::Active));
        assert!(drops(l, l.a, DropReason::BadDigest) >= 30);
        Ok(())
    });
}

#[test]
fn sha256_keys_rotate_without_a_failover() {
    lab_test("fast_sha256_rotation", false, |l| {
        let (mut c1, mut c2, p1, p2) = start(l, SHA256)?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        let k1 = "{ id = 1, secret = \"first key, long enough\" }";
        let k2 = "{ id = 2, secret = \"second key, also long\" }";
        let steps = [
            format!("keys = [{k1}, {k2}]\nsend_key = 1\n"),
            format!("keys = [{k1}, {k2}]\nsend_key = 2\n"),
            format!("keys = [{k2}]\nsend_key = 2\n"),
        ];
        let changes = |p: &Proc| p.log().matches("Switching to state").count();
        let before = (changes(&p1), changes(&p2));
        for step in &steps {
            for (c, p) in [(&mut c1, &p1), (&mut c2, &p2)] {
                c.ha = format!("timeout_s = 3\n[ha.auth]\nmode = \"sha256\"\n{step}");
                c.write(l.lab.dir())?;
                // The unit file is read again on SIGHUP.
                p.signal(nix::sys::signal::Signal::SIGHUP)?;
                std::thread::sleep(Duration::from_millis(1500));
            }
        }
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!((changes(&p1), changes(&p2)), before, "no role change during the rotation");
        assert!(p1.log().matches("HA Config file has changed - reloading").count() >= 3);
        for h in [l.a, l.b] {
            assert_eq!(drops(l, h, DropReason::BadDigest) + drops(l, h, DropReason::UnknownKey), 0);
        }
        assert_eq!(l.role(l.a), Some(Role::Active));
        Ok(())
    });
}

const FAST: &str = "password = \"secret\"\nprofile = \"fast\"\nfast_interval_ms = 20\nfast_dead_factor = 4\n";

#[test]
fn fast_profile_detects_a_dead_active_in_well_under_a_second() {
    lab_test("fast_profile_failover", false, |l| {
        let (_c1, _c2, mut p1, _p2) = start(l, FAST)?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        let mac_b = l.lab.mac(l.b, "eth0")?;
        let cap = capture_adverts_from(&mut l.lab, l.c, &mac_b, "adverts-b")?;
        std::thread::sleep(Duration::from_millis(500));
        let killed = epoch_now();
        p1.kill()?;
        let first = wait_for("lb2's first advert", Duration::from_secs(3), Duration::from_millis(20), || {
            parse_adverts(&cap.log()).into_iter().find(|s| s.at > killed)
        })?;
        let gap_ms = (first.at - killed) * 1000.0;
        eprintln!("fast profile: kill -> first advert of the new active {gap_ms:.1} ms");
        // Generous in CI (a busy machine); the benchmark reports the figure.
        assert!(gap_ms < 500.0, "{gap_ms} ms");
        Ok(())
    });
}

#[test]
fn fast_profile_keeps_its_role_at_one_percent_advert_loss() {
    lab_test("fast_profile_loss", false, |l| {
        let (_c1, _c2, p1, p2) = start(l, FAST)?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        let changes = |p: &Proc| p.log().matches("Switching to state").count();
        let before = (changes(&p1), changes(&p2));
        for p in [&p1, &p2] {
            assert!(
                p.log().contains("real-time scheduling (SCHED_RR)"),
                "the fast profile runs real-time:\n{}",
                p.log()
            );
        }
        let _loss = l.lab.add_loss("ip protocol 112", 1)?;
        std::thread::sleep(Duration::from_secs(30));
        assert_eq!(
            (changes(&p1), changes(&p2)),
            before,
            "no false failover in 30 s at 1 % loss (the benchmark runs 10 minutes)"
        );
        let s = l.status(l.b)?;
        let tl = s.timer_lateness.unwrap_or_default();
        let rd = s.receive_delay.unwrap_or_default();
        eprintln!(
            "standby scheduling: timer late p99 {} us max {} us; receive wait p99 {} us max {} us",
            tl.p99_us, tl.max_us, rd.p99_us, rd.max_us
        );
        Ok(())
    });
}

/// IPv4 packets of a pcap file of Ethernet frames.
fn read_pcap_ipv4(path: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let d = std::fs::read(path)?;
    anyhow::ensure!(d.len() >= 24, "short pcap");
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
    let _ = Ipv4Addr::UNSPECIFIED;
    Ok(out)
}
