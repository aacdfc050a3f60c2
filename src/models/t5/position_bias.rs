//! T5's relative position bias: a learned scalar per head for each bucket of key-minus-query
//! distance, computed once (by the first block) and added to every block's attention scores.

use burn::module::{Module, Param};
use burn::prelude::*;

/// The bucket of a key at `relative_position = key − query` tokens from its query, for a
/// bidirectional encoder with `num_buckets` buckets (half for keys after the query).
///
/// Within each half, distances below `num_buckets / 4` get a bucket each; longer ones share
/// logarithmically wider buckets up to `max_distance`, beyond which all fall in the last
/// bucket. The logarithm is computed in f32, as `transformers` does, so that distances on a
/// bucket boundary land where PyTorch puts them.
pub fn relative_position_bucket(
    relative_position: i64,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let half = num_buckets / 2;
    let direction = if relative_position > 0 { half } else { 0 };
    let distance = relative_position.unsigned_abs() as usize;
    let max_exact = half / 2;
    if distance < max_exact {
        return direction + distance;
    }
    let log_ratio = (distance as f32 / max_exact as f32).ln()
        / ((max_distance as f64 / max_exact as f64).ln() as f32);
    let large = max_exact + (log_ratio * (half - max_exact) as f32) as usize;
    direction + large.min(half - 1)
}

/// The table of relative position biases and how distances map onto it.
#[derive(Module, Debug)]
pub struct RelativePositionBias {
    /// One bias per head for each bucket, `[num_buckets, num_heads]` (PyTorch's
    /// `relative_attention_bias.weight`).
    pub table: Param<Tensor<2>>,
    /// Distances from this one on share the last bucket.
    #[module(skip)]
    pub max_distance: usize,
}

impl RelativePositionBias {
    /// A zero table.
    pub(crate) fn new(
        num_buckets: usize,
        num_heads: usize,
        max_distance: usize,
        device: &Device,
    ) -> Self {
        Self::from_table(
            Tensor::zeros([num_buckets, num_heads], device),
            max_distance,
        )
    }

    /// A bias with the given table `[num_buckets, num_heads]`.
    pub(crate) fn from_table(table: Tensor<2>, max_distance: usize) -> Self {
        Self {
            table: Param::from_tensor(table),
            max_distance,
        }
    }

    /// The bias of every (query, key) pair for a sequence of `length` tokens,
    /// `[1, num_heads, length, length]`, in the table's dtype.
    pub fn forward(&self, length: usize) -> Tensor<4> {
        let table = self.table.val();
        let [num_buckets, num_heads] = table.dims();
        let device = table.device();
        let buckets: Vec<i64> = (0..length)
            .flat_map(|query| {
                (0..length).map(move |key| {
                    let bucket = relative_position_bucket(
                        key as i64 - query as i64,
                        num_buckets,
                        self.max_distance,
                    );
                    bucket as i64
                })
            })
            .collect();
        let buckets =
            Tensor::<1, Int>::from_data(TensorData::new(buckets, [length * length]), &device);
        table
            .select(0, buckets)
            .reshape([length, length, num_heads])
            .permute([2, 0, 1])
            .unsqueeze::<4>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_hand_computed_values() {
        // 32 buckets, max distance 128: 16 per direction, 8 exact, then
        // 8 + floor(ln(d/8) / ln(16) · 8).
        let bucket = |position| relative_position_bucket(position, 32, 128);
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(-1), 1);
        assert_eq!(bucket(1), 17);
        assert_eq!(bucket(-7), 7);
        assert_eq!(bucket(7), 23);
        // d = 8: ln(1) = 0 → bucket 8.
        assert_eq!(bucket(-8), 8);
        // d = 12: ln(1.5)/ln(16)·8 = 1.17 → 9; d = 16: ln 2/ln 16·8 = 2 → 10.
        assert_eq!(bucket(-12), 9);
        assert_eq!(bucket(-16), 10);
        assert_eq!(bucket(16), 26);
        // d = 64: ln 8/ln 16·8 = 6 → 14; d = 127 → 8 + 7.97 → 15; beyond → 15.
        assert_eq!(bucket(-64), 14);
        assert_eq!(bucket(-127), 15);
        assert_eq!(bucket(-1000), 15);
        assert_eq!(bucket(1000), 31);
    }

    #[test]
    fn the_bias_of_a_pair_is_its_bucket_row() {
        let device = Device::default();
        let rows: Vec<f32> = (0..32 * 2).map(|value| value as f32).collect();
        let table = Tensor::<2>::from_data(TensorData::new(rows, [32, 2]), &device);
        let bias = RelativePositionBias::from_table(table, 128).forward(3);
        assert_eq!(bias.dims(), [1, 2, 3, 3]);
        let values: Vec<f32> = bias.into_data().try_to_vec().unwrap();
        // Head 1, query 0, key 2: distance +2 → bucket 18 → row 18, column 1 = 37.
        assert_eq!(values[9 + 2], 37.0);
        // Head 0, query 2, key 0: distance −2 → bucket 2 → 4.
        assert_eq!(values[2 * 3], 4.0);
    }
}
