//! Replay protection for adverts (E15), in both authentication modes.
//!
//! **ucarp-compatible mode.** ucarp does not check counters, and its
//! counters are not monotonic per sender: a ucarp unit starts from a random
//! value, and whenever it hears an advert it adopts that advert's counter
//! and continues from there. What a replay *cannot* do is produce a counter
//! its sender never sent, and everything the sender sent while we listened
//! we have seen. So per sender we keep the set of counters already accepted,
//! as merged intervals, and drop any advert whose counter is in it. A peer
//! that restarts (new random counter) or adopts someone else's counter is
//! accepted at once; a replayed advert never is, whatever its timing fields
//! (which ucarp's HMAC does not cover). The set is persisted so that a
//! restart of the receiver does not reopen the window. What remains: adverts
//! sent while this unit was not listening (it was down) were never seen,
//! so a replay of those is accepted once each.
//!
//! Alone, a ucarp master draws a new random counter for every advert; once
//! it has heard any advert it counts up by one (and jumps to one more than a
//! counter it hears). So a sender that is *live* (heard within the down
//! interval) and counting up may only move forward by a few counters, or
//! adopt one of this unit's own recent counters; any other new counter from
//! it is refused as out of sequence. A new random counter (a restart, or a
//! ucarp that never heard anyone) is accepted only from a sender that is not
//! live: one that was never heard, has fallen silent and been declared
//! down, or counts at random anyway.
//!
//! **HMAC-SHA256 mode.** duet senders make counters strictly increasing
//! across their own restarts (time-based start), so the receiver keeps the
//! highest counter per sender and a 64-wide window below it, like IPsec.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Time;

/// Gaps up to this many counters (lost adverts) are merged into one interval.
const MERGE_GAP: u64 = 4096;
/// Intervals kept per sender. A counting sender needs one per life; a
/// ucarp that never heard anyone needs one per advert (random counters), so
/// this is also how many such adverts are remembered (about 68 minutes at
/// one per second). Least recently touched go first.
const MAX_INTERVALS: usize = 4096;
/// Senders tracked (legitimate senders are the partner's few addresses).
const MAX_SENDERS: usize = 64;
/// Width of the SHA-256 window below the highest counter.
const WINDOW: u64 = 64;
/// How far a live, counting sender may move forward (lost adverts).
const FORWARD: u64 = 64;

/// Counters already accepted from one sender, as disjoint intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenCounters {
    /// `(low, high, touched)`, sorted by `low`, disjoint; the least
    /// recently touched interval is evicted first.
    intervals: Vec<(u64, u64, u64)>,
    tick: u64,
}

impl SeenCounters {
    /// True if `c` was accepted before (or lies in a merged loss gap).
    pub fn contains(&self, c: u64) -> bool {
        let i = self.intervals.partition_point(|&(lo, _, _)| lo <= c);
        i > 0 && self.intervals[i - 1].1 >= c
    }

    /// Records `c` as accepted.
    pub fn insert(&mut self, c: u64) {
        self.tick += 1;
        let tick = self.tick;
        let i = self.intervals.partition_point(|&(lo, _, _)| lo <= c);
        // Extend the interval to the left if `c` is just above it.
        if i > 0 {
            let (lo, hi, _) = self.intervals[i - 1];
            if c <= hi {
                return;
            }
            if c - hi <= MERGE_GAP {
                self.intervals[i - 1] = (lo, c, tick);
                self.merge_right(i - 1);
                return;
            }
        }
        // Or to the right, if `c` is just below the next one.
        if i < self.intervals.len() {
            let (lo, hi, _) = self.intervals[i];
            if lo - c <= MERGE_GAP {
                self.intervals[i] = (c, hi, tick);
                return;
            }
        }
        self.intervals.insert(i, (c, c, tick));
        if self.intervals.len() > MAX_INTERVALS
            && let Some(oldest) = self.intervals.iter().enumerate().min_by_key(|(_, iv)| iv.2).map(|(k, _)| k)
        {
            self.intervals.remove(oldest);
        }
    }

    fn merge_right(&mut self, k: usize) {
        while k + 1 < self.intervals.len() && self.intervals[k + 1].0.saturating_sub(self.intervals[k].1) <= MERGE_GAP {
            let next = self.intervals.remove(k + 1);
            self.intervals[k].1 = self.intervals[k].1.max(next.1);
            self.intervals[k].2 = self.intervals[k].2.max(next.2);
        }
    }

    /// Number of intervals held.
    pub fn intervals(&self) -> usize {
        self.intervals.len()
    }
}

/// Highest counter and a window below it (SHA-256 mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    highest: u64,
    /// Bit k set: `highest - k` was accepted.
    bits: u64,
}

impl Window {
    /// Accepts `c` once, if it is above the window or an unseen slot in it.
    pub fn accept(&mut self, c: u64) -> bool {
        if self.bits == 0 {
            self.highest = c;
            self.bits = 1;
            return true;
        }
        if c > self.highest {
            let shift = c - self.highest;
            self.bits = if shift >= WINDOW { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.highest = c;
            return true;
        }
        let back = self.highest - c;
        if back >= WINDOW || self.bits & (1 << back) != 0 {
            return false;
        }
        self.bits |= 1 << back;
        true
    }

    /// Would `c` be accepted?
    pub fn would_accept(&self, c: u64) -> bool {
        let mut w = *self;
        w.accept(c)
    }

    /// The highest counter accepted.
    pub fn highest(&self) -> u64 {
        self.highest
    }
}

/// Per-sender replay state, persisted by the adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayState {
    senders: BTreeMap<Ipv4Addr, SenderState>,
    tick: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SenderState {
    seen: SeenCounters,
    window: Window,
    last_used: u64,
    /// The last counter accepted.
    #[serde(default)]
    last: Option<u64>,
    /// The last two accepted counters were close together: the sender counts.
    #[serde(default)]
    counting: bool,
    /// When the last counter was accepted (this process only).
    #[serde(skip)]
    last_at: Option<Time>,
}

/// What a check says about a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never seen and plausible: accept.
    Fresh,
    /// Seen before (or below the window): a replay.
    Replay,
    /// Never seen, but not where a live, counting sender can be.
    OutOfSequence,
}

/// What the check needs to know besides the counter.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub now: Time,
    /// A sender heard within this long is live.
    pub live_for: Duration,
    /// Counters this unit sent recently (ucarp adopts them).
    pub own_recent: &'a [u64],
}

/// Which rule a counter is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayRule {
    /// Counters never accepted before (ucarp-compatible mode).
    Unseen,
    /// Strictly increasing with a window (SHA-256 mode).
    Window,
}

impl ReplayState {
    /// Judges `counter` from `sender` without recording it.
    pub fn check(&self, sender: Ipv4Addr, counter: u64, rule: ReplayRule, ctx: &Context<'_>) -> Verdict {
        let Some(s) = self.senders.get(&sender) else { return Verdict::Fresh };
        match rule {
            ReplayRule::Window => {
                if s.window.would_accept(counter) {
                    Verdict::Fresh
                } else {
                    Verdict::Replay
                }
            }
            ReplayRule::Unseen => {
                if s.seen.contains(counter) {
                    return Verdict::Replay;
                }
                let live = s.last_at.is_some_and(|t| ctx.now.since(t) < ctx.live_for);
                let (Some(last), true, true) = (s.last, live, s.counting) else { return Verdict::Fresh };
                let forward = counter > last && counter - last <= FORWARD;
                let adopted = ctx.own_recent.iter().any(|&o| counter > o && counter - o <= FORWARD);
                if forward || adopted { Verdict::Fresh } else { Verdict::OutOfSequence }
            }
        }
    }

    /// Records `counter` from `sender` as accepted at `now`. Call only after
    /// the digest verified and [`check`](Self::check) said fresh: nothing
    /// unauthenticated may enter the state.
    pub fn record(&mut self, sender: Ipv4Addr, counter: u64, rule: ReplayRule, now: Time) {
        self.tick += 1;
        let tick = self.tick;
        if !self.senders.contains_key(&sender)
            && self.senders.len() >= MAX_SENDERS
            && let Some(lru) = self.senders.iter().min_by_key(|(_, s)| s.last_used).map(|(a, _)| *a)
        {
            self.senders.remove(&lru);
        }
        let s = self.senders.entry(sender).or_default();
        match rule {
            ReplayRule::Unseen => s.seen.insert(counter),
            ReplayRule::Window => {
                s.window.accept(counter);
            }
        }
        s.counting = s.last.is_some_and(|l| counter > l && counter - l <= FORWARD);
        s.last = Some(counter);
        s.last_at = Some(now);
        s.last_used = tick;
    }

    /// Checks and, when fresh, records (for callers without liveness).
    pub fn check_and_record(&mut self, sender: Ipv4Addr, counter: u64, rule: ReplayRule) -> bool {
        let ctx = Context { now: Time::ZERO, live_for: Duration::ZERO, own_recent: &[] };
        let fresh = self.check(sender, counter, rule, &ctx) == Verdict::Fresh;
        if fresh {
            self.record(sender, counter, rule, Time::ZERO);
        }
        fresh
    }

    /// Senders with state.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seen_counters_drop_exact_repeats_and_lost_ones() {
        let mut s = SeenCounters::default();
        for c in [100, 101, 103, 104] {
            assert!(!s.contains(c));
            s.insert(c);
        }
        assert!(s.contains(102), "a lost advert inside the run counts as seen");
        assert!(s.contains(100) && s.contains(104));
        assert!(!s.contains(105));
        assert_eq!(s.intervals(), 1);
        s.insert(u64::MAX - 3);
        assert_eq!(s.intervals(), 2);
        assert!(!s.contains(u64::MAX));
    }

    #[test]
    fn restart_with_new_random_counter_is_accepted() {
        let mut r = ReplayState::default();
        let a = Ipv4Addr::new(198, 18, 0, 2);
        for c in 1000..1010 {
            assert!(r.check_and_record(a, c, ReplayRule::Unseen));
        }
        assert!(!r.check_and_record(a, 1005, ReplayRule::Unseen));
        // The peer restarts far below: a value it never sent.
        assert!(r.check_and_record(a, 7, ReplayRule::Unseen));
        // The old adverts are still refused.
        assert!(!r.check_and_record(a, 1009, ReplayRule::Unseen));
    }

    #[test]
    fn window_accepts_once_and_in_order() {
        let mut w = Window::default();
        assert!(w.accept(10));
        assert!(!w.accept(10));
        assert!(w.accept(12));
        assert!(w.accept(11), "late but unseen, inside the window");
        assert!(!w.accept(11));
        assert!(w.accept(200));
        assert!(!w.accept(12), "below the window");
    }

    #[test]
    fn state_survives_serialisation() {
        let mut r = ReplayState::default();
        let a = Ipv4Addr::new(198, 18, 0, 2);
        r.check_and_record(a, 5, ReplayRule::Unseen);
        r.check_and_record(a, 9, ReplayRule::Window);
        let text = serde_json::to_string(&r).unwrap();
        let back: ReplayState = serde_json::from_str(&text).unwrap();
        // Liveness (when a sender was last heard) is of this process only.
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        let mut back = back;
        assert!(!back.check_and_record(a, 5, ReplayRule::Unseen));
        assert!(!back.check_and_record(a, 9, ReplayRule::Window));
    }

    proptest! {
        /// Whatever the order of inserts, every counter inserted is then
        /// reported as seen, and the interval list stays sorted and disjoint.
        #[test]
        fn seen_is_a_superset_of_inserted(cs in proptest::collection::vec(any::<u64>(), 0..200), run in 0u64..50, start in any::<u64>()) {
            let mut s = SeenCounters::default();
            let mut all: Vec<u64> = cs;
            all.extend((0..run).map(|k| start.wrapping_add(k)));
            for &c in &all {
                s.insert(c);
            }
            for &c in all.iter().rev().take(MAX_INTERVALS / 2) {
                prop_assert!(s.contains(c));
            }
            for w in s.intervals.windows(2) {
                prop_assert!(w[0].1 < w[1].0);
            }
        }

        /// A window never accepts the same counter twice.
        #[test]
        fn window_never_accepts_twice(cs in proptest::collection::vec(0u64..500, 0..300)) {
            let mut w = Window::default();
            let mut accepted = std::collections::HashSet::new();
            for c in cs {
                if w.accept(c) {
                    prop_assert!(accepted.insert(c), "accepted {} twice", c);
                }
            }
        }
    }
}

#[cfg(test)]
mod sequence_tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn ctx(now_ms: u64, own: &[u64]) -> Context<'_> {
        Context { now: Time::from_millis(now_ms), live_for: Duration::from_secs(3), own_recent: own }
    }

    #[test]
    fn a_live_counting_sender_may_only_move_forward_a_little() {
        let mut r = ReplayState::default();
        for (k, c) in (100..110u64).enumerate() {
            let t = k as u64 * 1000;
            assert_eq!(r.check(A, c, ReplayRule::Unseen, &ctx(t, &[])), Verdict::Fresh);
            r.record(A, c, ReplayRule::Unseen, Time::from_millis(t));
        }
        // A lost advert or two: fine.
        assert_eq!(r.check(A, 112, ReplayRule::Unseen, &ctx(10_000, &[])), Verdict::Fresh);
        // A counter from elsewhere while it is live: refused.
        assert_eq!(r.check(A, 5, ReplayRule::Unseen, &ctx(10_000, &[])), Verdict::OutOfSequence);
        assert_eq!(r.check(A, 1 << 40, ReplayRule::Unseen, &ctx(10_000, &[])), Verdict::OutOfSequence);
        // Unless ucarp adopted one of ours.
        assert_eq!(r.check(A, 5001, ReplayRule::Unseen, &ctx(10_000, &[5000])), Verdict::Fresh);
        // Once it is silent (declared down), a new life is accepted...
        assert_eq!(r.check(A, 5, ReplayRule::Unseen, &ctx(13_000, &[])), Verdict::Fresh);
        // ...but never a counter it sent before.
        assert_eq!(r.check(A, 105, ReplayRule::Unseen, &ctx(13_000, &[])), Verdict::Replay);
    }

    #[test]
    fn a_ucarp_that_counts_at_random_is_accepted_but_never_twice() {
        let mut r = ReplayState::default();
        let mut t = 0;
        for c in [0x317f_4e23_0a80_15ff_u64, 0x56d0_669e_486d_eb0b, 0x1234_5678_9abc_def0] {
            assert_eq!(r.check(A, c, ReplayRule::Unseen, &ctx(t, &[])), Verdict::Fresh);
            r.record(A, c, ReplayRule::Unseen, Time::from_millis(t));
            t += 1000;
        }
        assert_eq!(r.check(A, 0x56d0_669e_486d_eb0b, ReplayRule::Unseen, &ctx(t, &[])), Verdict::Replay);
    }
}
