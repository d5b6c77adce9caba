//! Issue 12 in namespaces: the witness (E14) with a real three-member etcd
//! cluster (TLS) and real units. Adverts dropped between the units in both
//! directions or in one, the active cut off from everything, etcd members
//! killed, a planned handover.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use duet_proto::common::v1::Role;
use duet_proto::election::v1 as epb;
use duet_testkit::{EtcdCluster, HostId, Proc, wait_for};
use duet_tests::*;

const T: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// The standby's down interval with `timeout_s = 3` (second unit).
const W: Duration = Duration::from_millis(3004);
/// A planned handover's address gap in this (debug, shared-machine) test:
/// generous, against a 1 s advert interval a timeout-driven move could not meet.
const HANDOVER_GAP_BOUND_MS: f64 = 100.0;

/// One unit's processes.
struct Unit {
    election: Proc,
    _takeover: Option<Proc>,
}

fn service(l: &mut PairLab, host: HostId, cfg: &UnitConfig, binary: &str, label: &str) -> anyhow::Result<Proc> {
    let path = cfg.write(l.lab.dir())?.to_string_lossy().into_owned();
    let exe = bin(binary).to_string_lossy().into_owned();
    Ok(l.lab.spawn(host, label, &[&exe, "--config", &path], &[("DUET_LOG", "info,duet=debug")])?)
}

/// Starts the pair, `a` first (it becomes active), then `b` (standby),
/// each with a witness on `etcd` when given and the pair's witness
/// settings `ha`, the takeover service too when `takeover`; `tag` keeps the
/// logs and state of repeated starts apart.
fn start_pair(
    l: &mut PairLab,
    etcd: Option<&EtcdCluster>,
    ha: &str,
    takeover: bool,
    tag: &str,
) -> anyhow::Result<(Unit, Unit)> {
    let mut units = Vec::new();
    for (host, name, mode, role) in [(l.a, "lb1", "first", Role::Active), (l.b, "lb2", "second", Role::Standby)] {
        let mut cfg = UnitConfig::new(name, mode, l.lab.dir());
        cfg.state_dir = l.lab.dir().join(format!("state-{name}-{tag}"));
        if let Some(e) = etcd {
            cfg.with_witness(e, ha);
        }
        let election = service(l, host, &cfg, "duet-election", &format!("election-{name}-{tag}"))?;
        let takeover = if takeover {
            Some(service(l, host, &cfg, "duet-takeover", &format!("takeover-{name}-{tag}"))?)
        } else {
            None
        };
        l.wait_role(host, role, T).with_context(|| format!("{name} ({tag})"))?;
        units.push(Unit { election, _takeover: takeover });
    }
    if etcd.is_some() {
        wait_for("lb1 to hold the witness", Duration::from_secs(5), POLL, || {
            witness(l, l.a).filter(|w| w.holder_is_self).map(drop)
        })?;
    }
    let b = units.pop().expect("two");
    let a = units.pop().expect("two");
    Ok((a, b))
}

fn witness(l: &PairLab, h: HostId) -> Option<epb::WitnessStatus> {
    l.status(h).ok().and_then(|s| s.witness)
}

/// Samples both roles every [`POLL`] for `d`; fails at once on two actives.
/// Returns how many samples had exactly one.
fn one_active_for(l: &PairLab, d: Duration, what: &str) -> anyhow::Result<usize> {
    let start = Instant::now();
    let mut one = 0;
    while start.elapsed() < d {
        let (a, b) = (l.role(l.a), l.role(l.b));
        ensure!(
            !(a == Some(Role::Active) && b == Some(Role::Active)),
            "{what}: two actives after {:?}",
            start.elapsed()
        );
        one += usize::from((a == Some(Role::Active)) != (b == Some(Role::Active)));
        std::thread::sleep(POLL);
    }
    Ok(one)
}

fn role_changes(p: &Proc) -> usize {
    p.log().matches("Switching to state").count()
}

#[test]
fn a_partition_leaves_two_actives_without_a_witness_and_one_with_it() {
    lab_test("witness_partition", false, |l| {
        let etcd = l.etcd()?;
        // Without: both become active while the adverts are dropped.
        let (mut a, mut b) = start_pair(l, None, "", false, "plain")?;
        let rule = l.lab.add_switch_rule("ip protocol 112 drop")?;
        wait_for("two actives without a witness", Duration::from_secs(8), POLL, || {
            (l.role(l.a) == Some(Role::Active) && l.role(l.b) == Some(Role::Active)).then_some(())
        })?;
        eprintln!("without a witness: two actives while the adverts are dropped");
        l.lab.remove_rule(rule)?;
        wait_for("CARP to settle on one", Duration::from_secs(5), POLL, || {
            (l.role(l.a) == Some(Role::Active) && l.role(l.b) == Some(Role::Standby)).then_some(())
        })?;
        a.election.kill()?;
        b.election.kill()?;

        // With: one active for the whole partition.
        let (a, b) = start_pair(l, Some(&etcd), "", false, "witness")?;
        let rule = l.lab.add_switch_rule("ip protocol 112 drop")?;
        let samples = one_active_for(l, Duration::from_secs(8), "partition with the witness")?;
        ensure!(l.role(l.a) == Some(Role::Active) && l.role(l.b) == Some(Role::Standby));
        let said = b.election.log().matches("holds the witness and beat").count();
        ensure!(said == 1, "the standby says once why it stays ({said} times):\n{}", b.election.log());
        let s = l.status(l.b)?;
        let w = s.witness.clone().context("b's witness status")?;
        ensure!(w.reachable && w.holder == "lb1" && !w.holder_is_self, "{w:?}");
        ensure!(s.role_reason.contains("holds the witness and beats"), "{}", s.role_reason);
        l.lab.remove_rule(rule)?;
        one_active_for(l, Duration::from_secs(3), "after the partition")?;
        ensure!(l.role(l.a) == Some(Role::Active) && l.role(l.b) == Some(Role::Standby));
        ensure!(role_changes(&a.election) == 1 && role_changes(&b.election) == 1, "no role change");
        eprintln!("with the witness: one active in all {samples} samples of the partition");
        Ok(())
    });
}

#[test]
fn only_the_actives_adverts_lost_leaves_one_active() {
    lab_test("witness_oneway", false, |l| {
        let etcd = l.etcd()?;
        let (a, b) = start_pair(l, Some(&etcd), "", false, "oneway")?;
        let rule = l.lab.add_switch_rule(&format!("ip saddr {UNIT1} ip protocol 112 drop"))?;
        one_active_for(l, Duration::from_secs(8), "one-way loss")?;
        ensure!(l.role(l.a) == Some(Role::Active), "the active keeps the role");
        let p = l.status(l.a)?.partner.context("partner")?;
        ensure!(!p.hears_adverts, "the standby says it does not hear the active: {p:?}");
        b.election.wait_log("holds the witness and beat", Duration::from_secs(1))?;
        l.lab.remove_rule(rule)?;
        wait_for("the standby to hear the active again", Duration::from_secs(5), POLL, || {
            l.status(l.a).ok()?.partner.filter(|p| p.hears_adverts).map(drop)
        })?;
        ensure!(role_changes(&a.election) == 1 && role_changes(&b.election) == 1, "no role change");
        Ok(())
    });
}

#[test]
fn an_isolated_active_drops_its_addresses_before_the_standby_takes_over() {
    lab_test("witness_isolated", false, |l| {
        let etcd = l.etcd()?;
        let (a, _b) = start_pair(l, Some(&etcd), "", true, "isolated")?;
        wait_for("a to hold the shared address", Duration::from_secs(5), POLL, || {
            l.lab.addr_present(l.a, "eth0", SHARED).ok().filter(|p| *p).map(drop)
        })?;
        let (ma, mb) = (monitor_addresses(&mut l.lab, l.a, "addr-a")?, monitor_addresses(&mut l.lab, l.b, "addr-b")?);
        // Everything to and from a, etcd included; its link stays up.
        let port = l.lab.switch_port(l.a, "eth0")?.to_owned();
        let cut_at = epoch_now();
        let rules = [
            l.lab.add_switch_rule(&format!("iifname \"{port}\" drop"))?,
            l.lab.add_switch_rule(&format!("oifname \"{port}\" drop"))?,
        ];
        let took = l.wait_role(l.b, Role::Active, Duration::from_secs(8))?;
        std::thread::sleep(Duration::from_millis(300));
        let dropped = shared_event(&ma, false, cut_at - 1.0).context("a never dropped the shared address")?;
        let added = shared_event(&mb, true, cut_at - 1.0).context("b never added the shared address")?;
        eprintln!(
            "isolated at 0: a dropped the address at {:.0} ms, b added it at {:.0} ms (b active after {took:?})",
            (dropped - cut_at) * 1e3,
            (added - cut_at) * 1e3
        );
        ensure!(dropped < added, "the old active dropped the address first");
        ensure!(added - dropped >= 0.5, "by the margin: {:.0} ms", (added - dropped) * 1e3);
        // b took over W after the last beat it saw (at most an advert
        // interval before the cut), plus etcd's round trips.
        let after = Duration::from_secs_f64(added - cut_at);
        ensure!(after >= W - Duration::from_secs(1) && after <= W + Duration::from_millis(700), "after {after:?}");
        a.election.wait_log("No witness beat acknowledged for", Duration::from_secs(1))?;
        let w = witness(l, l.b).context("b's witness")?;
        ensure!(w.holder_is_self, "b holds the witness: {w:?}");
        for r in rules {
            l.lab.remove_rule(r)?;
        }
        wait_for("one active after the cut heals", Duration::from_secs(10), POLL, || {
            ((l.role(l.a) == Some(Role::Active)) != (l.role(l.b) == Some(Role::Active))).then_some(())
        })?;
        one_active_for(l, Duration::from_secs(3), "after the cut healed")?;
        Ok(())
    });
}

#[test]
fn etcd_members_down_one_changes_nothing_two_and_prefer_falls_back_loudly() {
    lab_test("witness_members_prefer", false, |l| {
        let mut etcd = l.etcd()?;
        let (mut a, b) = start_pair(l, Some(&etcd), "", false, "prefer")?;
        etcd.kill(0)?;
        std::thread::sleep(Duration::from_secs(4));
        ensure!(role_changes(&a.election) == 1 && role_changes(&b.election) == 1, "one member down: nothing changes");
        for h in [l.a, l.b] {
            let w = witness(l, h).context("witness")?;
            ensure!(w.reachable && !w.fallback && w.holder == "lb1", "{w:?}");
        }
        etcd.kill(1)?;
        wait_for("b to fall back", Duration::from_secs(8), POLL, || witness(l, l.b).filter(|w| w.fallback).map(drop))?;
        ensure!(
            role_changes(&a.election) == 1 && role_changes(&b.election) == 1,
            "the units hear each other: roles stay"
        );
        let s = l.status(l.b)?;
        ensure!(s.warnings.iter().any(|w| w.contains("policy prefer") && w.contains("plain CARP")), "{:?}", s.warnings);
        let mine = if s.squares[1].unit == 2 { &s.squares[1] } else { &s.squares[0] };
        ensure!(mine.detail.contains("witness unreachable: plain CARP"), "{:?}", s.squares);
        let text = duetctl_status(l, l.b)?;
        ensure!(text.contains("witness: policy prefer, etcd NOT reachable") && text.contains("FALLBACK"), "{text}");
        // The active dies: plain CARP replaces it.
        a.election.kill()?;
        let took = l.wait_role(l.b, Role::Active, Duration::from_secs(6))?;
        ensure!(took <= W + Duration::from_millis(500), "{took:?}");
        b.election.wait_log("[WARNING] Witness (etcd) unreachable for", Duration::from_secs(1))?;
        Ok(())
    });
}

#[test]
fn etcd_members_down_two_and_required_holds() {
    lab_test("witness_members_required", false, |l| {
        let mut etcd = l.etcd()?;
        let (mut a, b) = start_pair(l, Some(&etcd), "witness_policy = \"required\"", false, "required")?;
        etcd.kill(0)?;
        etcd.kill(1)?;
        wait_for("b to find etcd out of reach", Duration::from_secs(8), POLL, || {
            witness(l, l.b).filter(|w| !w.reachable).map(drop)
        })?;
        ensure!(
            role_changes(&a.election) == 1 && role_changes(&b.election) == 1,
            "the units hear each other: roles stay"
        );
        let s = l.status(l.b)?;
        ensure!(s.warnings.iter().any(|w| w.contains("policy required")), "{:?}", s.warnings);
        // The active dies: without the witness the standby holds.
        a.election.kill()?;
        std::thread::sleep(W + Duration::from_secs(3));
        ensure!(l.role(l.b) == Some(Role::Standby), "required: no takeover without the witness");
        b.election.wait_log("policy required, not taking over without it", Duration::from_secs(1))?;
        // A member back: the quorum is, a's lease runs out, b takes the key.
        etcd.restart(&mut l.lab, 1)?;
        let took = l.wait_role(l.b, Role::Active, Duration::from_secs(15))?;
        eprintln!("quorum back: b active after {took:?}");
        ensure!(witness(l, l.b).is_some_and(|w| w.holder_is_self), "b holds the witness");
        Ok(())
    });
}

#[test]
fn a_planned_handover_with_the_witness_moves_the_address_at_once() {
    lab_test("witness_handover", false, |l| {
        let etcd = l.etcd()?;
        let (_a, _b) = start_pair(l, Some(&etcd), "", true, "handover")?;
        wait_for("a to hold the shared address", Duration::from_secs(5), POLL, || {
            l.lab.addr_present(l.a, "eth0", SHARED).ok().filter(|p| *p).map(drop)
        })?;
        let (ma, mb) = (monitor_addresses(&mut l.lab, l.a, "addr-a")?, monitor_addresses(&mut l.lab, l.b, "addr-b")?);
        let before = epoch_now();
        let r = grpc(&l.lab.ns(l.a), |mut c| async move {
            Ok(c.handover(epb::HandoverRequest { timeout_ms: 3000 }).await?.into_inner())
        })?;
        ensure!(r.confirmed, "{r:?}");
        std::thread::sleep(Duration::from_millis(300));
        let dropped = shared_event(&ma, false, before).context("a dropped the address")?;
        let added = shared_event(&mb, true, before).context("b added the address")?;
        let gap_ms = (added - dropped) * 1e3;
        eprintln!("handover with the witness: confirmed in {} ms, address gap {gap_ms:.2} ms", r.took_ms);
        // The figure (a few ms, goal 10 ms) is `duet-bench failover`'s, from a
        // release build; this debug build on a busy CI machine only has to
        // show that the address moves at once, not after a timeout.
        ensure!(
            (0.0..=HANDOVER_GAP_BOUND_MS).contains(&gap_ms),
            "gap {gap_ms:.2} ms (bound {HANDOVER_GAP_BOUND_MS} ms)"
        );
        wait_for("b to hold the witness", Duration::from_secs(2), POLL, || {
            witness(l, l.b).filter(|w| w.holder_is_self).map(drop)
        })?;
        ensure!(l.role(l.a) == Some(Role::Standby));
        Ok(())
    });
}
