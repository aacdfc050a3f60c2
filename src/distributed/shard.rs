//! Which groups, samples and trajectory rows of a rollout belong to one worker.

use std::ops::Range;

use crate::error::{Error, Result};

/// One worker's share of a rollout: a contiguous block of whole groups.
///
/// Rows are step-major, as [`TrajectoryRows`](crate::rollout::TrajectoryRows) orders them:
/// global row `s·B + b` is SDE step `s` of global sample `b` (B samples in all), and local
/// row `s·B_w + b_w` the same step of this worker's sample `b_w` (B_w samples).
///
/// ```
/// use flow_rl::distributed::RolloutShard;
///
/// // 8 groups of 2 on 2 workers: worker 1 holds groups 4..8, samples 8..16.
/// let shard = RolloutShard::new(8, 2, 2, 1)?;
/// assert_eq!((shard.groups(), shard.samples()), (4..8, 8..16));
/// // Global row 16 + 9 (step 1, sample 9) is worker 1's local row 8 + 1.
/// assert_eq!(shard.local_row(25), Some(9));
/// assert_eq!(shard.local_row(3), None);
/// assert!(RolloutShard::new(3, 2, 2, 0).is_err());
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutShard {
    /// Groups of the whole rollout.
    pub total_groups: usize,
    /// Samples per group (G).
    pub group_size: usize,
    /// The number of workers.
    pub world_size: usize,
    /// This worker's rank.
    pub rank: usize,
}

impl RolloutShard {
    /// The share of worker `rank` of `world_size`. Errors unless `total_groups` divides by
    /// `world_size` (whole groups go to each worker, so group statistics stay local).
    pub fn new(
        total_groups: usize,
        group_size: usize,
        world_size: usize,
        rank: usize,
    ) -> Result<Self> {
        if world_size == 0 || rank >= world_size {
            return Err(Error::invalid(
                "rank",
                format!("{rank} of {world_size} workers"),
                "a rank below a world size of at least 1",
            ));
        }
        if !total_groups.is_multiple_of(world_size) {
            return Err(Error::invalid(
                "groups_per_rollout",
                total_groups,
                format!(
                    "a multiple of the world size {world_size}, so that every worker gets \
                     the same number of whole groups"
                ),
            ));
        }
        Ok(Self {
            total_groups,
            group_size,
            world_size,
            rank,
        })
    }

    /// This worker's groups, as global group indices.
    pub fn groups(&self) -> Range<usize> {
        let per_worker = self.total_groups / self.world_size;
        self.rank * per_worker..(self.rank + 1) * per_worker
    }

    /// This worker's samples, as global sample indices.
    pub fn samples(&self) -> Range<usize> {
        let groups = self.groups();
        groups.start * self.group_size..groups.end * self.group_size
    }

    /// Samples of the whole rollout (B).
    pub fn total_samples(&self) -> usize {
        self.total_groups * self.group_size
    }

    /// This worker's local row for global row `row`, or `None` if another worker owns it.
    pub fn local_row(&self, row: usize) -> Option<usize> {
        let (step, sample) = (row / self.total_samples(), row % self.total_samples());
        let samples = self.samples();
        samples
            .contains(&sample)
            .then(|| step * samples.len() + (sample - samples.start))
    }

    /// The local rows of this worker among the global rows `rows`, in their order.
    pub fn local_rows(&self, rows: &[usize]) -> Vec<usize> {
        rows.iter().filter_map(|&row| self.local_row(row)).collect()
    }
}
