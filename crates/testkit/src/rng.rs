//! A small, fast, seeded generator (splitmix64) for the fuzzer's mutations
//! and the fault lab's schedules: the same seed draws the same numbers on
//! every machine, so a failing run replays from its seed.

/// splitmix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `lo..=hi` (`lo` when `hi` < `lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo) + 1)
    }

    /// One of `v` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_and_draws_stay_in_range() {
        let (mut a, mut b) = (Rng::new(9), Rng::new(9));
        let xs: Vec<u64> = (0..100).map(|_| a.range(5, 7)).collect();
        assert_eq!(xs, (0..100).map(|_| b.range(5, 7)).collect::<Vec<_>>());
        assert!(xs.iter().all(|x| (5..=7).contains(x)) && xs.contains(&5) && xs.contains(&7));
        assert_eq!(a.below(0), 0);
        assert_eq!(a.range(3, 3), 3);
        assert!([1, 2].contains(&a.pick(&[1, 2])));
    }
}
