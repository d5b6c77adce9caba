//! The adapter's clock: what a driver passes its protocol core as the time.
//!
//! A core (`duet_carp`, the takeover's) never reads a clock: it is fed a
//! [`Time`], microseconds on a monotonic clock from an origin the driver
//! chose. [`Clock`] is that origin: it reads the monotonic clock as a
//! [`Time`], turns the core's deadlines back into [`Instant`]s to sleep
//! until, and shows the core's times as wall-clock times for operators.
//!
//! The wall-clock view is the wall time at the origin plus the monotonic
//! time elapsed since: NTP's frequency corrections move both clocks alike,
//! so it only drifts when the wall clock is stepped.

use std::time::{Duration, Instant, SystemTime};

use duet_carp::Time;

/// A monotonic origin and the wall-clock time it had.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    wall_origin: SystemTime,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self { origin: Instant::now(), wall_origin: SystemTime::now() }
    }

    /// Now, as the core counts time.
    pub fn now(&self) -> Time {
        self.time_of(Instant::now())
    }

    /// `at` as the core counts time (the origin if `at` is before it).
    pub fn time_of(&self, at: Instant) -> Time {
        let d = at.saturating_duration_since(self.origin);
        Time::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// The instant of the core's time `t` (to sleep until a deadline).
    pub fn to_instant(&self, t: Time) -> Instant {
        self.origin + Duration::from_micros(t.as_micros())
    }

    /// The wall-clock time of the core's time `t` (for operators).
    pub fn to_system(&self, t: Time) -> SystemTime {
        self.wall_origin + Duration::from_micros(t.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_map_both_ways() {
        let c = Clock::new();
        let later = c.origin + Duration::from_millis(1500);
        let t = c.time_of(later);
        assert_eq!(t, Time::from_millis(1500));
        assert_eq!(c.to_instant(t), later);
        assert_eq!(c.to_system(t), c.wall_origin + Duration::from_millis(1500));
        // Before the origin: the origin.
        assert_eq!(c.time_of(c.origin.checked_sub(Duration::from_millis(5)).unwrap_or(c.origin)), Time::ZERO);
    }
}
