//! Property tests over the in-memory network: whatever the loss, delay,
//! partitions, crashes and handovers, once the network heals there is
//! exactly one active, quickly; and no stretch without an active is longer
//! than the down interval.

mod common;

use std::time::Duration;

use common::*;
use duet_carp::params::{HaMode, Preferred, Timing};
use duet_carp::{Command, Role, Time};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Quiet(u64),
    Loss(u64, u8),
    Partition(u64),
    Crash(usize, u64),
    Handover(u64),
    Jitter(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (100u64..8000).prop_map(Step::Quiet),
        ((100u64..8000), (1u8..40)).prop_map(|(d, p)| Step::Loss(d, p)),
        (100u64..8000).prop_map(Step::Partition),
        ((0usize..2), (0u64..4000)).prop_map(|(u, d)| Step::Crash(u, d)),
        (100u64..4000).prop_map(Step::Handover),
        (100u64..4000).prop_map(Step::Jitter),
    ]
}

struct Run {
    net: Net,
    /// (time, actives, start times of the live units)
    samples: Vec<(Time, usize, Vec<Time>)>,
    sample_every: Duration,
}

impl Run {
    fn advance(&mut self, d: Duration) {
        let end = self.net.now + d;
        while self.net.now < end {
            let step = self.sample_every.min(end.since(self.net.now));
            self.net.run_for(step);
            let alive = (0..2).filter(|&i| self.net.alive(i)).map(|i| self.net.units[i].started_at).collect();
            self.samples.push((self.net.now, self.net.actives(), alive));
        }
    }
}

fn scale(ms: u64, fast: bool) -> Duration {
    // The fast profile runs the same scenarios 40 times faster.
    if fast { Duration::from_micros(ms * 25) } else { Duration::from_millis(ms) }
}

fn check(timing: Timing, preferred: Preferred, steps: Vec<Step>, seed: u64) -> Result<(), TestCaseError> {
    let fast = matches!(timing, Timing::Fast { .. });
    let p1 = pair_params(HaMode::First, preferred, timing);
    let p2 = pair_params(HaMode::Second, preferred, timing);
    let interval = p2.interval().max(p1.interval());
    let down = p2.down_interval(Some(interval)).max(p1.down_interval(Some(interval)));
    // A (re)started unit first waits its start-up wait, a little longer for
    // the unit that does not win ties.
    let startup = p1.startup_wait().max(p2.startup_wait());
    let sample_every = if fast { Duration::from_millis(1) } else { Duration::from_millis(10) };
    let mut run = Run { net: Net::new(vec![p1, p2], seed), samples: Vec::new(), sample_every };
    let mut restarts: Vec<Time> = vec![Time::ZERO];
    run.advance(scale(5000, fast));
    for s in steps {
        match s {
            Step::Quiet(d) => run.advance(scale(d, fast)),
            Step::Loss(d, p) => {
                run.net.loss_percent = f64::from(p);
                run.advance(scale(d, fast));
                run.net.loss_percent = 0.0;
            }
            Step::Partition(d) => {
                run.net.cut[0] = true;
                run.advance(scale(d, fast));
                run.net.cut[0] = false;
            }
            Step::Crash(u, d) => {
                if run.net.alive(u) {
                    run.net.kill(u);
                    run.advance(scale(d, fast));
                    run.net.start(u);
                    restarts.push(run.net.now);
                }
            }
            Step::Handover(d) => {
                let now = run.net.now;
                if let Some(i) = (0..2).find(|&i| run.net.role(i) == Some(Role::Active)) {
                    let _ = run.net.e(i).handle_command(now, Command::Handover { timeout: scale(2000, fast) });
                    run.net.drain(i);
                }
                run.advance(scale(d, fast));
            }
            Step::Jitter(d) => {
                run.net.jitter = interval / 4;
                run.advance(scale(d, fast));
                run.net.jitter = Duration::from_micros(100);
            }
        }
    }
    // Heal: both alive, no loss, no partition.
    for u in 0..2 {
        if !run.net.alive(u) {
            run.net.start(u);
            restarts.push(run.net.now);
        }
    }
    let healed = run.net.now;
    let both_settled = restarts.iter().all(|r| healed.since(*r) > startup.max(down) * 2);
    run.advance(startup.max(down) * 2 + interval * 3);

    // 1. Once healed (and past any initial wait), exactly one active, for good.
    let settle = if both_settled { interval + Duration::from_millis(5) } else { startup.max(down) + interval * 2 };
    for &(t, actives, _) in &run.samples {
        if t >= healed + settle {
            prop_assert_eq!(
                actives,
                1,
                "at {:?} (healed at {:?}): {} actives; roles {:?}",
                t,
                healed,
                actives,
                run.net.role_log
            );
        }
    }
    // 2. No unit that lives stays without an active partner for longer
    // than the down interval: counted from when the stretch without an
    // active began or from the unit's start, whichever is later (a
    // restarted unit first waits its initial wait, of the same length).
    let mut zero_since: Option<Time> = None;
    for (t, actives, alive) in &run.samples {
        if *actives == 0 {
            let s = *zero_since.get_or_insert(*t);
            for started in alive {
                // The standby counts from the last advert to *arrive*; a
                // jittered one can arrive up to a quarter interval late.
                let max_delay = interval / 4 + Duration::from_millis(1);
                // A unit takes the role within the down interval of the
                // stretch, or within its start-up wait of its own start.
                let deadline = (s + down).max(*started + startup) + max_delay + sample_every * 2;
                prop_assert!(
                    *t <= deadline,
                    "no active from {:?} to {:?} with a unit up since {:?} (down interval {:?}, start-up wait {:?}); roles {:?}",
                    s,
                    t,
                    started,
                    down,
                    startup,
                    run.net.role_log
                );
            }
        } else {
            zero_since = None;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64), ..ProptestConfig::default() })]

    #[test]
    fn standard_profile_heals_to_one_active(steps in proptest::collection::vec(step(), 1..8), seed in any::<u64>(), pref in 0u8..3) {
        let preferred = [Preferred::None, Preferred::First, Preferred::Second][pref as usize];
        check(standard(3), preferred, steps, seed)?;
    }

    #[test]
    fn fast_profile_heals_to_one_active(steps in proptest::collection::vec(step(), 1..8), seed in any::<u64>()) {
        check(fast(), Preferred::None, steps, seed)?;
    }
}

/// The fast profile's false-failover budget: 10 simulated minutes at 1 %
/// random loss in both directions without a role change.
#[test]
fn fast_profile_no_false_failover_at_one_percent_loss() {
    let mut n = pair_net(pair_params, Preferred::None, fast(), 99);
    n.run_for(Duration::from_secs(2));
    let before = n.role_log.len();
    n.loss_percent = 1.0;
    n.run_for(Duration::from_secs(600));
    assert_eq!(n.role_log.len(), before, "role changes at 1 % loss: {:?}", &n.role_log[before..]);
}
