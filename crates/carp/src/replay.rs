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
//! **HMAC-SHA256 mode.** duet senders make counters strictly increasing
//! across their own restarts (time-based start), so the receiver keeps the
//! highest counter per sender and a 64-wide window below it, like IPsec.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Gaps up to this many counters (lost adverts) are merged into one interval.
const MERGE_GAP: u64 = 4096;
/// Intervals kept per sender (one per restart or adoption; oldest go first).
const MAX_INTERVALS: usize = 256;
/// Senders tracked (legitimate senders are the partner's few addresses).
const MAX_SENDERS: usize = 64;
/// Width of the SHA-256 window below the highest counter.
const WINDOW: u64 = 64;

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
    /// Checks `counter` from `sender` and records it if fresh. Returns
    /// false for a replay. Call only after the digest verified: nothing
    /// unauthenticated may enter the state.
    pub fn check_and_record(&mut self, sender: Ipv4Addr, counter: u64, rule: ReplayRule) -> bool {
        self.tick += 1;
        let tick = self.tick;
        if !self.senders.contains_key(&sender)
            && self.senders.len() >= MAX_SENDERS
            && let Some(lru) = self.senders.iter().min_by_key(|(_, s)| s.last_used).map(|(a, _)| *a)
        {
            self.senders.remove(&lru);
        }
        let s = self.senders.entry(sender).or_default();
        let fresh = match rule {
            ReplayRule::Unseen => {
                if s.seen.contains(counter) {
                    false
                } else {
                    s.seen.insert(counter);
                    true
                }
            }
            ReplayRule::Window => s.window.accept(counter),
        };
        if fresh {
            s.last_used = tick;
        }
        fresh
    }

    /// Whether `counter` from `sender` would pass, without recording it.
    pub fn would_accept(&self, sender: Ipv4Addr, counter: u64, rule: ReplayRule) -> bool {
        let Some(s) = self.senders.get(&sender) else {
            return true;
        };
        match rule {
            ReplayRule::Unseen => !s.seen.contains(counter),
            ReplayRule::Window => s.window.would_accept(counter),
        }
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
        let back: ReplayState = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
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
