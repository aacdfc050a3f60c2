//! Trajectory buffers: the rows of a rollout with their advantages, served as mini-batches.

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::rollout::TrajectoryRows;

/// Stores the trained rows of a rollout and yields disjoint, shuffled mini-batches.
///
/// The rows' `old_mean` is the anchor of ALGORITHMS.md §7: it is recorded once by the rollout
/// and never recomputed, however many mini-batches and epochs follow.
pub trait TrajectoryBuffer {
    /// Adds rows with one advantage per row.
    fn push(&mut self, rows: TrajectoryRows, advantages: Vec<f32>) -> Result<()>;

    /// The number of stored rows.
    fn len(&self) -> usize;

    /// Whether the buffer holds no rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every row.
    fn clear(&mut self);

    /// The rows at `indices` and their advantages.
    fn gather(&self, indices: &[usize]) -> Result<(TrajectoryRows, Vec<f32>)>;

    /// A seeded shuffle of all rows split into `count` disjoint mini-batches that cover the
    /// buffer; sizes differ by at most one.
    fn minibatches(&self, count: usize, rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
        split_minibatches(self.len(), count, rng)
    }
}

/// A seeded shuffle of `0..rows` split into `count` disjoint mini-batches that cover it;
/// sizes differ by at most one. The trainer draws them over the whole rollout's rows, so
/// that every worker of a data-parallel run sees the same mini-batches.
pub fn split_minibatches(rows: usize, count: usize, rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
    if count == 0 || count > rows {
        return Err(Error::invalid(
            "mini-batches per rollout",
            count,
            format!("between 1 and the {rows} stored rows"),
        ));
    }
    let mut order: Vec<usize> = (0..rows).collect();
    rng.shuffle(&mut order);
    let (base, extra) = (rows / count, rows % count);
    let mut batches = Vec::with_capacity(count);
    let mut start = 0;
    for batch in 0..count {
        let size = base + usize::from(batch < extra);
        batches.push(order[start..start + size].to_vec());
        start += size;
    }
    Ok(batches)
}

/// A [`TrajectoryBuffer`] that keeps one rollout's rows on the device.
#[derive(Debug, Clone, Default)]
pub struct InMemoryBuffer {
    rows: Option<TrajectoryRows>,
    advantages: Vec<f32>,
}

impl InMemoryBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TrajectoryBuffer for InMemoryBuffer {
    fn push(&mut self, rows: TrajectoryRows, advantages: Vec<f32>) -> Result<()> {
        if advantages.len() != rows.len() {
            return Err(Error::shape(
                "advantages",
                format!("{} values, one per row", rows.len()),
                [advantages.len()],
            ));
        }
        self.rows = Some(match self.rows.take() {
            None => rows,
            Some(stored) => stored.concat(rows),
        });
        self.advantages.extend(advantages);
        Ok(())
    }

    fn len(&self) -> usize {
        self.advantages.len()
    }

    fn clear(&mut self) {
        self.rows = None;
        self.advantages.clear();
    }

    fn gather(&self, indices: &[usize]) -> Result<(TrajectoryRows, Vec<f32>)> {
        let rows = self
            .rows
            .as_ref()
            .ok_or_else(|| Error::invalid("buffer", "empty", "rows pushed before gathering"))?;
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::invalid(
                "row index",
                bad,
                format!("an index below the {} stored rows", self.len()),
            ));
        }
        let advantages = indices.iter().map(|&i| self.advantages[i]).collect();
        Ok((rows.select(indices), advantages))
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use super::*;

    fn rows(count: usize) -> TrajectoryRows {
        let device = Device::default();
        let values: Vec<f32> = (0..count * 2).map(|v| v as f32).collect();
        let latents = Tensor::<2>::from_data(TensorData::new(values, [count, 2]), &device);
        TrajectoryRows {
            latents: latents.clone(),
            next: latents.clone() + 1.0,
            old_mean: latents,
            sigma: vec![0.5; count],
            sigma_next: vec![0.4; count],
            std: vec![0.1; count],
            velocity_scale: vec![-0.1; count],
            step: vec![0; count],
            sample: (0..count).collect(),
            group: vec![0; count],
        }
    }

    #[test]
    fn minibatches_are_disjoint_cover_the_rollout_and_follow_the_seed() {
        let mut buffer = InMemoryBuffer::new();
        buffer
            .push(rows(23), (0..23).map(|a| a as f32).collect())
            .unwrap();
        let batches = buffer.minibatches(4, &mut Rng::seed_from(1)).unwrap();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![6, 6, 6, 5]);
        let mut all: Vec<usize> = batches.concat();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert_eq!(
            batches,
            buffer.minibatches(4, &mut Rng::seed_from(1)).unwrap()
        );
        assert_ne!(
            batches,
            buffer.minibatches(4, &mut Rng::seed_from(2)).unwrap()
        );
        assert!(buffer.minibatches(24, &mut Rng::seed_from(1)).is_err());
        assert!(buffer.minibatches(0, &mut Rng::seed_from(1)).is_err());
    }

    #[test]
    fn gather_returns_the_rows_and_their_advantages() {
        let mut buffer = InMemoryBuffer::new();
        buffer.push(rows(5), vec![0.0, 1.0, 2.0, 3.0, 4.0]).unwrap();
        let (picked, advantages) = buffer.gather(&[3, 1]).unwrap();
        assert_eq!(advantages, vec![3.0, 1.0]);
        assert_eq!(picked.sample, vec![3, 1]);
        let latents = picked
            .latents
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(latents, vec![6.0, 7.0, 2.0, 3.0]);
        assert!(buffer.gather(&[5]).is_err());
        assert!(
            buffer.push(rows(2), vec![1.0]).is_err(),
            "one advantage per row"
        );
        buffer.clear();
        assert!(buffer.is_empty());
    }
}
