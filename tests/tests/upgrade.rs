//! U4 end to end: a rolling upgrade from the last release (the `duet` of
//! `scripts/last-release`, built by `scripts/previous-release.sh`; the
//! suite's script sets `DUET_PREVIOUS_BIN`) to this tree's, as the README's
//! "Upgrading a pair" says: upgrade the standby, hand over, upgrade the
//! other. On the way the pair runs mixed both ways round (an old active
//! with a new standby, then a new active with an old standby), and in each
//! the election agrees on one active, a configuration commit on the active
//! reaches the other unit, and the replicator keeps the connections. The
//! whole procedure moves the role once, and no connection, no committed
//! generation is lost.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use duet_proto::common::v1::Role;
use duet_testkit::{HostId, wait_for};
use duet_tests::lblab::{self, LbLab, lb_test};
use duet_tests::*;

const T: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const CONNS: usize = 20;

fn previous() -> Option<PathBuf> {
    std::env::var_os("DUET_PREVIOUS_BIN").map(PathBuf::from)
}

/// `host` holds generation `g` and its replicator has installed the
/// partner's flows.
fn caught_up(l: &LbLab, host: HostId, g: u64) -> anyhow::Result<()> {
    wait_for(&format!("generation {g} on {}", l.l.lab.ns(host)), T, POLL, || {
        l.generation(host).ok().filter(|have| *have == g).map(drop)
    })?;
    wait_for(&format!("the replicator of {} linked with the flows", l.l.lab.ns(host)), T, POLL, || {
        l.replicator_status(host).ok().filter(|s| s.partner_connected && s.flows >= CONNS as u64).map(drop)
    })?;
    Ok(())
}

/// One active (`active`) and one standby, the address on the active only.
fn settled(l: &LbLab, active: HostId, standby: HostId) -> anyhow::Result<()> {
    l.l.wait_role(active, Role::Active, T)?;
    l.l.wait_role(standby, Role::Standby, T)?;
    ensure!(l.l.lab.addr_present(active, "eth0", SHARED)?, "the shared address on the active");
    ensure!(!l.l.lab.addr_present(standby, "eth0", SHARED)?, "the shared address not on the standby");
    Ok(())
}

#[test]
fn a_rolling_upgrade_from_the_last_release_keeps_every_connection_and_generation() {
    let Some(old) = previous() else {
        // scripts/test.sh builds the release and sets it; without the
        // release's history (a shallow clone) it says so and skips.
        eprintln!("skipped: DUET_PREVIOUS_BIN is not set (scripts/previous-release.sh builds the last release's duet)");
        return;
    };
    assert!(old.exists(), "DUET_PREVIOUS_BIN={} does not exist", old.display());
    // It is the release's build: its --version names the release's commit.
    let release = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/last-release")).unwrap();
    let commit = release.split_whitespace().nth(1).expect("scripts/last-release: <tag> <commit>");
    let out = std::process::Command::new(&old).arg("--version").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains(&format!("commit {}", &commit[..12])), "{} --version: {said}", old.display());
    lb_test("upgrade", |l| {
        let c1 = l.unit_config("lb1", "first", "lb1", "lb2")?;
        let c2 = l.unit_config("lb2", "second", "lb2", "lb1")?;
        let (a, b) = (l.l.a, l.l.b);
        let _server = l.server()?;
        // Both units on the last release; a first, so it is the active.
        let mut ua = l.l.unit_from(a, &c1, &old, &[])?;
        l.l.wait_role(a, Role::Active, T)?;
        let mut ub = l.l.unit_from(b, &c2, &old, &[])?;
        settled(l, a, b)?;
        let g1 = l.add_service(a, None)?;
        let stop = l.l.lab.dir().join("conns.stop");
        let (_client, ready, json) = l.client_until(CONNS, &stop)?;
        wait_for("the client's connections open", T, POLL, || ready.exists().then_some(()))?;
        caught_up(l, b, g1)?;

        // 1. The standby upgraded: an old active with a new standby.
        ensure!(ub.terminate(Duration::from_secs(10))?.is_some(), "the old standby stops on SIGTERM");
        let _ub = l.l.unit(b, &c2)?;
        settled(l, a, b)?;
        caught_up(l, b, g1)?;
        let g2 = l.upsert_service(a, lblab::service("old-active", 8001))?;
        caught_up(l, b, g2)?;
        eprintln!("old active, new standby: generation {g2} reached the new standby, flows replicated");

        // 2. Hand over to the new unit: a new active with an old standby.
        l.l.lab.run(a, &[&bin("duetctl").to_string_lossy(), "failover"])?;
        settled(l, b, a)?;
        let g3 = l.upsert_service(b, lblab::service("new-active", 8002))?;
        caught_up(l, a, g3)?;
        eprintln!("new active, old standby: generation {g3} reached the old standby, flows replicated");

        // 3. The other unit upgraded: both new, the role stays on b.
        ensure!(ua.terminate(Duration::from_secs(10))?.is_some(), "the old unit stops on SIGTERM");
        let _ua = l.l.unit(a, &c1)?;
        settled(l, b, a)?;
        caught_up(l, a, g3)?;
        std::thread::sleep(Duration::from_secs(2));
        settled(l, b, a)?;

        std::fs::write(&stop, b"stop\n")?;
        let r = lblab::client_report(&json, T)?;
        eprintln!("connections through the upgrade: {r:?}");
        ensure!(
            (r.ok, r.reset, r.hung, r.failed_connect) == (CONNS, 0, 0, 0),
            "every connection kept through the upgrade: {r:?}"
        );
        for h in [a, b] {
            ensure!(l.generation(h)? == g3, "generation {g3} on {}", l.l.lab.ns(h));
        }
        Ok(())
    });
}
