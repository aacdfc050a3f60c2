//! Rewards: score a batch of final samples, and combine several rewards.
//!
//! - [`Reward`]: scores final latents with their conditions; [`HostReward`] applies a
//!   function to each sample's values; [`RewardSet`] weighs several;
//! - [`ImageReward`]: scores RGB images with their prompts; [`JpegSize`] is the JPEG
//!   (in)compressibility of DDPO and flow_grpo; [`DecodedReward`] scores latents with any of
//!   them through a shared [`LatentDecoder`] (an [`ImageDecoder`]: the VAE);
//! - [`ClipPreferenceReward`] (PickScore, CLIPScore, HPSv2) and [`AestheticReward`]: CLIP-based
//!   preference rewards run in process on the training device;
//! - [`http`]: clients of reward servers (UniRL's service, flow_grpo's GenEval server,
//!   verl-omni's latent protocol).

mod aesthetic;
mod clip_embedder;
mod decoded;
pub mod http;
mod image;
mod jpeg;
mod preference;

pub use aesthetic::AestheticReward;
pub use clip_embedder::DEFAULT_CLIP_BATCH_SIZE;
pub use decoded::{DEFAULT_DECODE_CHUNK, DecodedReward, ImageDecoder, LatentDecoder};
pub use image::ImageReward;
pub use jpeg::{JPEG_QUALITY, JpegSize};
pub use preference::{CLIPSCORE_DIVISOR, ClipPreference, ClipPreferenceReward, PICKSCORE_DIVISOR};

use burn::prelude::*;

use crate::advantage::{RewardCombination, check_finite_rewards};
use crate::error::{Error, Result};
use crate::tensor_util::host_values;

/// Scores a batch of final samples `[B, N]` with their B conditions: one value per sample.
pub trait Reward<C>: Send + Sync {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;

    /// One finite score per sample, or an error.
    fn score(&self, samples: &Tensor<2>, conditions: &C) -> Result<Vec<f32>>;
}

/// A reward computed on the host from each sample's N values.
pub struct HostReward<F> {
    name: String,
    score_one: F,
}

impl<F: Fn(&[f32]) -> f32 + Send + Sync> HostReward<F> {
    /// A reward named `name` that applies `score_one` to each sample's latent values.
    pub fn new(name: impl Into<String>, score_one: F) -> Self {
        Self {
            name: name.into(),
            score_one,
        }
    }
}

impl<C, F: Fn(&[f32]) -> f32 + Send + Sync> Reward<C> for HostReward<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, samples: &Tensor<2>, _: &C) -> Result<Vec<f32>> {
        let [_, dims] = samples.dims();
        let values = host_values(samples.clone())?;
        Ok(values.chunks(dims).map(&self.score_one).collect())
    }
}

/// Several weighted rewards and how they combine into one advantage.
pub struct RewardSet<C> {
    rewards: Vec<(Box<dyn Reward<C>>, f64)>,
    combination: RewardCombination,
}

/// The scores of one batch, one row per reward.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardScores {
    /// Reward names, in the set's order.
    pub names: Vec<String>,
    /// `values[k][i]`: reward k of sample i.
    pub values: Vec<Vec<f32>>,
}

impl<C> RewardSet<C> {
    /// A set with one reward of weight 1.
    pub fn single(reward: impl Reward<C> + 'static) -> Self {
        Self {
            rewards: vec![(Box::new(reward), 1.0)],
            combination: RewardCombination::WeightedSum,
        }
    }

    /// An empty set that combines its rewards by `combination`.
    pub fn new(combination: RewardCombination) -> Self {
        Self {
            rewards: Vec::new(),
            combination,
        }
    }

    /// Adds a reward with its weight.
    pub fn with(mut self, reward: impl Reward<C> + 'static, weight: f64) -> Self {
        self.rewards.push((Box::new(reward), weight));
        self
    }

    /// The weights, in order.
    pub fn weights(&self) -> Vec<f64> {
        self.rewards.iter().map(|(_, w)| *w).collect()
    }

    /// How the rewards combine.
    pub fn combination(&self) -> RewardCombination {
        self.combination
    }

    /// Scores `samples` with every reward, checking that each returns one finite value per
    /// sample.
    pub fn score(&self, samples: &Tensor<2>, conditions: &C) -> Result<RewardScores> {
        if self.rewards.is_empty() {
            return Err(Error::invalid("rewards", "none", "at least one reward"));
        }
        let batch = samples.dims()[0];
        let mut scores = RewardScores {
            names: Vec::new(),
            values: Vec::new(),
        };
        for (index, (reward, _)) in self.rewards.iter().enumerate() {
            let values = reward.score(samples, conditions)?;
            if values.len() != batch {
                return Err(Error::shape(
                    format!("scores of reward {index} ({:?})", reward.name()),
                    format!("{batch} values, one per sample"),
                    [values.len()],
                ));
            }
            check_finite_rewards(&values, index)?;
            scores.names.push(reward.name().to_owned());
            scores.values.push(values);
        }
        Ok(scores)
    }
}
