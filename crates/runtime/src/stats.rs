//! Percentiles: the one helper the services use for their p50/p99 figures
//! (the election's scheduling delays, the replicator's lag).
//!
//! A percentile here is the sample at the nearest rank: the value at index
//! `round((n - 1) * q)` of the sorted samples. No interpolation: what is
//! shown is a delay that really happened.

use std::collections::VecDeque;
use std::time::Duration;

/// The value at quantile `q` (0.0 to 1.0) of `sorted` (ascending), by the
/// nearest rank; 0 when there is none.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0;
    };
    let i = (last as f64 * q.clamp(0.0, 1.0)).round() as usize;
    sorted[i.min(last)]
}

/// The median, the 99th percentile and the largest of some samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Summary {
    /// The summary of `values` (all zero when there are none).
    pub fn of(values: impl IntoIterator<Item = u64>) -> Self {
        let mut v: Vec<u64> = values.into_iter().collect();
        v.sort_unstable();
        Self { p50: percentile(&v, 0.5), p99: percentile(&v, 0.99), max: v.last().copied().unwrap_or(0) }
    }
}

/// The latest samples of a duration, in microseconds (at most `capacity`,
/// the oldest dropped first), with the largest ever seen and a count of
/// all of them.
#[derive(Debug, Clone)]
pub struct Samples {
    recent: VecDeque<u64>,
    capacity: usize,
    max_ever_us: u64,
    count: u64,
}

impl Samples {
    /// Keeps the last `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { recent: VecDeque::new(), capacity: capacity.max(1), max_ever_us: 0, count: 0 }
    }

    /// One more sample.
    pub fn record(&mut self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// One more sample, in microseconds.
    pub fn record_us(&mut self, us: u64) {
        if self.recent.len() >= self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(us);
        self.max_ever_us = self.max_ever_us.max(us);
        self.count += 1;
    }

    /// p50, p99 and max of the samples kept.
    pub fn recent(&self) -> Summary {
        Summary::of(self.recent.iter().copied())
    }

    /// The largest sample ever recorded, kept or not.
    pub fn max_ever_us(&self) -> u64 {
        self.max_ever_us
    }

    /// How many samples were ever recorded.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.99), 7);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51, "index round(99 * 0.5) = 50");
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(Summary::of([3, 1, 2]), Summary { p50: 2, p99: 3, max: 3 });
        assert_eq!(Summary::of([]), Summary::default());
    }

    #[test]
    fn samples_keep_the_latest_and_the_largest_ever() {
        let mut s = Samples::new(3);
        for us in [900, 1, 2, 3] {
            s.record(Duration::from_micros(us));
        }
        assert_eq!(s.recent(), Summary { p50: 2, p99: 3, max: 3 }, "900 fell out of the window");
        assert_eq!((s.max_ever_us(), s.count()), (900, 4));
    }
}
