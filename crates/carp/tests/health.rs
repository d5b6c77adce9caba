//! E16: the role follows the unit's tracked checks, over the in-memory
//! network (the probes are the adapter's: here results are handed in).

mod common;

use std::time::Duration;

use common::*;
use duet_carp::params::Preferred;
use duet_carp::{Command, Effect, Role, TrackParams};

fn check(effect: Effect) -> TrackParams {
    TrackParams { name: "haproxy".into(), fall: 2, rise: 2, effect }
}

/// A settled pair (unit 0 active) whose units both track `haproxy`, both
/// passing.
fn pair(preferred: Preferred, effect: Effect) -> Net {
    let mut n = pair_net(pair_params, preferred, standard(3), 11);
    for i in 0..2 {
        n.units[i].tracks = vec![check(effect)];
        n.start(i);
    }
    report(&mut n, 0, true);
    report(&mut n, 1, true);
    n.run_for(Duration::from_secs(10));
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Active), Some(Role::Standby)));
    n
}

fn report(n: &mut Net, i: usize, ok: bool) {
    let output = if ok { "" } else { "haproxy: no such process" };
    n.command(i, Command::CheckResult { name: "haproxy".into(), ok, output: output.into(), took: Duration::ZERO })
        .unwrap();
    n.drain(i);
}

#[test]
fn a_failing_check_on_the_active_hands_the_role_over_after_fall_and_back_after_rise() {
    let mut n = pair(Preferred::First, Effect::Demote);
    report(&mut n, 0, false);
    n.run_for(Duration::from_millis(100));
    assert_eq!(n.role(0), Some(Role::Active), "one failure of fall = 2 moves nothing");
    let t = n.now;
    report(&mut n, 0, false);
    n.run_for(Duration::from_millis(10));
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Standby), Some(Role::Active)));
    assert!(n.became(1, Role::Active, t).is_some_and(|at| at.since(t) < Duration::from_millis(5)));
    assert!(n.notices(0).iter().any(|l| l.contains("check haproxy failing: handing the role to the partner")));
    assert!(n.status(1).reported.is_some_and(|r| r.status.failing == 1), "the partner sees the failing check");
    // Unhealthy, the preferred unit does not preempt.
    n.run_for(Duration::from_secs(5));
    assert_eq!(n.role(1), Some(Role::Active));
    // Healthy again after rise = 2: the preferred unit takes the role back.
    report(&mut n, 0, true);
    n.run_for(Duration::from_secs(2));
    assert_eq!(n.role(1), Some(Role::Active), "one success of rise = 2 moves nothing");
    report(&mut n, 0, true);
    n.run_for(Duration::from_millis(1100));
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Active), Some(Role::Standby)));
    n.run_for(Duration::from_secs(10));
    assert_eq!(n.actives(), 1);
    let changes = n.role_log.iter().filter(|(_, u, r)| *u == 0 && *r == Role::Active).count();
    assert_eq!(changes, 2, "active at start and after the fail-back, no flap: {:?}", n.role_log);
}

#[test]
fn both_unhealthy_the_active_keeps_the_role_and_says_so() {
    let mut n = pair(Preferred::None, Effect::Demote);
    report(&mut n, 1, false);
    report(&mut n, 1, false);
    n.run_for(Duration::from_secs(2));
    report(&mut n, 0, false);
    report(&mut n, 0, false);
    n.run_for(Duration::from_secs(20));
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Active), Some(Role::Standby)));
    let w = n.status(0).warnings.join("\n");
    assert!(w.contains("check haproxy failing, but") && w.contains("unhealthy too"), "{w}");
    assert!(w.contains("this unit keeps the role"), "{w}");
    // The standby recovers: the active hands over to it then.
    report(&mut n, 1, true);
    report(&mut n, 1, true);
    n.run_for(Duration::from_secs(2));
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Standby), Some(Role::Active)));
    assert!(n.status(1).warnings.iter().all(|w| !w.contains("keeps the role")));
}

#[test]
fn an_unhealthy_standby_still_replaces_a_dead_active() {
    let mut n = pair(Preferred::None, Effect::Demote);
    report(&mut n, 1, false);
    report(&mut n, 1, false);
    n.run_for(Duration::from_secs(2));
    n.kill(0);
    n.run_for(Duration::from_secs(5));
    assert_eq!(n.role(1), Some(Role::Active), "never zero actives because of checks");
    assert!(n.status(1).role_reason.contains("although check haproxy fails"), "{}", n.status(1).role_reason);
}

#[test]
fn an_unhealthy_unit_is_not_handed_the_role() {
    let mut n = pair(Preferred::None, Effect::Demote);
    report(&mut n, 1, false);
    report(&mut n, 1, false);
    n.run_for(Duration::from_secs(2));
    let e = n.command(0, Command::Handover { timeout: Duration::from_secs(3) }).unwrap_err();
    assert!(e.to_string().contains("unhealthy too"), "{e}");
}

#[test]
fn weights_move_the_role_to_the_less_penalised_unit_only() {
    let mut n = pair(Preferred::None, Effect::Weight(50));
    // Both failing, same penalty: nothing moves.
    report(&mut n, 1, false);
    report(&mut n, 1, false);
    n.run_for(Duration::from_millis(100));
    report(&mut n, 0, false);
    report(&mut n, 0, false);
    n.run_for(Duration::from_secs(5));
    assert_eq!(n.role(0), Some(Role::Active));
    assert_eq!(n.status(0).penalty, 50);
    // The standby recovers: its penalty is lower, the active hands over.
    report(&mut n, 1, true);
    report(&mut n, 1, true);
    n.run_for(Duration::from_secs(2));
    assert_eq!((n.role(0), n.role(1)), (Some(Role::Standby), Some(Role::Active)));
}

#[test]
fn a_check_flapping_every_interval_never_moves_the_role() {
    let mut n = pair(Preferred::First, Effect::Demote);
    for k in 0..100 {
        report(&mut n, 0, k % 2 == 0);
        n.run_for(Duration::from_secs(1));
    }
    assert_eq!(n.role(0), Some(Role::Active));
    assert_eq!(n.role_log.iter().filter(|(_, u, _)| *u == 0).count(), 1, "active once: {:?}", n.role_log);
}
