//! Group-relative advantages (ALGORITHMS.md §5).
//!
//! Samples come in groups of G siblings that share a condition. A sample's advantage is its
//! reward minus its group's mean, divided by a std (of its group, or of the whole batch)
//! plus `eps`:
//!
//! ```
//! use flow_rl::advantage::{AdvantageConfig, StdScope};
//!
//! let rewards = [1.0, 2.0, 3.0, 4.0, 0.5, 0.5, 0.5, 0.5];
//! let advantages = AdvantageConfig::new()
//!     .with_std_scope(StdScope::Group)
//!     .compute(&rewards, 4)?;
//! assert!(advantages.values[3] > 0.0 && advantages.values[0] < 0.0);
//! assert_eq!(&advantages.values[4..], &[0.0; 4]); // equal rewards teach nothing
//! assert_eq!(advantages.zero_std_group_fraction, 0.5);
//! # Ok::<(), flow_rl::Error>(())
//! ```

mod tracker;

pub use tracker::{PromptStatTracker, PromptStatTrackerConfig, PromptStats};

use burn::config::Config;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which std normalises the centred rewards.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum StdScope {
    /// Each group's own population std (Flow-GRPO's default).
    Group,
    /// One population std over every reward of the rollout (the Flow-DPPO recipe).
    Batch,
}

/// How several rewards become one advantage.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum RewardCombination {
    /// Weighted sum of the raw rewards, then the usual group-relative normalisation.
    WeightedSum,
    /// GDPO: normalise each reward within its group, take the weighted sum, then normalise
    /// that sum over the batch. Rewards on different scales then count by their weights.
    Gdpo,
}

/// Configuration of group-relative advantages; the defaults are the Flow-DPPO recipe.
#[derive(Config, Debug, PartialEq)]
pub struct AdvantageConfig {
    /// The std that divides the centred rewards.
    #[config(default = "StdScope::Batch")]
    pub std_scope: StdScope,
    /// Added to the std (outside the square root), > 0: 1e-8 in Flow-DPPO, 1e-4 in Flow-GRPO.
    #[config(default = 1e-8)]
    pub eps: f64,
    /// Clip advantages to `±clip` (Flow-GRPO: 5); `None` leaves them as they are.
    pub clip: Option<f64>,
}

/// Advantages of one rollout, one per sample, in the rewards' order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advantages {
    /// One advantage per sample.
    pub values: Vec<f32>,
    /// The fraction of groups whose rewards were all equal, whose advantages are therefore
    /// exactly zero: a high value means the reward cannot tell the samples apart.
    pub zero_std_group_fraction: f64,
}

impl AdvantageConfig {
    /// Advantages of `rewards` (B values, groups of `group_size` consecutive samples).
    ///
    /// Errors if `group_size` is 0 or does not divide B, if B is 0, if a reward is NaN or
    /// infinite (naming the sample), or if `eps` or `clip` are invalid.
    pub fn compute(&self, rewards: &[f32], group_size: usize) -> Result<Advantages> {
        self.compute_multi(
            &[rewards],
            &[1.0],
            RewardCombination::WeightedSum,
            group_size,
        )
    }

    /// Advantages from K rewards per sample (`rewards[k][i]` is reward k of sample i), combined
    /// with `weights` (K values) by `combination`.
    ///
    /// A group counts as zero-std when every reward is constant within it; its advantages
    /// are exactly zero.
    pub fn compute_multi<R: AsRef<[f32]>>(
        &self,
        rewards: &[R],
        weights: &[f64],
        combination: RewardCombination,
        group_size: usize,
    ) -> Result<Advantages> {
        self.validate()?;
        let table = to_f64_table(rewards, weights, group_size)?;
        let batch = table[0].len();
        let groups = batch / group_size;
        let constant: Vec<bool> = (0..groups)
            .map(|g| {
                table
                    .iter()
                    .all(|reward| is_constant(&reward[g * group_size..(g + 1) * group_size]))
            })
            .collect();
        let mut values = match combination {
            RewardCombination::WeightedSum => {
                // The same f32 sums as the per-prompt tracker's path of the trainer.
                let summed: Vec<f64> = weighted_sum(rewards, weights)?
                    .into_iter()
                    .map(f64::from)
                    .collect();
                normalize(&summed, group_size, self.std_scope, self.eps)
            }
            RewardCombination::Gdpo => {
                let per_reward: Vec<Vec<f64>> = table
                    .iter()
                    .map(|reward| normalize(reward, group_size, StdScope::Group, self.eps))
                    .collect();
                let summed = checked_weighted_sum(
                    &per_reward,
                    weights,
                    "weighted sum of normalised rewards (GDPO)",
                )?;
                standardize(&summed, self.eps)
            }
        };
        for (g, _) in constant.iter().enumerate().filter(|(_, c)| **c) {
            values[g * group_size..(g + 1) * group_size].fill(0.0);
        }
        Ok(Advantages {
            values: clip_values(values, self.clip),
            zero_std_group_fraction: constant.iter().filter(|c| **c).count() as f64 / groups as f64,
        })
    }

    fn validate(&self) -> Result<()> {
        check_eps(self.eps)?;
        check_clip(self.clip)
    }
}

/// Checks an optional advantage clip: finite and positive.
fn check_clip(clip: Option<f64>) -> Result<()> {
    match clip {
        Some(clip) if !(clip.is_finite() && clip > 0.0) => {
            Err(Error::invalid("clip", clip, "a finite clip > 0, or None"))
        }
        _ => Ok(()),
    }
}

/// The values clipped to `±clip` (if any), as f32.
fn clip_values(values: Vec<f64>, clip: Option<f64>) -> Vec<f32> {
    let bound = clip.unwrap_or(f64::INFINITY);
    values
        .into_iter()
        .map(|v| v.clamp(-bound, bound) as f32)
        .collect()
}

/// Checks the table's shape and values, and `group_size` against it, and converts it to f64.
fn to_f64_table<R: AsRef<[f32]>>(
    rewards: &[R],
    weights: &[f64],
    group_size: usize,
) -> Result<Vec<Vec<f64>>> {
    let table = checked_table(rewards, weights)?;
    check_group_size(group_size, table[0].len())?;
    Ok(table)
}

/// Checks that there is at least one reward, one finite weight per reward, equal lengths and
/// finite values, and converts the table to f64.
fn checked_table<R: AsRef<[f32]>>(rewards: &[R], weights: &[f64]) -> Result<Vec<Vec<f64>>> {
    if rewards.is_empty() {
        return Err(Error::invalid(
            "rewards",
            "[]",
            "at least one reward per sample",
        ));
    }
    if weights.len() != rewards.len() {
        return Err(Error::shape(
            "weights",
            format!("{} weights, one per reward", rewards.len()),
            [weights.len()],
        ));
    }
    if let Some(k) = weights.iter().position(|w| !w.is_finite()) {
        return Err(Error::invalid(
            format!("weight {k}"),
            weights[k],
            "a finite weight",
        ));
    }
    let batch = rewards[0].as_ref().len();
    rewards
        .iter()
        .enumerate()
        .map(|(k, reward)| {
            let reward = reward.as_ref();
            if reward.len() != batch {
                return Err(Error::shape(
                    format!("rewards[{k}]"),
                    format!("{batch} values, like rewards[0]"),
                    [reward.len()],
                ));
            }
            check_finite_rewards(reward, k)?;
            Ok(reward.iter().map(|&r| r as f64).collect())
        })
        .collect()
}

/// Checks that `group_size` is positive and divides a non-empty batch.
pub(crate) fn check_group_size(group_size: usize, batch: usize) -> Result<()> {
    if batch == 0 {
        return Err(Error::invalid("rewards", "[]", "at least one sample"));
    }
    if group_size == 0 || !batch.is_multiple_of(group_size) {
        return Err(Error::invalid(
            "group_size",
            group_size,
            format!("a positive divisor of the batch size {batch}"),
        ));
    }
    Ok(())
}

/// Errors on the first NaN or infinite reward, naming the sample.
pub(crate) fn check_finite_rewards(rewards: &[f32], reward_index: usize) -> Result<()> {
    match rewards.iter().position(|r| !r.is_finite()) {
        Some(sample) => Err(Error::NonFinite {
            what: format!("reward {reward_index} of sample"),
            index: sample,
            value: rewards[sample] as f64,
        }),
        None => Ok(()),
    }
}

/// The weighted sum `Σ_k weights[k]·values[k][i]` of K rewards per sample (`values[k][i]` is
/// reward k of sample i; K values of B samples in, B sums out), computed in f64.
///
/// Errors if there are no rewards, if `weights` does not hold one finite weight per reward,
/// if the rewards differ in length or hold NaN or infinities, and with [`Error::NonFinite`]
/// naming the first sample whose sum does not fit an f32 (a weight of 1e308 on a reward of 1).
pub(crate) fn weighted_sum<R: AsRef<[f32]>>(values: &[R], weights: &[f64]) -> Result<Vec<f32>> {
    let table = checked_table(values, weights)?;
    let sums = checked_weighted_sum(&table, weights, "weighted sum of rewards")?;
    Ok(sums.into_iter().map(|sum| sum as f32).collect())
}

/// `Σ_k weights[k]·table[k][i]` per sample; an error naming the first sample `i` whose sum
/// is beyond f32's range, where advantages live (and beyond which their std overflows).
fn checked_weighted_sum(table: &[Vec<f64>], weights: &[f64], what: &str) -> Result<Vec<f64>> {
    let sums: Vec<f64> = (0..table[0].len())
        .map(|i| table.iter().zip(weights).map(|(r, w)| w * r[i]).sum())
        .collect();
    match sums
        .iter()
        .position(|sum| !(sum.is_finite() && sum.abs() <= f32::MAX as f64))
    {
        Some(sample) => Err(Error::NonFinite {
            what: format!("{what} (beyond f32's range) of sample"),
            index: sample,
            value: sums[sample] as f32 as f64,
        }),
        None => Ok(sums),
    }
}

/// `(x − mean_group) / (std + eps)`, with the std of `scope`.
fn normalize(values: &[f64], group_size: usize, scope: StdScope, eps: f64) -> Vec<f64> {
    let batch_std = population_std(values);
    values
        .chunks(group_size)
        .flat_map(|group| {
            let mean = group.iter().sum::<f64>() / group.len() as f64;
            let std = match scope {
                StdScope::Group => population_std(group),
                StdScope::Batch => batch_std,
            };
            group.iter().map(move |x| (x - mean) / (std + eps))
        })
        .collect()
}

/// `(x − mean) / (std + eps)` over all values.
fn standardize(values: &[f64], eps: f64) -> Vec<f64> {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let std = population_std(values);
    values.iter().map(|x| (x - mean) / (std + eps)).collect()
}

/// `eps` keeps a zero std from dividing by zero, so it must be positive.
pub(crate) fn check_eps(eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::invalid(
            "eps",
            eps,
            "a finite eps > 0 (1e-8 in Flow-DPPO, 1e-4 in Flow-GRPO)",
        ));
    }
    Ok(())
}

pub(crate) fn population_std(values: &[f64]) -> f64 {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

pub(crate) fn is_constant(values: &[f64]) -> bool {
    values.iter().all(|&v| v == values[0])
}

#[cfg(test)]
mod tests;
