//! E14 scenarios: a pair with a witness over the in-memory network and
//! etcd of `common` (units that cannot hear each other, units that cannot
//! reach etcd), with virtual time.

mod common;

use std::time::Duration;

use common::*;
use duet_carp::params::{HaMode, Preferred, Timing};
use duet_carp::witness::WitnessRequest;
use duet_carp::{Command, Role, Time, WitnessPolicy};

const TTL_S: u64 = 3;

fn pair_with(policy: WitnessPolicy, timing: Timing, seed: u64) -> Net {
    let ttl = if matches!(timing, Timing::Fast { .. }) { 2 } else { TTL_S };
    Net::new(
        vec![
            with_witness(pair_params(HaMode::First, Preferred::None, timing), policy, ttl),
            with_witness(pair_params(HaMode::Second, Preferred::None, timing), policy, ttl),
        ],
        seed,
    )
}

/// A settled pair, unit 0 active and holding the witness.
fn settled(policy: WitnessPolicy) -> Net {
    let mut n = pair_with(policy, standard(3), 7);
    n.run_for(Duration::from_secs(10));
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Active), Some(Role::Standby)));
    assert_eq!(n.store().holder().as_deref(), Some("lb1"));
    n
}

/// Runs for `d`, checking every `step` that at most `max` units are active;
/// returns the most seen.
fn run_checking(n: &mut Net, d: Duration, step: Duration, max: usize) -> usize {
    let until = n.now + d;
    let mut most = 0;
    while n.now < until {
        n.run_for(step);
        most = most.max(n.actives());
        assert!(n.actives() <= max, "{} actives at {:?}: {:?}", n.actives(), n.now, n.role_log);
    }
    most
}

/// The fencing order: whenever a unit took the key from its partner, the
/// partner was not active.
fn assert_fenced(n: &Net) {
    for (t, j, prev) in &n.store().takes {
        let Some(prev) = prev else { continue };
        let k = 1 - j;
        if *prev == unit_name(k) {
            assert_ne!(n.role_at(k, *t), Role::Active, "unit {j} took the key from an active unit {k} at {t:?}");
        }
    }
}

#[test]
fn a_partition_in_which_the_active_reaches_etcd_leaves_one_active() {
    // Without a witness: two actives (as `active_active_resolves_...` shows).
    let mut plain = Net::new(
        vec![
            pair_params(HaMode::First, Preferred::None, standard(3)),
            pair_params(HaMode::Second, Preferred::None, standard(3)),
        ],
        7,
    );
    plain.run_for(Duration::from_secs(10));
    plain.cut[0] = true;
    plain.run_for(Duration::from_secs(10));
    assert_eq!(plain.actives(), 2, "plain CARP: both active");

    let mut n = settled(WitnessPolicy::Prefer);
    n.cut[0] = true;
    run_checking(&mut n, Duration::from_secs(30), Duration::from_millis(10), 1);
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Active), Some(Role::Standby)));
    let said: Vec<String> = n.notices(1).into_iter().filter(|l| l.contains("holds the witness and beat")).collect();
    assert_eq!(said.len(), 1, "said once: {said:?}");
    assert!(n.status(1).local_square.1.contains("holds the witness and beats"), "{}", n.status(1).local_square.1);
    n.cut[0] = false;
    run_checking(&mut n, Duration::from_secs(10), Duration::from_millis(10), 1);
    assert_eq!(n.role(0), Some(Role::Active));
    assert_fenced(&n);
}

#[test]
fn only_the_actives_adverts_lost_leaves_one_active() {
    let mut n = settled(WitnessPolicy::Required);
    n.mute_adverts[0] = true;
    run_checking(&mut n, Duration::from_secs(30), Duration::from_millis(10), 1);
    assert_eq!(n.role(0), Some(Role::Active));
    let s = n.status(0);
    assert!(!s.partner_hears_adverts, "the standby says it does not hear the active");
    assert!(n.status(1).partner_square.0 != duet_carp::Square::Unreachable || n.role(1) == Some(Role::Standby));
    n.mute_adverts[0] = false;
    n.run_for(Duration::from_secs(3));
    assert!(n.status(0).partner_hears_adverts);
}

#[test]
fn an_isolated_active_yields_before_the_standby_takes_over_after_w() {
    for policy in [WitnessPolicy::Prefer, WitnessPolicy::Required] {
        let mut n = settled(policy);
        let cut_at = n.now;
        n.cut[0] = true;
        n.set_reach(0, false);
        let took = n
            .run_until_cond(Duration::from_secs(10), Duration::from_millis(1), |n| n.role(1) == Some(Role::Active))
            .expect("the standby takes over");
        let down = n.became(0, Role::Standby, cut_at).expect("the old active stepped down");
        let up = n.became(1, Role::Active, cut_at).expect("up");
        let w = Duration::from_micros(3_003_906);
        assert!(down < up, "{policy:?}: the old active yields first ({down:?} vs {up:?})");
        assert!(up.since(down) >= Duration::from_millis(750), "by the margin M at least: {:?}", up.since(down));
        // The standby saw the last beat at most one advert interval before the cut.
        assert!(took >= w - Duration::from_secs(1) && took <= w + Duration::from_millis(20), "{took:?}");
        assert!(n.notices(0).iter().any(|l| l.starts_with("No witness beat acknowledged for")), "{:?}", n.notices(0));
        assert_eq!(n.store().holder().as_deref(), Some("lb2"));
        // Later: prefer falls back to plain CARP on the isolated unit (it
        // cannot know better); required keeps it out.
        n.run_for(Duration::from_secs(10));
        match policy {
            WitnessPolicy::Prefer => {
                assert_eq!(n.role(0), Some(Role::Active), "prefer: plain CARP on the isolated unit");
                assert!(n.status(0).warnings.iter().any(|w| w.contains("policy prefer")), "{:?}", n.status(0).warnings);
            }
            WitnessPolicy::Required => assert_eq!(n.role(0), Some(Role::Standby)),
        }
        // Reconnected: one active again.
        n.cut[0] = false;
        n.set_reach(0, true);
        n.run_for(Duration::from_secs(8));
        assert_eq!(n.actives(), 1, "{policy:?}: {:?}", n.role_log);
        assert_fenced(&n);
    }
}

#[test]
fn etcd_out_of_reach_prefer_falls_back_and_required_holds() {
    for policy in [WitnessPolicy::Prefer, WitnessPolicy::Required] {
        let mut n = settled(policy);
        let changes = n.role_log.len();
        n.set_reach(0, false);
        n.set_reach(1, false);
        n.run_for(Duration::from_secs(20));
        assert_eq!(n.role_log.len(), changes, "{policy:?}: the units hear each other, nothing changes");
        let v = n.status(1).witness.expect("a witness");
        assert!(!v.reachable);
        assert_eq!(v.fallback, policy == WitnessPolicy::Prefer);
        let warned = n.status(1).warnings.join("\n");
        assert!(warned.contains(&format!("policy {}", policy.as_str())), "{warned}");
        // The active dies.
        n.kill(0);
        let took =
            n.run_until_cond(Duration::from_secs(20), Duration::from_millis(10), |n| n.role(1) == Some(Role::Active));
        match policy {
            WitnessPolicy::Prefer => {
                let took = took.expect("prefer: plain CARP");
                assert!(took <= Duration::from_millis(3100), "{took:?}");
                assert!(n.notices(1).iter().any(|l| l.starts_with("[WARNING] Witness (etcd) unreachable")));
                assert!(n.status(1).local_square.1.contains("witness unreachable"), "{}", n.status(1).local_square.1);
            }
            WitnessPolicy::Required => {
                assert_eq!(took, None, "required: no takeover without the witness");
                assert!(n.notices(1).iter().any(|l| l.contains("policy required, not taking over")));
                // etcd back: the key (lb1's lease expired) is free.
                n.set_reach(1, true);
                n.run_for(Duration::from_secs(2));
                assert_eq!(n.role(1), Some(Role::Active));
            }
        }
    }
}

#[test]
fn a_planned_handover_releases_the_key_before_it_resigns() {
    let mut n = settled(WitnessPolicy::Required);
    let now = n.now;
    n.e(0).handle_command(now, Command::Handover { timeout: Duration::from_secs(3) }).unwrap();
    n.drain(0);
    let released = n.units[0]
        .witness_requests
        .iter()
        .find(|(t, r)| *t >= now && *r == WitnessRequest::Release)
        .map(|(t, _)| *t)
        .expect("released");
    n.run_for(Duration::from_millis(10));
    let resigned = n.units[0].resigns.iter().copied().find(|t| *t >= now).expect("resigned");
    assert!(released <= resigned, "release first");
    let freed = n.store().takes.last().expect("a take").0;
    assert!(resigned >= now + Duration::from_millis(2), "the resign waited for etcd's answer (2 ms)");
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Standby), Some(Role::Active)));
    assert!(resigned.since(now) <= Duration::from_millis(5), "no lease wait: {:?}", resigned.since(now));
    assert_eq!(n.store().holder().as_deref(), Some("lb2"), "the new active acquired the free key");
    assert!(freed.since(now) <= Duration::from_millis(10));
    n.run_for(Duration::from_secs(20));
    assert_eq!(n.actives(), 1);
    assert_fenced(&n);
}

#[test]
fn a_dual_active_heals_once_the_witness_is_back() {
    let mut n = settled(WitnessPolicy::Prefer);
    n.set_reach(0, false);
    n.set_reach(1, false);
    n.cut[0] = true;
    n.run_for(Duration::from_secs(15));
    assert_eq!(n.actives(), 2, "prefer, etcd out of reach and a partition: plain CARP");
    let back = n.now;
    n.set_reach(0, true);
    n.set_reach(1, true);
    let healed = n
        .run_until_cond(Duration::from_secs(5), Duration::from_millis(1), |n| n.actives() == 1)
        .expect("one active once the witness is back");
    assert!(healed <= Duration::from_millis(100), "{healed:?}");
    let loser = if n.role(0) == Some(Role::Active) { 1 } else { 0 };
    assert!(
        n.notices(loser).iter().any(|l| l.contains("holds the witness and beats while this unit is active too")),
        "{:?}",
        n.notices(loser)
    );
    run_checking(&mut n, Duration::from_secs(20), Duration::from_millis(10), 1);
    n.cut[0] = false;
    run_checking(&mut n, Duration::from_secs(10), Duration::from_millis(10), 1);
    assert!(n.became(loser, Role::Active, back).is_none(), "no flapping");
}

#[test]
fn a_crash_takes_no_longer_with_the_witness() {
    // The active dies at several phases of its advert interval; the
    // standby takes over within its timeout after the last advert, plus
    // etcd's round trips (the beat goes with the advert).
    for phase_ms in [0, 250, 500, 900] {
        let mut n = settled(WitnessPolicy::Required);
        // Align to the next advert, then the phase.
        let sent = n.units[0].sent.len();
        n.run_until_cond(Duration::from_secs(2), Duration::from_millis(1), |n| n.units[0].sent.len() > sent);
        let advert = n.now;
        n.run_until(advert + Duration::from_millis(phase_ms));
        n.kill(0);
        n.run_until_cond(Duration::from_secs(6), Duration::from_millis(1), |n| n.role(1) == Some(Role::Active))
            .expect("takes over");
        let from_advert = n.now.since(advert);
        let w = Duration::from_micros(3_003_906);
        assert!(from_advert >= w && from_advert <= w + Duration::from_millis(10), "{phase_ms}: {from_advert:?}");
        // The partner's beats had stopped, or its lease ran out first.
        assert!(n.notices(1).iter().any(|l| l.starts_with("Witness acquired (")), "{:?}", n.notices(1));
    }
}

#[test]
fn the_fast_profile_keeps_its_speed() {
    let mut n = pair_with(WitnessPolicy::Prefer, fast(), 21);
    n.run_for(Duration::from_secs(3));
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Active), Some(Role::Standby)));
    n.kill(0);
    let took = n
        .run_until_cond(Duration::from_secs(1), Duration::from_millis(1), |n| n.role(1) == Some(Role::Active))
        .unwrap();
    assert!(took <= Duration::from_millis(150), "{took:?}");
    // And an isolated active yields before the standby takes over, at the
    // advert's pace.
    let mut n = pair_with(WitnessPolicy::Prefer, fast(), 22);
    n.run_for(Duration::from_secs(3));
    let cut = n.now;
    n.cut[0] = true;
    n.set_reach(0, false);
    n.run_for(Duration::from_millis(400));
    let (down, up) = (n.became(0, Role::Standby, cut).unwrap(), n.became(1, Role::Active, cut).unwrap());
    assert!(down < up && up.since(cut) <= Duration::from_millis(150), "{:?} {:?}", down.since(cut), up.since(cut));
}

#[test]
fn the_units_start_into_one_active_with_the_witness() {
    let mut n = pair_with(WitnessPolicy::Required, standard(3), 3);
    run_checking(&mut n, Duration::from_secs(10), Duration::from_millis(10), 1);
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Active), Some(Role::Standby)));
    // Both start while they cannot hear each other: one active still.
    let mut n = pair_with(WitnessPolicy::Required, standard(3), 4);
    n.cut[1] = true;
    run_checking(&mut n, Duration::from_secs(15), Duration::from_millis(10), 1);
    assert_eq!(n.actives(), 1);
    // A restarted active finds its own key and takes it back.
    let mut n = settled(WitnessPolicy::Required);
    n.kill(1);
    n.kill(0);
    n.run_for(Duration::from_millis(500));
    n.start(0);
    n.run_for(Duration::from_secs(5));
    assert_eq!(n.role(0), Some(Role::Active));
    assert_eq!(n.store().holder().as_deref(), Some("lb1"));
}

/// Random partitions, one-way losses and etcd outages, policy required:
/// the key never passes to a unit while the other is active, and no two
/// units are active for longer than CARP's own active-active resolution.
#[test]
fn random_faults_never_break_the_fencing_order() {
    for seed in 1..=24 {
        let mut n = pair_with(WitnessPolicy::Required, standard(3), seed);
        n.run_for(Duration::from_secs(10));
        let mut rng = Rng::new(seed * 7919);
        for _ in 0..30 {
            match rng.next() % 6 {
                0 => n.cut[0] = !n.cut[0],
                1 => n.cut[1] = !n.cut[1],
                2 => n.mute_adverts[0] = !n.mute_adverts[0],
                3 => {
                    let r = n.store().reach[0];
                    n.set_reach(0, !r);
                }
                4 => {
                    let r = n.store().reach[1];
                    n.set_reach(1, !r);
                }
                _ => {}
            }
            let d = Duration::from_millis(200 + rng.next() % 4000);
            n.run_for(d);
        }
        assert_fenced(&n);
        // Every dual-active stretch is short: both must hear each other
        // for CARP to settle it, or the witness does.
        let mut both_since: Option<Time> = None;
        let mut roles = [Role::Init, Role::Init];
        for (t, u, r) in &n.role_log {
            roles[*u] = *r;
            let both = roles.iter().all(|r| *r == Role::Active);
            match (both, both_since) {
                (true, None) => both_since = Some(*t),
                (false, Some(s)) => {
                    let lasted = t.since(s);
                    assert!(
                        lasted <= Duration::from_millis(1100),
                        "seed {seed}: both active for {lasted:?} from {s:?}"
                    );
                    both_since = None;
                }
                _ => {}
            }
        }
    }
}
