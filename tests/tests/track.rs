//! E16 end to end: whole units in namespaces, each fronting a real HAProxy
//! that a `[[track]]` process check watches. Killing the active's HAProxy
//! moves the role; bringing it back returns the role to the preferred unit
//! after `rise`; with both down one unit stays active and says why.

use std::time::Duration;

use anyhow::ensure;
use duet_proto::common::v1::Role;
use duet_proto::election::v1 as pb;
use duet_testkit::{HostId, Proc, wait_for};
use duet_tests::lblab::{self, LbLab, lb_test};
use duet_tests::*;

const T: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);
/// The check: HAProxy by name (each unit sees its own namespace's), every
/// 200 ms, two failures to fail, two successes to pass.
const INTERVAL_MS: u64 = 200;
const FALL: u64 = 2;
/// And duet's own data plane (the virtual service's nftables table), with a
/// weight of 1 on both units: it moves nothing while it fails on both.
const TRACK: &str = "[[track]]\nname = \"haproxy\"\nkind = \"process\"\nprocess = \"haproxy\"\ninterval_ms = 200\nfall = 2\nrise = 2\n\n\
                     [[track]]\nname = \"rules\"\nkind = \"dataplane\"\ninterval_ms = 500\nweight = 1\n";
/// The kill-to-takeover bound in this (debug, shared-machine) test: the
/// check's interval x fall plus a generous margin; the figure is printed.
const MARGIN_MS: f64 = 500.0;

/// HAProxy on `h`: TCP port 8081 to the real server's echo.
fn haproxy(l: &mut LbLab, h: HostId, unit: &str) -> anyhow::Result<Proc> {
    let cfg = l.l.lab.dir().join(format!("haproxy-{unit}.cfg"));
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
             frontend fe\n  bind 0.0.0.0:8081\n  default_backend be\nbackend be\n  server s1 {}:{}\n",
            lblab::SERVER,
            lblab::SERVER_PORT
        ),
    )?;
    Ok(l.l.lab.spawn(h, &format!("haproxy-{unit}"), &["haproxy", "-db", "-f", &cfg.to_string_lossy()], &[])?)
}

/// A line through the shared address's port 8081, echoed.
fn talk(l: &LbLab) -> anyhow::Result<String> {
    Ok(l.l.lab.run(
        l.l.c,
        &["bash", "-c", &format!("exec 3<>/dev/tcp/{SHARED}/8081; echo hello >&3; read -t 3 line <&3; echo $line")],
    )?)
}

fn check_named(l: &LbLab, h: HostId, name: &str) -> Option<pb::TrackedCheck> {
    l.l.status(h).ok()?.checks.into_iter().find(|c| c.name == name)
}

fn check(l: &LbLab, h: HostId) -> Option<pb::TrackedCheck> {
    check_named(l, h, "haproxy")
}

fn passing(l: &LbLab, h: HostId) -> bool {
    check(l, h).is_some_and(|c| c.state == pb::CheckState::Passing as i32)
}

#[test]
fn haproxy_killed_on_the_active_moves_the_role_and_it_returns_after_rise() {
    lb_test("track_haproxy", |l| {
        let mut c1 = l.unit_config("lb1", "first", "lb1", "lb2")?;
        let mut c2 = l.unit_config("lb2", "second", "lb2", "lb1")?;
        for c in [&mut c1, &mut c2] {
            c.ha.push_str("preferred = \"first\"\n");
            c.extra.push_str(TRACK);
        }
        let (a, b) = (l.l.a, l.l.b);
        let mut ha = Some(haproxy(l, a, "lb1")?);
        let mut hb = Some(haproxy(l, b, "lb2")?);
        let _server = l.server()?;
        let _u1 = l.l.unit(a, &c1)?;
        let _u2 = l.l.unit(b, &c2)?;
        l.l.wait_role(a, Role::Active, T)?;
        l.l.wait_role(b, Role::Standby, T)?;
        wait_for("both checks passing", T, POLL, || (passing(l, a) && passing(l, b)).then_some(()))?;
        // The data plane's check passes on both once the virtual service's
        // rules are in place.
        l.add_service(a, None)?;
        wait_for("the dataplane checks passing", T, POLL, || {
            [a, b]
                .iter()
                .all(|h| check_named(l, *h, "rules").is_some_and(|c| c.state == pb::CheckState::Passing as i32))
                .then_some(())
        })?;
        ensure!(talk(l)?.contains("hello"), "no answer through lb1's HAProxy");
        // Connections through the virtual service (duet's own data plane),
        // replicated to the standby before the role moves.
        let k = 20;
        let (_client, ready, json) = l.client(k, 6)?;
        wait_for("the client's connections open", T, Duration::from_millis(100), || ready.exists().then_some(()))?;
        l.wait_flows(b, k as u64, Duration::from_secs(10))?;

        // The active's HAProxy dies: the standby takes over after fall.
        let (ma, mb) = (monitor_addresses(&mut l.l.lab, a, "addr-a")?, monitor_addresses(&mut l.l.lab, b, "addr-b")?);
        let t0 = epoch_now();
        ha.take().expect("running").kill()?;
        l.l.wait_role(b, Role::Active, Duration::from_secs(5))?;
        let added =
            wait_for("b to add the shared address", Duration::from_secs(2), POLL, || shared_event(&mb, true, t0))?;
        let dropped = shared_event(&ma, false, t0).unwrap_or(added);
        let took_ms = (added - t0) * 1e3;
        eprintln!(
            "HAProxy killed on the active: address on the standby after {took_ms:.1} ms (interval {INTERVAL_MS} ms x fall \
             {FALL}), address gap {:.2} ms",
            (added - dropped) * 1e3
        );
        ensure!(
            took_ms <= (INTERVAL_MS * FALL) as f64 + MARGIN_MS,
            "the role moved {took_ms:.1} ms after the kill, bound {} ms",
            (INTERVAL_MS * FALL) as f64 + MARGIN_MS
        );
        ensure!(l.l.role(a) == Some(Role::Standby), "a standby after handing over");
        ensure!(talk(l)?.contains("hello"), "no answer through lb2's HAProxy");
        let r = lblab::client_report(&json, Duration::from_secs(20))?;
        eprintln!("connections through the handover: {r:?}");
        // No connection is reset, and none goes silent from the kill on:
        // the handover keeps every one. (One CI run once saw a connection
        // fall silent about 0.3 s before the kill, with nothing moving yet;
        // one that went silent before the fault is said, not blamed on it.)
        ensure!((r.reset, r.failed_connect) == (0, 0), "established connections through the handover: {r:?}");
        ensure!(
            r.hung_last_answer.iter().all(|t| *t < t0),
            "a connection went silent after the kill (at {:?}, kill at {t0}): {r:?}",
            r.hung_last_answer
        );
        if r.hung > 0 {
            eprintln!(
                "WARNING: {} connection(s) silent since before the kill: {:?} (kill at {t0})",
                r.hung, r.hung_last_answer
            );
        }
        let sa = l.l.status(a)?;
        ensure!(check(l, a).is_some_and(|c| c.state == pb::CheckState::Failing as i32), "a's check failing: {sa:?}");
        let sb = l.l.status(b)?;
        ensure!(sb.partner.as_ref().is_some_and(|p| p.unhealthy && p.checks_failing == 1), "b sees a unhealthy");
        let shown = duetctl_status(&l.l, a)?;
        ensure!(shown.contains("check haproxy (process, demote): FAILING"), "duetctl status:\n{shown}");

        // HAProxy back: after rise, the preferred unit takes the role back,
        // once, and keeps it.
        let t1 = epoch_now();
        ha = Some(haproxy(l, a, "lb1")?);
        l.l.wait_role(a, Role::Active, Duration::from_secs(5))?;
        std::thread::sleep(Duration::from_secs(3));
        ensure!(l.l.role(a) == Some(Role::Active) && l.l.role(b) == Some(Role::Standby), "the role stays on a");
        let back: Vec<_> =
            parse_addr_events(&ma.log()).into_iter().filter(|e| e.at >= t1 && e.addr.starts_with(SHARED)).collect();
        ensure!(back.len() == 1 && back[0].added, "a added the address once and kept it: {back:?}");
        ensure!(talk(l)?.contains("hello"), "no answer through lb1's HAProxy again");

        // Both HAProxies down: one active stays, and says why.
        hb.take().expect("running").kill()?;
        wait_for("a to see b unhealthy", Duration::from_secs(5), POLL, || {
            l.l.status(a).ok()?.partner.filter(|p| p.unhealthy).map(drop)
        })?;
        ha.take().expect("running").kill()?;
        wait_for("a's check failing", Duration::from_secs(5), POLL, || {
            check(l, a).filter(|c| c.state == pb::CheckState::Failing as i32).map(drop)
        })?;
        std::thread::sleep(Duration::from_secs(2));
        ensure!(l.l.role(a) == Some(Role::Active) && l.l.role(b) == Some(Role::Standby), "one active stays");
        let w = l.l.status(a)?.warnings.join("\n");
        ensure!(w.contains("unhealthy too") && w.contains("this unit keeps the role"), "warnings: {w}");
        Ok(())
    });
}
