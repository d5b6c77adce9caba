//! The pacified rule (E9): more than `max_starts` starts within `window`
//! puts a unit out of HA until an operator clears it. The history is kept
//! on disk by the adapter, in wall-clock seconds, so it survives restarts;
//! the adapter hands it to the core ([`Starts`]) at start and every few
//! seconds, and the core applies the [`PacifyRule`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Starts of the unit's services, in UNIX seconds, and the last clear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartHistory {
    /// One entry per start, oldest first.
    pub starts: Vec<StartRecord>,
    /// Starts at or before this instant no longer count.
    #[serde(default)]
    pub cleared_at: Option<u64>,
}

/// One start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    /// UNIX seconds.
    pub at: u64,
    /// Which service started (or "unit").
    pub what: String,
}

/// The rule: more than `max_starts` counted starts within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacifyRule {
    pub window: Duration,
    pub max_starts: u32,
}

impl Default for PacifyRule {
    /// The reference appliance's: more than 3 starts within 5 minutes.
    fn default() -> Self {
        Self { window: Duration::from_secs(300), max_starts: 3 }
    }
}

/// The start history as read now, with the wall-clock time it was read
/// at (UNIX seconds): the core reads no clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Starts {
    pub history: StartHistory,
    pub unix_now: u64,
}

/// What the rule says about a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    pub pacified: bool,
    /// Starts counted within the window.
    pub recent: u32,
}

impl PacifyRule {
    /// Applies the rule to `s`.
    pub fn judge(&self, s: &Starts) -> Judgement {
        Judgement {
            pacified: s.history.is_pacified(s.unix_now, self.window, self.max_starts),
            recent: s.history.recent(s.unix_now, self.window),
        }
    }
}

/// Entries kept at most (older ones cannot matter for any sane window).
const KEEP: usize = 64;

impl StartHistory {
    /// Records a start at `now` (UNIX seconds).
    pub fn record(&mut self, now: u64, what: &str) {
        self.starts.push(StartRecord { at: now, what: what.to_string() });
        if self.starts.len() > KEEP {
            let excess = self.starts.len() - KEEP;
            self.starts.drain(..excess);
        }
    }

    /// Starts within `window` before `now` that count (after the last clear).
    pub fn recent(&self, now: u64, window: Duration) -> u32 {
        let from = now.saturating_sub(window.as_secs());
        let n = self
            .starts
            .iter()
            .filter(|s| s.at > from && s.at <= now && self.cleared_at.is_none_or(|c| s.at > c))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// More than `max_starts` counted starts in the window.
    pub fn is_pacified(&self, now: u64, window: Duration, max_starts: u32) -> bool {
        self.recent(now, window) > max_starts
    }

    /// The operator cleared the state at `now`.
    pub fn clear(&mut self, now: u64) {
        self.cleared_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourth_start_in_five_minutes_pacifies() {
        let w = Duration::from_secs(300);
        let mut h = StartHistory::default();
        for t in [1000, 1060, 1120] {
            h.record(t, "election");
            assert!(!h.is_pacified(t, w, 3));
        }
        h.record(1180, "election");
        assert!(h.is_pacified(1180, w, 3));
        // Five minutes after the first start it has aged out.
        assert!(!h.is_pacified(1300, w, 3));
    }

    #[test]
    fn the_rule_counts_and_judges() {
        let rule = PacifyRule { window: Duration::from_secs(60), max_starts: 3 };
        let mut history = StartHistory::default();
        for t in [100, 110, 120] {
            history.record(t, "unit");
        }
        let s = Starts { history, unix_now: 125 };
        assert_eq!(rule.judge(&s), Judgement { pacified: false, recent: 3 });
        let mut s2 = s.clone();
        s2.history.record(126, "takeover");
        s2.unix_now = 126;
        assert_eq!(rule.judge(&s2), Judgement { pacified: true, recent: 4 });
        assert_eq!(PacifyRule::default(), PacifyRule { window: Duration::from_secs(300), max_starts: 3 });
    }

    #[test]
    fn clearing_forgets_earlier_starts() {
        let w = Duration::from_secs(300);
        let mut h = StartHistory::default();
        for t in [10, 20, 30, 40] {
            h.record(t, "unit");
        }
        assert!(h.is_pacified(40, w, 3));
        h.clear(45);
        assert!(!h.is_pacified(50, w, 3));
        h.record(60, "unit");
        assert_eq!(h.recent(60, w), 1);
    }
}
