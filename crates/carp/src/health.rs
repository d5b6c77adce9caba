//! Tracked checks (E16): the health of what the pair exists for (the load
//! balancer, its upstream link, ...), as the unit's own checks report it.
//!
//! The election service runs the probes (a process, a command, a TCP or
//! HTTP probe, an interface, a file) and hands each result to the core
//! ([`Command::CheckResult`](crate::Command::CheckResult)); this module
//! turns results into states with keepalived's hysteresis (`fall`
//! consecutive failures make a healthy check failing, `rise` consecutive
//! successes make a failing one healthy; the first result decides at once)
//! and the states into what the election acts on:
//!
//! - a failing check with [`Effect::Demote`] makes the unit not ready: it
//!   hands the role to a ready partner if it is active, and never takes it
//!   from a healthy partner (a silent partner is still replaced: never zero
//!   actives because of checks);
//! - a failing check with [`Effect::Weight`] adds its weight to the unit's
//!   penalty: the active hands over to a ready partner whose penalty is
//!   lower, and a preferred unit preempts only a partner at least as
//!   penalised.
//!
//! A check that has not reported yet counts as failing for `Demote` (the
//! unit has not seen its load balancer work) and as nothing for `Weight`.

use std::time::Duration;

use crate::notice::Notice;
use crate::time::Time;

/// Longest output kept per check (the status shows it).
pub const OUTPUT_MAX: usize = 200;

/// What a failing check does to the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The unit is not ready while the check fails.
    Demote,
    /// The unit's penalty grows by this much while the check fails.
    Weight(u8),
}

/// One check as the core knows it (the probe itself is the adapter's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackParams {
    pub name: String,
    /// Consecutive failures that make a healthy check failing (≥ 1).
    pub fall: u32,
    /// Consecutive successes that make a failing check healthy (≥ 1).
    pub rise: u32,
    pub effect: Effect,
}

/// One check's state.
#[derive(Debug, Clone)]
struct Track {
    params: TrackParams,
    /// `None` until the first result.
    healthy: Option<bool>,
    /// Consecutive results that disagree with `healthy`.
    streak: u32,
    runs: u64,
    failures: u64,
    last_ok: Option<bool>,
    last_output: String,
    last_took: Duration,
    last_at: Option<Time>,
    since: Time,
}

/// What the status shows of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckView {
    pub name: String,
    /// `None`: no result yet.
    pub healthy: Option<bool>,
    pub effect: Effect,
    /// The last result (it may disagree with `healthy` within fall/rise).
    pub last_ok: Option<bool>,
    pub last_output: String,
    pub last_took: Duration,
    /// Time since the last result.
    pub last_age: Option<Duration>,
    /// Time in the current state.
    pub for_time: Duration,
    pub runs: u64,
    pub failures: u64,
}

/// What the checks add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// A `Demote` check fails or has not reported.
    pub demoted: bool,
    pub penalty: u16,
    /// Checks reported and failing.
    pub failing: usize,
}

/// The unit's checks.
#[derive(Debug, Clone, Default)]
pub struct Health {
    tracks: Vec<Track>,
}

impl Health {
    /// The checks of `params`, none reported yet, at `now`.
    pub fn new(params: Vec<TrackParams>, now: Time) -> Self {
        let tracks = params
            .into_iter()
            .map(|p| Track {
                params: p,
                healthy: None,
                streak: 0,
                runs: 0,
                failures: 0,
                last_ok: None,
                last_output: String::new(),
                last_took: Duration::ZERO,
                last_at: None,
                since: now,
            })
            .collect();
        Self { tracks }
    }

    /// Whether any check is configured.
    pub fn any(&self) -> bool {
        !self.tracks.is_empty()
    }

    /// A result of the check `name`. Returns the operator's line when the
    /// check's state changed; a name not configured is ignored.
    pub fn observe(&mut self, now: Time, name: &str, ok: bool, output: &str, took: Duration) -> Option<Notice> {
        let t = self.tracks.iter_mut().find(|t| t.params.name == name)?;
        t.runs += 1;
        if !ok {
            t.failures += 1;
        }
        t.last_ok = Some(ok);
        t.last_output = clip(output);
        t.last_took = took;
        t.last_at = Some(now);
        let changed = match t.healthy {
            None => true,
            Some(h) if h == ok => {
                t.streak = 0;
                false
            }
            Some(_) => {
                t.streak += 1;
                t.streak >= if ok { t.params.rise } else { t.params.fall }
            }
        };
        if !changed {
            return None;
        }
        let first = t.healthy.is_none();
        t.healthy = Some(ok);
        t.streak = 0;
        t.since = now;
        // A first result that is good is not news.
        (!(first && ok)).then(|| Notice::Check { name: name.to_owned(), healthy: ok, output: t.last_output.clone() })
    }

    /// Whether the check `name` passes (after fall/rise).
    pub fn passing(&self, name: &str) -> bool {
        self.tracks.iter().any(|t| t.params.name == name && t.healthy == Some(true))
    }

    /// The `Demote` checks that keep the unit from being ready: failing,
    /// or not reported yet.
    pub fn demoted_by(&self) -> Vec<&str> {
        self.tracks
            .iter()
            .filter(|t| t.params.effect == Effect::Demote && t.healthy != Some(true))
            .map(|t| t.params.name.as_str())
            .collect()
    }

    /// The failing checks (reported and failing), by name.
    pub fn failing(&self) -> Vec<&str> {
        self.tracks.iter().filter(|t| t.healthy == Some(false)).map(|t| t.params.name.as_str()).collect()
    }

    /// What the partner and the role decisions see of the checks.
    pub fn summary(&self) -> Summary {
        Summary {
            demoted: self.tracks.iter().any(|t| t.params.effect == Effect::Demote && t.healthy != Some(true)),
            penalty: self.penalty(),
            failing: self.tracks.iter().filter(|t| t.healthy == Some(false)).count(),
        }
    }

    /// The sum of the weights of the failing `Weight` checks.
    pub fn penalty(&self) -> u16 {
        self.tracks
            .iter()
            .filter(|t| t.healthy == Some(false))
            .map(|t| match t.params.effect {
                Effect::Weight(w) => u16::from(w),
                Effect::Demote => 0,
            })
            .fold(0u16, u16::saturating_add)
    }

    /// Every check, as the status shows it at `now`.
    pub fn view(&self, now: Time) -> Vec<CheckView> {
        self.tracks
            .iter()
            .map(|t| CheckView {
                name: t.params.name.clone(),
                healthy: t.healthy,
                effect: t.params.effect,
                last_ok: t.last_ok,
                last_output: t.last_output.clone(),
                last_took: t.last_took,
                last_age: t.last_at.map(|a| now.since(a)),
                for_time: now.since(t.since),
                runs: t.runs,
                failures: t.failures,
            })
            .collect()
    }
}

/// The first line of `output`, at most [`OUTPUT_MAX`] bytes (on a
/// character boundary).
fn clip(output: &str) -> String {
    let line = output.trim().lines().next().unwrap_or("");
    let mut end = line.len().min(OUTPUT_MAX);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn health(fall: u32, rise: u32, effect: Effect) -> Health {
        Health::new(vec![TrackParams { name: "haproxy".into(), fall, rise, effect }], Time::from_millis(0))
    }

    fn at(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    #[test]
    fn the_first_result_decides_then_fall_and_rise_hold() {
        let mut h = health(2, 3, Effect::Demote);
        assert_eq!(h.demoted_by(), ["haproxy"], "not reported yet: not ready");
        assert!(h.observe(at(1), "haproxy", true, "ok", Duration::ZERO).is_none(), "a good first result is quiet");
        assert!(h.demoted_by().is_empty());
        assert!(h.observe(at(2), "haproxy", false, "down", Duration::ZERO).is_none(), "one failure of two");
        assert!(h.demoted_by().is_empty());
        let n = h.observe(at(3), "haproxy", false, "still down\nmore", Duration::ZERO);
        assert_eq!(n, Some(Notice::Check { name: "haproxy".into(), healthy: false, output: "still down".into() }));
        assert_eq!(h.demoted_by(), ["haproxy"]);
        assert_eq!(h.failing(), ["haproxy"]);
        // Two successes of three, a failure: the streak starts again.
        h.observe(at(4), "haproxy", true, "", Duration::ZERO);
        h.observe(at(5), "haproxy", true, "", Duration::ZERO);
        h.observe(at(6), "haproxy", false, "", Duration::ZERO);
        h.observe(at(7), "haproxy", true, "", Duration::ZERO);
        h.observe(at(8), "haproxy", true, "", Duration::ZERO);
        assert_eq!(h.demoted_by(), ["haproxy"]);
        assert!(h.observe(at(9), "haproxy", true, "", Duration::ZERO).is_some());
        assert!(h.demoted_by().is_empty());
        let v = &h.view(at(19))[0];
        assert_eq!(
            (v.runs, v.failures, v.for_time, v.last_age),
            (9, 3, Duration::from_millis(10), Some(Duration::from_millis(10)))
        );
    }

    #[test]
    fn weights_add_up_and_unknown_names_are_ignored() {
        let mut h = Health::new(
            vec![
                TrackParams { name: "a".into(), fall: 1, rise: 1, effect: Effect::Weight(200) },
                TrackParams { name: "b".into(), fall: 1, rise: 1, effect: Effect::Weight(100) },
            ],
            at(0),
        );
        assert_eq!(h.penalty(), 0);
        assert!(h.demoted_by().is_empty(), "weights never demote");
        h.observe(at(1), "a", false, "", Duration::ZERO);
        h.observe(at(1), "b", false, "", Duration::ZERO);
        assert_eq!(h.penalty(), 300);
        assert!(h.observe(at(1), "c", false, "", Duration::ZERO).is_none());
        assert_eq!(clip(&"é".repeat(150)).len(), OUTPUT_MAX);
    }

    proptest! {
        /// Whatever the results, a state change needs `fall` (or `rise`)
        /// results in a row that agree with the new state, except the
        /// first result, which decides at once.
        #[test]
        fn a_state_changes_only_after_fall_or_rise_agreeing_results(
            fall in 1u32..5, rise in 1u32..5, results in proptest::collection::vec(any::<bool>(), 1..200),
        ) {
            let mut h = health(fall, rise, Effect::Demote);
            let mut run: (bool, u32) = (results[0], 0);
            let mut state: Option<bool> = None;
            for (i, ok) in results.iter().copied().enumerate() {
                run = if run.0 == ok { (ok, run.1 + 1) } else { (ok, 1) };
                let changed = h.observe(at(i as u64), "haproxy", ok, "", Duration::ZERO).is_some()
                    || (state.is_none() && ok);
                let now_healthy = h.demoted_by().is_empty();
                if changed && state.is_some() {
                    prop_assert_eq!(now_healthy, ok);
                    let needed = if ok { rise } else { fall };
                    prop_assert!(run.1 >= needed, "changed after {} agreeing results, needed {}", run.1, needed);
                }
                if state.is_some_and(|s| s != now_healthy) {
                    prop_assert!(changed);
                }
                state = Some(now_healthy);
            }
        }

        /// A check that flips every result never changes state when fall
        /// and rise are both at least 2.
        #[test]
        fn a_check_flapping_every_interval_does_not_move(fall in 2u32..6, rise in 2u32..6, n in 2usize..300, first in any::<bool>()) {
            let mut h = health(fall, rise, Effect::Demote);
            h.observe(at(0), "haproxy", first, "", Duration::ZERO);
            for i in 1..n {
                let ok = (i % 2 == 0) == first;
                prop_assert!(h.observe(at(i as u64), "haproxy", ok, "", Duration::ZERO).is_none());
            }
            prop_assert_eq!(h.demoted_by().is_empty(), first);
        }
    }
}
