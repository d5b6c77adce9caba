//! Interoperation with ucarp 1.5 (Debian's `ucarp`): same vhid, password
//! and virtual address; the two agree on one master and fail over both ways.

use std::time::{Duration, Instant};

use duet_proto::common::v1::Role;
use duet_testkit::{HostId, Proc};
use duet_tests::*;

const T: Duration = Duration::from_secs(20);

/// Starts ucarp in `host` as unit 2 of the pair with advskew `skew`.
fn ucarp(l: &mut PairLab, host: HostId, skew: u8, label: &str) -> anyhow::Result<Proc> {
    let skew = skew.to_string();
    Ok(l.lab.spawn(
        host,
        label,
        &[
            "ucarp",
            "-i",
            "eth0",
            "-s",
            UNIT2,
            "-v",
            "10",
            "-p",
            "secret",
            "-a",
            SHARED,
            "-b",
            "1",
            "-k",
            &skew,
            "-r",
            "3",
            "-u",
            "/bin/true",
            "-d",
            "/bin/true",
            "-n",
        ],
        &[],
    )?)
}

/// ucarp's current state from its log: the last "Switching to state".
fn ucarp_state(p: &Proc) -> Option<&'static str> {
    let log = p.log();
    let master = log.rfind("Switching to state: MASTER");
    let backup = log.rfind("Switching to state: BACKUP");
    match (master, backup) {
        (Some(m), Some(b)) => Some(if m > b { "MASTER" } else { "BACKUP" }),
        (Some(_), None) => Some("MASTER"),
        (None, Some(_)) => Some("BACKUP"),
        (None, None) => None,
    }
}

fn wait_ucarp(p: &Proc, state: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if ucarp_state(p) == Some(state) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            anyhow::bail!("ucarp did not reach {state} within {timeout:?}; log:\n{}", p.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn duet_cfg(l: &PairLab) -> UnitConfig {
    UnitConfig::new("lb1", "first", l.lab.dir())
}

#[test]
fn duet_active_then_ucarp_joins_and_they_fail_over_both_ways() {
    lab_test("ucarp_duet_first", false, |l| {
        let cfg = duet_cfg(l);
        let mut duet = l.election(l.a, &cfg)?;
        l.wait_role(l.a, Role::Active, T)?;
        let mut uc = ucarp(l, l.b, 1, "ucarp")?;
        wait_ucarp(&uc, "BACKUP", Duration::from_secs(5))?;
        std::thread::sleep(Duration::from_secs(5));
        assert_eq!(ucarp_state(&uc), Some("BACKUP"), "ucarp stays backup behind duet");
        assert_eq!(l.role(l.a), Some(Role::Active));

        // duet -> ucarp (crash).
        duet.kill()?;
        let took = wait_ucarp(&uc, "MASTER", Duration::from_secs(6))?;
        eprintln!("duet killed -> ucarp master after {took:?}");

        // duet comes back: it hears ucarp and stays standby (preferred none).
        let _duet = l.election(l.a, &cfg)?;
        l.wait_role(l.a, Role::Standby, T)?;
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(l.role(l.a), Some(Role::Standby));
        assert_eq!(ucarp_state(&uc), Some("MASTER"));

        // ucarp -> duet (crash).
        uc.kill()?;
        let took = l.wait_role(l.a, Role::Active, Duration::from_secs(6))?;
        eprintln!("ucarp killed -> duet active after {took:?}");
        assert!(!uc.log().contains("Bad digest"), "ucarp rejected duet's adverts:\n{}", uc.log());
        Ok(())
    });
}

#[test]
fn ucarp_active_then_duet_joins_as_standby_and_takes_a_planned_handover_back() {
    lab_test("ucarp_ucarp_first", false, |l| {
        let uc = ucarp(l, l.b, 1, "ucarp")?;
        wait_ucarp(&uc, "MASTER", Duration::from_secs(8))?;
        let cfg = duet_cfg(l);
        let _duet = l.election(l.a, &cfg)?;
        l.wait_role(l.a, Role::Standby, T)?;
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(l.role(l.a), Some(Role::Standby), "duet does not take the role from a healthy ucarp master");
        assert_eq!(ucarp_state(&uc), Some("MASTER"));
        let s = l.status(l.a)?;
        let partner = s.partner.unwrap();
        assert_eq!((partner.address.as_str(), partner.advbase, partner.advskew), (UNIT2, 1, 1));

        // ucarp has no planned handover; make duet active with SIGUSR2-like
        // means: stop ucarp, let duet take over, restart ucarp as backup.
        drop(uc);
        l.wait_role(l.a, Role::Active, Duration::from_secs(6))?;
        let uc = ucarp(l, l.b, 1, "ucarp2")?;
        wait_ucarp(&uc, "BACKUP", Duration::from_secs(5))?;
        std::thread::sleep(Duration::from_secs(2));

        // Planned handover duet -> ucarp: the resign advert (advbase 255,
        // advskew 255) makes ucarp take over at once ("going to time out").
        let start = Instant::now();
        let r = grpc(&l.lab.ns(l.a), |mut c| async move {
            Ok(c.handover(duet_proto::election::v1::HandoverRequest { timeout_ms: 3000 }).await?.into_inner())
        })?;
        assert!(r.confirmed, "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        wait_ucarp(&uc, "MASTER", Duration::from_secs(1))?;
        assert!(uc.log().contains("Putting MASTER DOWN"), "{}", uc.log());
        assert_eq!(l.role(l.a), Some(Role::Standby));
        assert!(!uc.log().contains("Bad digest"));
        Ok(())
    });
}

/// Exactly one of duet (unit 1) and ucarp is master, and stays so for 3 s.
fn one_master_stays(l: &PairLab, uc: &Proc) -> anyhow::Result<&'static str> {
    let one = || {
        let duet = l.role(l.a) == Some(Role::Active);
        let ucarp = ucarp_state(uc) == Some("MASTER");
        (duet != ucarp).then_some(if duet { "duet" } else { "ucarp" })
    };
    let who = duet_testkit::wait_for("exactly one master", Duration::from_secs(12), Duration::from_millis(50), one)?;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        anyhow::ensure!(
            one() == Some(who),
            "{who} was the only master, then duet {:?} ucarp {:?}",
            l.role(l.a),
            ucarp_state(uc)
        );
    }
    Ok(who)
}

/// duet keeps a replay window of ucarp's counters (across its own restart
/// too); a restarted ucarp starts with new random counters. Restarts of
/// ucarp as standby and as active, each while duet's window holds the old
/// instance's counters, end with one master as ucarp alone would.
#[test]
fn ucarp_restarts_as_standby_and_as_active_and_the_pair_converges() {
    lab_test("ucarp_restarts", false, |l| {
        let cfg = duet_cfg(l);
        let mut duet = l.election(l.a, &cfg)?;
        l.wait_role(l.a, Role::Active, T)?;
        let mut uc = ucarp(l, l.b, 1, "ucarp1")?;
        wait_ucarp(&uc, "BACKUP", Duration::from_secs(5))?;
        std::thread::sleep(Duration::from_secs(3));

        // ucarp restarts as standby: duet stays the master.
        uc.kill()?;
        let uc = ucarp(l, l.b, 1, "ucarp2")?;
        wait_ucarp(&uc, "BACKUP", Duration::from_secs(5))?;
        assert_eq!(one_master_stays(l, &uc)?, "duet", "ucarp log:\n{}", uc.log());

        // ucarp becomes master (duet crashes), duet returns as standby with
        // the window of ucarp's counters it saved.
        duet.kill()?;
        wait_ucarp(&uc, "MASTER", Duration::from_secs(6))?;
        let _duet = l.election(l.a, &cfg)?;
        l.wait_role(l.a, Role::Standby, T)?;
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(l.role(l.a), Some(Role::Standby));

        // ucarp restarts as master: its new instance starts as backup with
        // new counters; duet takes over after its timeout or defers to the
        // new instance; either way one master, and it stays.
        let mut uc = uc;
        uc.kill()?;
        let uc = ucarp(l, l.b, 1, "ucarp3")?;
        let who = one_master_stays(l, &uc)?;
        eprintln!("after ucarp restarted as master: {who} is the master");
        let s = l.status(l.a)?;
        let replays = s
            .drops
            .iter()
            .find(|d| d.reason == duet_proto::election::v1::DropReason::Replay as i32)
            .map_or(0, |d| d.count);
        eprintln!("duet dropped {replays} adverts as replays");
        assert!(!uc.log().contains("Bad digest"), "ucarp rejected duet's adverts:\n{}", uc.log());
        Ok(())
    });
}

#[test]
fn equal_skew_split_brain_heals_to_the_same_single_master_on_both_sides() {
    lab_test("ucarp_tie", false, |l| {
        let mut cfg = duet_cfg(l);
        cfg.ha.push_str("advskew = 1\n");
        let _duet = l.election(l.a, &cfg)?;
        let uc = ucarp(l, l.b, 1, "ucarp")?;
        // Partition the two (adverts dropped at the switch; cutting the
        // port would take ucarp's carrier away and keep it backup): both
        // become master.
        let rule = l.lab.add_switch_rule("ip protocol 112 drop")?;
        l.wait_role(l.a, Role::Active, T)?;
        wait_ucarp(&uc, "MASTER", Duration::from_secs(8))?;
        l.lab.remove_rule(rule)?;
        // ucarp's tie-break: the lower source address (compared as ucarp
        // does) wins; 198.18.0.1 is duet.
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(l.role(l.a), Some(Role::Active));
        assert_eq!(ucarp_state(&uc), Some("BACKUP"), "ucarp log:\n{}", uc.log());
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(l.role(l.a), Some(Role::Active));
        assert_eq!(ucarp_state(&uc), Some("BACKUP"));
        Ok(())
    });
}

/// ucarp compares `in_addr.s_addr` as a native integer; on x86 that ranks
/// 198.18.1.1 below 198.18.0.2 (last octet first), the opposite of the
/// numeric order. If duet compared numerically, both would keep the role.
#[test]
fn tie_break_follows_ucarps_byte_order() {
    if !duet_testkit::require_root("tie_break_follows_ucarps_byte_order") {
        return;
    }
    let run = || -> anyhow::Result<()> {
        let mut lab = duet_testkit::Lab::new("ucarpbo")?;
        let lan = lab.segment("lan")?;
        let a = lab.host("a")?;
        let b = lab.host("b")?;
        lab.attach(a, lan, "eth0", &["198.18.1.1/16"])?;
        lab.attach(b, lan, "eth0", &["198.18.0.2/16"])?;
        let cfg = format!(
            "[unit]\nname = \"lb1\"\nmode = \"first\"\nstate_dir = \"{}/state\"\n[ha]\npassword = \"secret\"\ntimeout_s = 3\nadvskew = 1\n[[interface]]\nname = \"eth0\"\nunit1 = \"198.18.1.1/16\"\nunit2 = \"198.18.0.2/16\"\nshared = \"198.18.0.10/16\"\n",
            lab.dir().display()
        );
        let path = lab.dir().join("lb1.toml");
        std::fs::write(&path, cfg)?;
        let exe = bin("duet-election").to_string_lossy().into_owned();
        let _duet = lab.spawn(a, "election", &[&exe, "--config", &path.to_string_lossy()], &[])?;
        let uc = lab.spawn(
            b,
            "ucarp",
            &[
                "ucarp",
                "-i",
                "eth0",
                "-s",
                "198.18.0.2",
                "-v",
                "10",
                "-p",
                "secret",
                "-a",
                "198.18.0.10",
                "-b",
                "1",
                "-k",
                "1",
                "-r",
                "3",
                "-u",
                "/bin/true",
                "-d",
                "/bin/true",
                "-n",
            ],
            &[],
        )?;
        let rule = lab.add_switch_rule("ip protocol 112 drop")?;
        wait_ucarp(&uc, "MASTER", Duration::from_secs(8))?;
        std::thread::sleep(Duration::from_secs(3));
        lab.remove_rule(rule)?;
        std::thread::sleep(Duration::from_secs(4));
        let ns = lab.ns(a);
        let role = grpc(&ns, |mut c| async move {
            Ok(c.get_status(duet_proto::election::v1::GetStatusRequest {}).await?.into_inner().role)
        })?;
        assert_eq!(role, Role::Active as i32, "198.18.1.1 ranks lower in ucarp's order: duet keeps the role");
        assert_eq!(ucarp_state(&uc), Some("BACKUP"), "and ucarp agrees:\n{}", uc.log());
        Ok(())
    };
    if let Err(e) = run() {
        panic!("{e:#}");
    }
}
