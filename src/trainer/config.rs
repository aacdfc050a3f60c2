//! The trainer's configuration.

use burn::config::Config;

use crate::advantage::{AdvantageConfig, PromptStatTrackerConfig};
use crate::error::{Error, Result};
use crate::kernel::{FlowSdeConfig, KernelConfig};
use crate::objective::{FlowDppoConfig, ObjectiveConfig};
use crate::schedule::{SdeStepSelection, SigmaScheduleConfig};

/// Configuration of a [`Trainer`](super::Trainer). The defaults follow the Flow-DPPO recipe (ALGORITHMS.md
/// §9) except the AdamW parameters, which default to PyTorch's.
#[derive(Config, Debug)]
pub struct TrainerConfig {
    /// The latent dimension N of one sample (flattened).
    pub latent_dims: usize,
    /// Samples per condition (G).
    #[config(default = 16)]
    pub group_size: usize,
    /// Conditions (groups) per rollout; `Trainer::step` expects this many.
    #[config(default = 48)]
    pub groups_per_rollout: usize,
    /// The σ schedule (T and shift).
    #[config(default = "SigmaScheduleConfig::new()")]
    pub schedule: SigmaScheduleConfig,
    /// The kernel of the stochastic steps (and its η).
    #[config(default = "KernelConfig::FlowSde(FlowSdeConfig::new())")]
    pub kernel: KernelConfig,
    /// Which steps are stochastic and trained.
    #[config(
        default = "SdeStepSelection::RandomSubset { window_start: 0.0, window_end: 0.5, count: 3 }"
    )]
    pub sde_steps: SdeStepSelection,
    /// The trust-region objective; [`Trainer::with_objective`](super::Trainer::with_objective) overrides it with any
    /// implementation.
    #[config(default = "ObjectiveConfig::FlowDppo(FlowDppoConfig::new())")]
    pub objective: ObjectiveConfig,
    /// β of the KL penalty to the reference policy (needs [`Trainer::with_reference`](super::Trainer::with_reference)).
    #[config(default = 0.0)]
    pub reference_beta: f64,
    /// Group-relative advantages.
    #[config(default = "AdvantageConfig::new()")]
    pub advantage: AdvantageConfig,
    /// Centre advantages on per-prompt means across rollouts instead of group means; needs
    /// [`Trainer::step_with_prompts`](super::Trainer::step_with_prompts).
    pub prompt_tracker: Option<PromptStatTrackerConfig>,
    /// Start every member of a group from the same noise.
    #[config(default = false)]
    pub shared_initial_noise: bool,
    /// AdamW learning rate.
    #[config(default = 3e-4)]
    pub learning_rate: f64,
    /// AdamW β₁.
    #[config(default = 0.9)]
    pub adam_beta1: f32,
    /// AdamW β₂.
    #[config(default = 0.999)]
    pub adam_beta2: f32,
    /// AdamW ε (PyTorch: 1e-8; burn's own default is 1e-5).
    #[config(default = 1e-8)]
    pub adam_epsilon: f32,
    /// AdamW decoupled weight decay (PyTorch: 1e-2; the Flow-DPPO recipe uses 0).
    #[config(default = 1e-2)]
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value; `None` disables clipping.
    #[config(default = "Some(1.0)")]
    pub grad_clip_norm: Option<f64>,
    /// Disjoint mini-batches (optimiser steps) per rollout and epoch.
    #[config(default = 2)]
    pub minibatches_per_rollout: usize,
    /// Samples per policy forward pass in the rollout; `None` runs all samples of a step in
    /// one pass. Only memory and speed depend on it: every chunk size gives the same rows
    /// and samples.
    pub rollout_batch_size: Option<usize>,
    /// Rows per forward and backward pass in the updates; `None` (or a value at least the
    /// mini-batch's rows) is one pass per mini-batch. Gradients accumulate over a
    /// mini-batch's micro-batches, each loss weighted by its share of the rows, so the
    /// update is the one-pass update (ALGORITHMS.md §7).
    pub micro_batch_rows: Option<usize>,
    /// Passes over each rollout.
    #[config(default = 1)]
    pub inner_epochs: usize,
    /// Seed of every random draw (step selection, noise, mini-batch order).
    #[config(default = 0)]
    pub seed: u64,
    /// Append one JSON line of [`StepMetrics`](crate::metrics::StepMetrics) per step to this file.
    pub metrics_path: Option<String>,
}

impl TrainerConfig {
    /// The configuration as JSON, without the settings that may differ between the runs a
    /// checkpoint resumes and between the workers of one run: where metrics go, and the
    /// rollout chunk and micro-batch sizes, which only bound memory (a run resumed on a
    /// smaller GPU may lower them; its updates then equal the original's up to rounding).
    pub(crate) fn comparable_json(&self) -> String {
        let mut config = self.clone();
        config.metrics_path = None;
        config.rollout_batch_size = None;
        config.micro_batch_rows = None;
        burn::config::config_to_json(&config)
    }

    /// Checks every count and rate; called by [`Trainer::new`](super::Trainer::new).
    pub fn validate(&self) -> Result<()> {
        let config = self;
        for (name, value) in [
            ("latent_dims", config.latent_dims),
            ("group_size", config.group_size),
            ("groups_per_rollout", config.groups_per_rollout),
            ("minibatches_per_rollout", config.minibatches_per_rollout),
            ("inner_epochs", config.inner_epochs),
        ] {
            if value == 0 {
                return Err(Error::invalid(name, value, "at least 1"));
            }
        }
        for (name, value) in [
            ("rollout_batch_size", config.rollout_batch_size),
            ("micro_batch_rows", config.micro_batch_rows),
        ] {
            if value == Some(0) {
                return Err(Error::invalid(name, 0, "at least 1, or None for one pass"));
            }
        }
        if !(config.learning_rate.is_finite() && config.learning_rate > 0.0) {
            return Err(Error::invalid(
                "learning_rate",
                config.learning_rate,
                "a finite rate > 0",
            ));
        }
        for (name, beta) in [
            ("adam_beta1", config.adam_beta1),
            ("adam_beta2", config.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::invalid(name, beta, "a value in [0, 1)"));
            }
        }
        if !(config.adam_epsilon.is_finite() && config.adam_epsilon > 0.0) {
            return Err(Error::invalid(
                "adam_epsilon",
                config.adam_epsilon,
                "a finite ε > 0 (PyTorch's default is 1e-8)",
            ));
        }
        if !(config.weight_decay.is_finite() && config.weight_decay >= 0.0) {
            return Err(Error::invalid(
                "weight_decay",
                config.weight_decay,
                "a finite decay ≥ 0",
            ));
        }
        if !(config.reference_beta.is_finite() && config.reference_beta >= 0.0) {
            return Err(Error::invalid(
                "reference_beta",
                config.reference_beta,
                "a finite β ≥ 0",
            ));
        }
        if let Some(norm) = config.grad_clip_norm
            && !(norm.is_finite() && norm > 0.0)
        {
            return Err(Error::invalid(
                "grad_clip_norm",
                norm,
                "a finite norm > 0, or None",
            ));
        }
        Ok(())
    }
}
