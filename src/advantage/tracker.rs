//! Per-prompt reward statistics across rollouts (Flow-GRPO's stat tracker).

use std::collections::{BTreeMap, VecDeque};

use burn::config::Config;
use serde::{Deserialize, Serialize};

use super::{
    Advantages, StdScope, check_clip, check_eps, check_finite_rewards, clip_values, is_constant,
    population_std,
};
use crate::error::{Error, Result};

/// Configuration of [`PromptStatTracker`]; the defaults are Flow-GRPO's.
#[derive(Config, Debug, PartialEq)]
pub struct PromptStatTrackerConfig {
    /// How many of a prompt's most recent rollouts are kept; 1 uses the current one only.
    #[config(default = 1)]
    pub history: usize,
    /// `Group`: each prompt's own std over its history; `Batch`: the std of this rollout's
    /// rewards.
    #[config(default = "StdScope::Group")]
    pub std_scope: StdScope,
    /// Added to the std, > 0.
    #[config(default = 1e-4)]
    pub eps: f64,
    /// Clip advantages to `±clip`.
    pub clip: Option<f64>,
}

impl PromptStatTrackerConfig {
    /// Builds an empty tracker, checking `history ≥ 1`, `eps > 0` and `clip > 0`.
    pub fn init(&self) -> Result<PromptStatTracker> {
        if self.history == 0 {
            return Err(Error::invalid("history", 0, "at least 1 rollout"));
        }
        check_eps(self.eps)?;
        check_clip(self.clip)?;
        Ok(PromptStatTracker {
            config: self.clone(),
            rewards: BTreeMap::new(),
        })
    }
}

/// Mean and std of one prompt's retained rewards.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PromptStats {
    /// Mean reward.
    pub mean: f64,
    /// Population std of the rewards.
    pub std: f64,
    /// How many rewards are retained.
    pub count: usize,
    /// Whether every retained reward is equal (the prompt's advantages are then zero).
    pub constant: bool,
}

/// Centres each reward on its prompt's mean over the prompt's last `history` rollouts, so a
/// prompt seen again is judged against more than its current siblings.
///
/// Serialisable, so it can be saved in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptStatTracker {
    config: PromptStatTrackerConfig,
    rewards: BTreeMap<String, VecDeque<Vec<f32>>>,
}

impl PromptStatTracker {
    /// Records one rollout's rewards (one prompt per sample) and returns their advantages.
    ///
    /// Errors if the lengths differ, the rollout is empty, or a reward is not finite.
    pub fn update<P: AsRef<str>>(&mut self, prompts: &[P], rewards: &[f32]) -> Result<Advantages> {
        if prompts.len() != rewards.len() {
            return Err(Error::shape(
                "prompts",
                format!("{} prompts, one per reward", rewards.len()),
                [prompts.len()],
            ));
        }
        if rewards.is_empty() {
            return Err(Error::invalid("rewards", "[]", "at least one sample"));
        }
        check_finite_rewards(rewards, 0)?;
        let mut this_rollout: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
        for (prompt, &reward) in prompts.iter().zip(rewards) {
            this_rollout
                .entry(prompt.as_ref())
                .or_default()
                .push(reward);
        }
        for (prompt, values) in &this_rollout {
            let history = self.rewards.entry((*prompt).to_owned()).or_default();
            history.push_back(values.clone());
            while history.len() > self.config.history {
                history.pop_front();
            }
        }
        let batch: Vec<f64> = rewards.iter().map(|&r| r as f64).collect();
        let batch_std = population_std(&batch);
        let stats: BTreeMap<&str, PromptStats> = this_rollout
            .keys()
            .map(|prompt| (*prompt, self.stats(prompt).expect("recorded above")))
            .collect();
        let values = prompts
            .iter()
            .zip(&batch)
            .map(|(prompt, reward)| {
                let stats = stats[prompt.as_ref()];
                if stats.constant {
                    return 0.0;
                }
                let std = match self.config.std_scope {
                    StdScope::Group => stats.std,
                    StdScope::Batch => batch_std,
                };
                (reward - stats.mean) / (std + self.config.eps)
            })
            .collect();
        let constant = stats.values().filter(|s| s.constant).count();
        Ok(Advantages {
            values: clip_values(values, self.config.clip),
            zero_std_group_fraction: constant as f64 / stats.len() as f64,
        })
    }

    /// The retained statistics of `prompt`, if it has been seen.
    pub fn stats(&self, prompt: &str) -> Option<PromptStats> {
        let history = self.rewards.get(prompt)?;
        let values: Vec<f64> = history.iter().flatten().map(|&r| r as f64).collect();
        Some(PromptStats {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            std: population_std(&values),
            count: values.len(),
            constant: is_constant(&values),
        })
    }

    /// The number of distinct prompts seen.
    pub fn prompts(&self) -> usize {
        self.rewards.len()
    }

    /// Forgets every prompt.
    pub fn clear(&mut self) {
        self.rewards.clear();
    }
}
