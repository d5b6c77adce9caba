//! The election service in network namespaces: two duet units on a bridge.

use std::time::{Duration, Instant};

use duet_proto::common::v1::{Role, UnitStatus};
use duet_proto::election::v1::DropReason;
use duet_tests::*;

const T: Duration = Duration::from_secs(20);

fn pair(l: &mut PairLab, tweak: impl Fn(&mut UnitConfig)) -> anyhow::Result<(duet_testkit::Proc, duet_testkit::Proc)> {
    let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
    let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
    tweak(&mut c1);
    tweak(&mut c2);
    let p1 = l.election(l.a, &c1)?;
    let p2 = l.election(l.b, &c2)?;
    Ok((p1, p2))
}

#[test]
fn two_units_elect_exactly_one_active() {
    lab_test("two_units_elect_exactly_one_active", false, |l| {
        let (p1, p2) = pair(l, |_| {})?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(l.role(l.a), Some(Role::Active));
        assert_eq!(l.role(l.b), Some(Role::Standby));
        let s = l.status(l.a)?;
        let squares: Vec<i32> = s.squares.iter().map(|q| q.status).collect();
        assert_eq!(squares, vec![UnitStatus::Active as i32, UnitStatus::Standby as i32], "{s:?}");
        let s2 = l.status(l.b)?;
        let squares2: Vec<i32> = s2.squares.iter().map(|q| q.status).collect();
        assert_eq!(squares2, squares, "both units report the same two squares");
        assert!(p1.log().contains("Switching to state: Active"), "{}", p1.log());
        assert!(p2.log().contains("Switching to state: Standby"), "{}", p2.log());
        Ok(())
    });
}

#[test]
fn killing_the_active_fails_over_within_timeout_plus_one_second() {
    lab_test("killing_the_active_fails_over_within_timeout_plus_one_second", false, |l| {
        let (mut p1, _p2) = pair(l, |_| {})?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        let cap = capture_adverts(&mut l.lab, l.c, "adverts")?;
        std::thread::sleep(Duration::from_millis(1500));
        let killed = epoch_now();
        p1.kill()?;
        let took = l.wait_role(l.b, Role::Active, Duration::from_secs(10))?;
        assert!(took <= Duration::from_secs(4), "failover took {took:?}, more than timeout (3 s) + 1 s");
        std::thread::sleep(Duration::from_millis(300));
        let first = parse_adverts(&cap.log()).into_iter().find(|s| s.src.to_string() == UNIT2 && s.at > killed);
        let first = first.expect("an advert from the new active");
        let gap = first.at - killed;
        eprintln!("kill -> first advert of the new active: {:.3} s", gap);
        assert!(gap <= 4.0, "{gap}");
        Ok(())
    });
}

#[test]
fn link_down_on_the_checked_interface_fails_over() {
    lab_test("link_down_on_the_checked_interface_fails_over", false, |l| {
        let (p1, _p2) = pair(l, |_| {})?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        l.lab.link_down(l.a, "eth0")?;
        l.wait_role(l.a, Role::Standby, Duration::from_secs(3))?;
        l.wait_role(l.b, Role::Active, Duration::from_secs(5))?;
        p1.wait_log("Link lost on HA-check interface eth0", Duration::from_secs(2))?;
        // Health of the demoted unit: no HA-check interface up.
        let s = l.status(l.a)?;
        assert!(s.warnings.iter().any(|w| w.contains("no link")), "{:?}", s.warnings);
        l.lab.link_up(l.a, "eth0")?;
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(l.role(l.b), Some(Role::Active), "preferred none: no failback");
        assert_eq!(l.role(l.a), Some(Role::Standby));
        Ok(())
    });
}

fn preferred_case(l: &mut PairLab, pref: &str, expect_back: bool) -> anyhow::Result<()> {
    let set = |c: &mut UnitConfig| c.ha.push_str(&format!("preferred = \"{pref}\"\n"));
    let (mut p1, _p2) = pair(l, set)?;
    l.wait_role(l.a, Role::Active, T)?;
    l.wait_role(l.b, Role::Standby, T)?;
    p1.kill()?;
    l.wait_role(l.b, Role::Active, Duration::from_secs(6))?;
    let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
    set(&mut c1);
    let _p1 = l.election(l.a, &c1)?;
    if expect_back {
        l.wait_role(l.a, Role::Active, Duration::from_secs(8))?;
        l.wait_role(l.b, Role::Standby, Duration::from_secs(3))?;
    } else {
        l.wait_role(l.a, Role::Standby, Duration::from_secs(8))?;
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(l.role(l.b), Some(Role::Active));
        assert_eq!(l.role(l.a), Some(Role::Standby));
    }
    Ok(())
}

#[test]
fn preferred_first_takes_the_role_back_when_it_returns() {
    lab_test("preferred_first", false, |l| preferred_case(l, "first", true));
}

#[test]
fn preferred_none_does_not_fail_back() {
    lab_test("preferred_none", false, |l| preferred_case(l, "none", false));
}

#[test]
fn wrong_password_is_a_bad_digest_counted_and_logged() {
    lab_test("wrong_password_is_a_bad_digest_counted_and_logged", false, |l| {
        let c1 = UnitConfig::new("lb1", "first", l.lab.dir());
        let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
        c2.ha = "password = \"other\"\ntimeout_s = 3\n".into();
        let _p1 = l.election(l.a, &c1)?;
        let p2 = l.election(l.b, &c2)?;
        l.wait_role(l.a, Role::Active, T)?;
        p2.wait_log("Bad digest - Check vhid, password and virtual IP address", Duration::from_secs(10))?;
        let s = l.status(l.b)?;
        let bad = s.drops.iter().find(|d| d.reason == DropReason::BadDigest as i32).map_or(0, |d| d.count);
        assert!(bad >= 1, "{:?}", s.drops);
        Ok(())
    });
}

#[test]
fn an_advert_with_ttl_64_is_dropped_and_counted() {
    lab_test("an_advert_with_ttl_64_is_dropped_and_counted", false, |l| {
        let (_p1, _p2) = pair(l, |_| {})?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        // Capture a real advert of the active and resend it with TTL 64 from
        // the client, spoofing the active's address (as a router would forward it).
        let cap = capture_adverts(&mut l.lab, l.c, "cap")?;
        std::thread::sleep(Duration::from_millis(1500));
        drop(cap);
        let before = l.status(l.b)?.drops.iter().find(|d| d.reason == DropReason::BadTtl as i32).map_or(0, |d| d.count);
        let advert = duet_wire::Advert {
            vhid: 10,
            advskew: 0,
            advbase: 1,
            counter: 1,
            auth: duet_wire::AuthData::Sha1([0; 20]),
        };
        let pkt = ip_packet(UNIT1.parse()?, "224.0.0.18".parse()?, 64, &advert.to_bytes());
        send_raw(&l.lab.ns(l.c), vec![pkt], Duration::ZERO)?;
        let start = Instant::now();
        loop {
            let s = l.status(l.b)?;
            let n = s.drops.iter().find(|d| d.reason == DropReason::BadTtl as i32).map_or(0, |d| d.count);
            if n == before + 1 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "bad_ttl not counted: {:?}", s.drops);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(l.role(l.b), Some(Role::Standby));
        Ok(())
    });
}

#[test]
fn broadcast_mode_elects_one_active_with_adverts_to_255() {
    lab_test("broadcast_mode_elects_one_active_with_adverts_to_255", false, |l| {
        let (_p1, _p2) = pair(l, |c| c.ha.push_str("use_broadcast = true\n"))?;
        let cap = capture_adverts(&mut l.lab, l.c, "cap")?;
        l.wait_role(l.a, Role::Active, T)?;
        l.wait_role(l.b, Role::Standby, T)?;
        std::thread::sleep(Duration::from_millis(1500));
        let seen = parse_adverts(&cap.log());
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|s| s.dst.to_string() == "255.255.255.255"), "{seen:?}");
        Ok(())
    });
}

#[test]
fn pacified_after_the_fourth_start_and_cleared_by_the_operator() {
    lab_test("pacified_after_the_fourth_start_and_cleared_by_the_operator", false, |l| {
        let mut c1 = UnitConfig::new("lb1", "first", l.lab.dir());
        c1.ha.push_str("pacify_window_s = 60\n");
        for k in 0..3 {
            let mut p = l.election_labeled(l.a, &c1, &format!("election-start{k}"))?;
            p.wait_log("election started", Duration::from_secs(10))?;
            assert_ne!(l.role(l.a), Some(Role::Pacified), "start {k}");
            p.terminate(Duration::from_secs(5))?;
        }
        let p = l.election(l.a, &c1)?;
        l.wait_role(l.a, Role::Pacified, Duration::from_secs(10))?;
        p.wait_log("Pacified: 4 starts within 60 s", Duration::from_secs(2))?;
        let s = l.status(l.a)?;
        assert_eq!(s.squares[0].status, UnitStatus::Pacified as i32);
        assert_eq!(s.recent_starts, 4);
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(l.role(l.a), Some(Role::Pacified), "no partner, still no takeover while pacified");
        grpc(&l.lab.ns(l.a), |mut c| async move {
            c.clear_pacified(duet_proto::election::v1::ClearPacifiedRequest {}).await?;
            Ok(())
        })?;
        l.wait_role(l.a, Role::Active, Duration::from_secs(8))?;
        Ok(())
    });
}

#[test]
fn planned_handover_switches_at_once() {
    lab_test("planned_handover_switches_at_once", false, |l| {
        let (_p1, _p2) = pair(l, |c| c.ha = "password = \"secret\"\ntimeout_s = 15\n".into())?;
        l.wait_role(l.a, Role::Active, Duration::from_secs(40))?;
        l.wait_role(l.b, Role::Standby, T)?;
        std::thread::sleep(Duration::from_millis(1500));
        let start = Instant::now();
        let r = grpc(&l.lab.ns(l.a), |mut c| async move {
            Ok(c.handover(duet_proto::election::v1::HandoverRequest { timeout_ms: 3000 }).await?.into_inner())
        })?;
        assert!(r.confirmed, "{r:?}");
        assert_eq!(r.partner, UNIT2);
        assert!(start.elapsed() < Duration::from_secs(2), "no waiting for the 15 s timeout");
        assert_eq!(l.role(l.b), Some(Role::Active));
        assert_eq!(l.role(l.a), Some(Role::Standby));
        Ok(())
    });
}

#[test]
fn sigterm_on_the_active_hands_over() {
    lab_test("sigterm_on_the_active_hands_over", false, |l| {
        let (mut p1, _p2) = pair(l, |c| c.ha = "password = \"secret\"\ntimeout_s = 15\n".into())?;
        l.wait_role(l.a, Role::Active, Duration::from_secs(40))?;
        l.wait_role(l.b, Role::Standby, T)?;
        std::thread::sleep(Duration::from_millis(1500));
        let status = p1.terminate(Duration::from_secs(5))?;
        assert!(status.is_some_and(|s| s.success()), "clean exit on SIGTERM: {status:?}\n{}", p1.log());
        let took = l.wait_role(l.b, Role::Active, Duration::from_secs(3))?;
        assert!(took < Duration::from_secs(2), "{took:?}");
        Ok(())
    });
}

#[test]
fn ha_parameters_reload_live() {
    lab_test("ha_parameters_reload_live", false, |l| {
        let (_p1, p2) = pair(l, |_| {})?;
        l.wait_role(l.b, Role::Standby, T)?;
        let mut c2 = UnitConfig::new("lb2", "second", l.lab.dir());
        c2.ha = "password = \"secret\"\ntimeout_s = 6\n".into();
        c2.write(l.lab.dir())?;
        // No configsync here: the unit file is read again on SIGHUP.
        p2.signal(nix::sys::signal::Signal::SIGHUP)?;
        p2.wait_log("HA Config file has changed - reloading", Duration::from_secs(5))?;
        let s = l.status(l.b)?;
        assert_eq!(s.parameters.unwrap().ha_timeout_ms, 6000);
        // A broken file changes nothing and says why.
        c2.ha = "password = \"secret\"\ntimeout_s = 7\n".into();
        c2.write(l.lab.dir())?;
        p2.signal(nix::sys::signal::Signal::SIGHUP)?;
        p2.wait_log("ha.timeout_s: 7 is not allowed", Duration::from_secs(5))?;
        assert_eq!(l.status(l.b)?.parameters.unwrap().ha_timeout_ms, 6000);
        Ok(())
    });
}
