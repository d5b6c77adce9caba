//! Why a received packet was dropped, the counters by reason, and the
//! limiter that keeps a flood from becoming a flood of log lines (E15).

use std::time::Duration;

use crate::time::Time;

/// Every reason a received packet can be dropped. Each has a counter;
/// some also have an operator log line (see [`crate::Notice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    TooShort,
    BadIpVersion,
    BadIpChecksum,
    BadIpLength,
    NotCarp,
    Fragment,
    BadTtl,
    BadVersion,
    BadType,
    BadLength,
    BadChecksum,
    BadDestination,
    ForeignVhid,
    BadDigest,
    Replay,
    AuthModeMismatch,
    UnknownKey,
    NotPartner,
    OwnAddress,
    WrongInterface,
    Pacified,
}

impl DropReason {
    /// All reasons, in counter order.
    pub const ALL: [Self; 21] = [
        Self::TooShort,
        Self::BadIpVersion,
        Self::BadIpChecksum,
        Self::BadIpLength,
        Self::NotCarp,
        Self::Fragment,
        Self::BadTtl,
        Self::BadVersion,
        Self::BadType,
        Self::BadLength,
        Self::BadChecksum,
        Self::BadDestination,
        Self::ForeignVhid,
        Self::BadDigest,
        Self::Replay,
        Self::AuthModeMismatch,
        Self::UnknownKey,
        Self::NotPartner,
        Self::OwnAddress,
        Self::WrongInterface,
        Self::Pacified,
    ];

    /// Stable snake_case name, used as metric label and in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadIpVersion => "bad_ip_version",
            Self::BadIpChecksum => "bad_ip_checksum",
            Self::BadIpLength => "bad_ip_length",
            Self::NotCarp => "not_carp",
            Self::Fragment => "fragment",
            Self::BadTtl => "bad_ttl",
            Self::BadVersion => "bad_version",
            Self::BadType => "bad_type",
            Self::BadLength => "bad_length",
            Self::BadChecksum => "bad_checksum",
            Self::BadDestination => "bad_destination",
            Self::ForeignVhid => "foreign_vhid",
            Self::BadDigest => "bad_digest",
            Self::Replay => "replay",
            Self::AuthModeMismatch => "auth_mode_mismatch",
            Self::UnknownKey => "unknown_key",
            Self::NotPartner => "not_partner",
            Self::OwnAddress => "own_address",
            Self::WrongInterface => "wrong_interface",
            Self::Pacified => "pacified",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// Drops that are normal operation, not worth a log line.
    pub fn is_quiet(self) -> bool {
        matches!(self, Self::OwnAddress | Self::Pacified)
    }
}

/// Counters of dropped packets by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl DropCounters {
    /// Counts one drop.
    pub fn add(&mut self, r: DropReason) {
        let c = &mut self.0[r.index()];
        *c = c.saturating_add(1);
    }

    /// The count for `r`.
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r.index()]
    }

    /// Every non-zero counter.
    pub fn nonzero(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r))).filter(|(_, c)| *c > 0).collect()
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Lets a few log lines per reason through each window and counts the rest,
/// for a summary line at the end of the window.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    window: Duration,
    per_window: u32,
    window_start: Time,
    logged: [u32; DropReason::ALL.len()],
    suppressed: DropCounters,
}

impl LogLimiter {
    /// At most `per_window` lines per reason in each `window`.
    pub fn new(window: Duration, per_window: u32) -> Self {
        Self {
            window,
            per_window,
            window_start: Time::ZERO,
            logged: [0; DropReason::ALL.len()],
            suppressed: DropCounters::default(),
        }
    }

    /// Whether a drop for `r` at `now` may be logged; counts it if not.
    pub fn allow(&mut self, now: Time, r: DropReason) -> bool {
        if now.since(self.window_start) >= self.window && self.suppressed.total() == 0 {
            self.window_start = now;
            self.logged = [0; DropReason::ALL.len()];
        }
        let n = &mut self.logged[r.index()];
        if *n < self.per_window {
            *n += 1;
            true
        } else {
            self.suppressed.add(r);
            false
        }
    }

    /// When the current window ends, if lines were suppressed in it.
    pub fn summary_due(&self) -> Option<Time> {
        (self.suppressed.total() > 0).then(|| self.window_start + self.window)
    }

    /// Closes the window at `now` if it is over: returns what was
    /// suppressed in it and starts a new one.
    pub fn take_summary(&mut self, now: Time) -> Option<(Duration, DropCounters)> {
        if self.suppressed.total() == 0 || now.since(self.window_start) < self.window {
            return None;
        }
        let len = now.since(self.window_start);
        self.window_start = now;
        self.logged = [0; DropReason::ALL.len()];
        Some((len, std::mem::take(&mut self.suppressed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_a_few_lines_and_one_summary() {
        let mut l = LogLimiter::new(Duration::from_secs(10), 3);
        let mut lines = 0;
        for k in 0..100_000u64 {
            if l.allow(Time::from_micros(k * 50), DropReason::BadDigest) {
                lines += 1;
            }
        }
        assert_eq!(lines, 3);
        assert_eq!(l.summary_due(), Some(Time::from_millis(10_000)));
        assert!(l.take_summary(Time::from_millis(9_000)).is_none());
        let (_, c) = l.take_summary(Time::from_millis(10_000)).unwrap();
        assert_eq!(c.get(DropReason::BadDigest), 100_000 - 3);
        assert!(l.summary_due().is_none());
        assert!(l.allow(Time::from_millis(10_001), DropReason::BadDigest));
    }
}
