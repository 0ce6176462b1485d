//! The one random number generator of the metrics.
//!
//! ChaCha8 (`rand_chacha::ChaCha8Rng`, a stable, portable stream) seeded with
//! `seed_from_u64(seed)`, one ChaCha *stream* per use (`stream::KID`, …), so adding a metric
//! to a run never changes another metric's draws. Uniform integers below `n` use rejection
//! sampling on 64-bit words (no modulo bias); subsets without replacement are a partial
//! Fisher–Yates shuffle of `0..n`. The same `--seed` gives the same numbers on every
//! platform and thread count. (NumPy's generator is not reproduced: where a subset is the
//! whole set — KID with N ≤ 1000 — results do not depend on the draws at all.)

use rand_chacha::rand_core::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Stream ids, one per consumer.
pub mod stream {
    pub const KID: u64 = 1;
    pub const FID_INF: u64 = 2;
    pub const SPLITS: u64 = 3;
}

pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(stream);
        Rng(r)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        // Reject the lowest (2^64 mod n) values so every residue is equally likely.
        let threshold = n.wrapping_neg() % n;
        loop {
            let r = self.0.next_u64();
            if r >= threshold {
                return (r % n) as usize;
            }
        }
    }

    /// `m` distinct indices from `0..n`, uniformly, in random order (partial Fisher–Yates).
    pub fn sample(&mut self, n: usize, m: usize) -> Vec<usize> {
        assert!(m <= n);
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..m {
            let j = i + self.below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(m);
        idx
    }

    /// A uniform random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        self.sample(n, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let a = Rng::new(7, stream::KID).sample(100, 30);
        let b = Rng::new(7, stream::KID).sample(100, 30);
        assert_eq!(a, b);
        let mut s = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 30);
        assert_ne!(a, Rng::new(8, stream::KID).sample(100, 30));
        assert_ne!(a, Rng::new(7, stream::FID_INF).sample(100, 30));
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut r = Rng::new(1, 0);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[r.below(3)] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }
}
