//! A small, seedable and serialisable random number generator.
//!
//! All of the crate's randomness (which steps are stochastic, mini-batch order, every noise
//! tensor) comes from [`Rng`], so a run is reproducible from one seed, its state can be saved
//! in a checkpoint, and the same seed gives the same noise on every backend. Noise is drawn on
//! the host rather than with the device's generator, which is shared by every thread using
//! the device.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// xoshiro256++ seeded through SplitMix64.
///
/// Not cryptographic; chosen because it is fast, has a 256-bit state that serialises as four
/// integers, and passes the usual statistical test batteries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn seed_from(seed: u64) -> Self {
        let mut mix = seed;
        let mut next = || {
            mix = mix.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = mix;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            state: [next(), next(), next(), next()],
        }
    }

    /// Sub-stream `index` of `key`: an independent generator for each index, the same
    /// wherever it is made. A rollout keys each sample's noise this way by its global index,
    /// so that a sample's noise does not depend on which worker draws it.
    ///
    /// ```
    /// use flow_rl::Rng;
    ///
    /// let (mut a, mut b) = (Rng::stream(7, 3), Rng::stream(7, 3));
    /// assert_eq!(a.next_u64(), b.next_u64());
    /// assert_ne!(Rng::stream(7, 3).next_u64(), Rng::stream(7, 4).next_u64());
    /// ```
    pub fn stream(key: u64, index: u64) -> Self {
        // Seeding with the key's first output mixed with the index keeps neighbouring
        // indices (and keys) from giving related states.
        let mixed = Self::seed_from(index).next_u64() ^ Self::seed_from(key).next_u64();
        Self::seed_from(mixed)
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s0.wrapping_add(*s3).rotate_left(23).wrapping_add(*s0);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// A uniform integer in `0..bound`, without modulo bias. `bound` must be positive.
    pub fn below(&mut self, bound: usize) -> usize {
        assert!(bound > 0, "Rng::below needs a positive bound");
        let bound = bound as u64;
        // Rejecting the top partial interval makes every residue equally likely.
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let value = self.next_u64();
            if value < zone {
                return (value % bound) as usize;
            }
        }
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// `count` distinct values from `0..population`, in ascending order.
    ///
    /// Panics if `count > population`; callers validate user input first.
    pub fn distinct_below(&mut self, population: usize, count: usize) -> Vec<usize> {
        assert!(count <= population, "cannot draw {count} of {population}");
        let mut pool: Vec<usize> = (0..population).collect();
        // A partial Fisher–Yates: the first `count` slots end up a uniform random subset.
        for i in 0..count {
            let j = i + self.below(population - i);
            pool.swap(i, j);
        }
        pool.truncate(count);
        pool.sort_unstable();
        pool
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let radius = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        radius * (std::f64::consts::TAU * self.uniform()).cos()
    }

    /// A `[rows, cols]` f32 tensor of standard normal draws on `device`.
    pub fn normal_tensor(&mut self, [rows, cols]: [usize; 2], device: &Device) -> Tensor<2> {
        let values: Vec<f32> = (0..rows * cols).map(|_| self.normal() as f32).collect();
        Tensor::from_data(TensorData::new(values, [rows, cols]), device)
    }

    /// A `[streams.len(), cols]` f32 tensor on `device` whose row i holds `cols` standard
    /// normal draws from `streams[i]`: one stream per row, as a rollout keys each sample's
    /// noise (see [`Rng::stream`]).
    pub fn normal_rows(streams: &mut [Rng], cols: usize, device: &Device) -> Tensor<2> {
        let values: Vec<f32> = streams
            .iter_mut()
            .flat_map(|stream| (0..cols).map(|_| stream.normal() as f32))
            .collect();
        Tensor::from_data(TensorData::new(values, [streams.len(), cols]), device)
    }

    /// A `[len]` f32 tensor of uniform draws in `[0, 1)` on `device`.
    pub fn uniform_tensor(&mut self, len: usize, device: &Device) -> Tensor<1> {
        let values: Vec<f32> = (0..len).map(|_| self.uniform() as f32).collect();
        Tensor::from_data(TensorData::new(values, [len]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_different_seed_different_stream() {
        let mut a = Rng::seed_from(7);
        let mut b = Rng::seed_from(7);
        let mut c = Rng::seed_from(8);
        let xs: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..16).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut rng = Rng::seed_from(1);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[rng.below(5)] += 1;
        }
        // Each bucket expects 10_000 with std ≈ 89; 5 std is a generous bound.
        for count in counts {
            assert!((count as i64 - 10_000).abs() < 450, "{counts:?}");
        }
    }

    #[test]
    fn distinct_below_gives_sorted_distinct_values_in_range() {
        let mut rng = Rng::seed_from(3);
        for _ in 0..100 {
            let picked = rng.distinct_below(10, 4);
            assert_eq!(picked.len(), 4);
            assert!(picked.windows(2).all(|w| w[0] < w[1]));
            assert!(picked.iter().all(|&i| i < 10));
        }
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = Rng::seed_from(5);
        let mut items: Vec<usize> = (0..100).collect();
        rng.shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn state_round_trips_through_serde() {
        let mut rng = Rng::seed_from(11);
        rng.next_u64();
        let json = serde_json::to_string(&rng).unwrap();
        let mut restored: Rng = serde_json::from_str(&json).unwrap();
        assert_eq!(rng.next_u64(), restored.next_u64());
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = Rng::seed_from(4);
        let draws: Vec<f64> = (0..20_000).map(|_| rng.normal()).collect();
        let mean = draws.iter().sum::<f64>() / 20_000.0;
        let variance = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / 20_000.0;
        // Standard errors: 0.007 for the mean, 0.01 for the variance.
        assert!(
            mean.abs() < 0.035 && (variance - 1.0).abs() < 0.05,
            "{mean} {variance}"
        );
        assert!(draws.iter().all(|d| d.is_finite()));
    }

    #[test]
    fn uniform_is_in_unit_interval() {
        let mut rng = Rng::seed_from(2);
        let mean = (0..10_000).map(|_| rng.uniform()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
