//! The training loop: rollout → reward → advantages → epochs × mini-batches → optimiser step.

mod checkpoint;
mod config;
mod grad_norm;

pub use config::TrainerConfig;

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use crate::advantage::{PromptStatTracker, PromptStatTrackerConfig};
use crate::buffer::{InMemoryBuffer, TrajectoryBuffer};
use crate::error::{Error, Result};
use crate::kernel::StepKernel;
use crate::metrics::{JsonLinesWriter, RewardStats, StepMetrics};
use crate::objective::{ObjectiveMetrics, ReferenceKlConfig, RowBatch, TrustRegionObjective};
use crate::policy::{ConditionBatch, FlowPolicy, checked_velocity};
use crate::reward::RewardSet;
use crate::rng::Rng;
use crate::rollout::{RolloutConfig, TrajectoryRows, first_device, rollout};
use crate::schedule::SigmaSchedule;
use crate::tensor_util::vector;
use grad_norm::{global_grad_norm, scale_grads};

/// Online RL fine-tuning of a [`FlowPolicy`] with a trust-region objective.
pub struct Trainer<P: FlowPolicy> {
    config: TrainerConfig,
    policy: P,
    reference: Option<P>,
    objective: Box<dyn TrustRegionObjective>,
    kernel: Box<dyn StepKernel>,
    schedule: SigmaSchedule,
    optimizer: ModuleOptimizer,
    buffer: InMemoryBuffer,
    rng: Rng,
    step: usize,
    tracker: Option<PromptStatTracker>,
    device: Device,
    metrics_log: Option<JsonLinesWriter>,
}

impl<P: FlowPolicy> Trainer<P> {
    /// A trainer for `policy`, whose parameters live on the autodiff `device`.
    pub fn new(config: TrainerConfig, policy: P, device: &Device) -> Result<Self> {
        if !device.is_autodiff() {
            return Err(Error::invalid(
                "device",
                format!("{device:?}"),
                "an autodiff device (`device.autodiff()`)",
            ));
        }
        let policy_device = first_device(&policy)?;
        if !policy_device.is_autodiff() {
            // `fork`/`to_device` onto an autodiff device keep a plain device's tensors
            // untracked, and such a policy would silently never learn.
            return Err(Error::invalid(
                "policy",
                format!("parameters on {policy_device:?}"),
                "parameters on an autodiff device: build the policy on `device.autodiff()` \
                 or call `policy.train()` first",
            ));
        }
        config.validate()?;
        let metrics_log = config
            .metrics_path
            .as_ref()
            .map(JsonLinesWriter::append)
            .transpose()?;
        let tracker = config
            .prompt_tracker
            .as_ref()
            .map(PromptStatTrackerConfig::init)
            .transpose()?;
        let optimizer = AdamWConfig::new()
            .with_beta_1(config.adam_beta1)
            .with_beta_2(config.adam_beta2)
            .with_epsilon(config.adam_epsilon)
            .with_weight_decay(config.weight_decay)
            .init();
        Ok(Self {
            objective: config.objective.init()?,
            kernel: config.kernel.init()?,
            schedule: config.schedule.init()?,
            rng: Rng::seed_from(config.seed),
            config,
            policy,
            reference: None,
            optimizer,
            buffer: InMemoryBuffer::new(),
            step: 0,
            tracker,
            device: device.clone(),
            metrics_log,
        })
    }

    /// Replaces the configured objective with any implementation.
    pub fn with_objective(mut self, objective: Box<dyn TrustRegionObjective>) -> Self {
        self.objective = objective;
        self
    }

    /// Sets the frozen reference policy of the KL penalty (`reference_beta`).
    pub fn with_reference(mut self, reference: P) -> Self {
        self.reference = Some(reference.valid());
        self
    }

    /// The policy being trained.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The trained policy.
    pub fn into_policy(self) -> P {
        self.policy
    }

    /// The number of completed steps.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The configuration.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// One rollout of `groups_per_rollout` groups (one condition each), its rewards and
    /// advantages, and `inner_epochs × minibatches_per_rollout` optimiser updates.
    ///
    /// With a `prompt_tracker` configured, use [`Trainer::step_with_prompts`] instead.
    pub fn step(
        &mut self,
        conditions: &P::Condition,
        rewards: &RewardSet<P::Condition>,
    ) -> Result<StepMetrics> {
        self.step_inner(conditions, None, rewards)
    }

    /// [`Trainer::step`] with one prompt key per group, for the per-prompt statistics
    /// tracker (`TrainerConfig::prompt_tracker`): advantages are then centred on each
    /// prompt's mean over its recent rollouts, and several rewards are combined by their
    /// weighted sum.
    pub fn step_with_prompts<S: AsRef<str>>(
        &mut self,
        conditions: &P::Condition,
        prompts: &[S],
        rewards: &RewardSet<P::Condition>,
    ) -> Result<StepMetrics> {
        if prompts.len() != conditions.len() {
            return Err(Error::shape(
                "prompts",
                format!("{} prompt keys, one per condition", conditions.len()),
                [prompts.len()],
            ));
        }
        let keys: Vec<&str> = prompts.iter().map(AsRef::as_ref).collect();
        self.step_inner(conditions, Some(&keys), rewards)
    }

    fn step_inner(
        &mut self,
        conditions: &P::Condition,
        prompts: Option<&[&str]>,
        rewards: &RewardSet<P::Condition>,
    ) -> Result<StepMetrics> {
        if conditions.len() != self.config.groups_per_rollout {
            return Err(Error::shape(
                "conditions",
                format!(
                    "{} conditions (groups_per_rollout), each sampled group_size = {} times",
                    self.config.groups_per_rollout, self.config.group_size
                ),
                [conditions.len()],
            ));
        }
        if self.config.reference_beta > 0.0 && self.reference.is_none() {
            return Err(Error::invalid(
                "reference_beta",
                self.config.reference_beta,
                "0, or a reference policy set with Trainer::with_reference",
            ));
        }
        match (&self.tracker, prompts) {
            (Some(_), None) => {
                return Err(Error::invalid(
                    "prompts",
                    "None",
                    "one prompt key per group (Trainer::step_with_prompts) with a prompt_tracker",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "prompt_tracker",
                    "None",
                    "a PromptStatTrackerConfig in TrainerConfig to use prompt keys",
                ));
            }
            _ => {}
        }
        let started = Instant::now();
        let sde_steps = self
            .config
            .sde_steps
            .select(self.schedule.steps(), &mut self.rng)?;
        let rollout_config = RolloutConfig::new()
            .with_group_size(self.config.group_size)
            .with_shared_initial_noise(self.config.shared_initial_noise);
        let rollout = rollout(
            &self.policy,
            conditions,
            &rollout_config,
            &self.schedule,
            self.kernel.as_ref(),
            &sde_steps,
            self.config.latent_dims,
            &mut self.rng,
        )?;
        let rollout_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let scores = rewards.score(&rollout.samples, &rollout.conditions)?;
        let advantages = match (&mut self.tracker, prompts) {
            (None, None) => self.config.advantage.compute_multi(
                &scores.values,
                &rewards.weights(),
                rewards.combination(),
                self.config.group_size,
            )?,
            (Some(tracker), Some(prompts)) => {
                let weights = rewards.weights();
                let combined: Vec<f32> = (0..rollout.rows_per_step())
                    .map(|i| {
                        let total: f64 = scores
                            .values
                            .iter()
                            .zip(&weights)
                            .map(|(values, w)| w * values[i] as f64)
                            .sum();
                        total as f32
                    })
                    .collect();
                let sample_prompts: Vec<&str> = (0..combined.len())
                    .map(|i| prompts[i / self.config.group_size])
                    .collect();
                tracker.update(&sample_prompts, &combined)?
            }
            _ => unreachable!("checked before the rollout"),
        };
        let reward_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let row_advantages = rollout
            .rows
            .sample
            .iter()
            .map(|&s| advantages.values[s])
            .collect();
        self.buffer.clear();
        self.buffer.push(rollout.rows, row_advantages)?;
        let objective = ReferenceKlConfig::new()
            .with_beta(self.config.reference_beta)
            .init(&*self.objective)?;
        let (mut applied, mut grad_norms, mut skipped) = (Vec::new(), Vec::new(), 0);
        let mut first_update = None;
        for _ in 0..self.config.inner_epochs {
            let batches = self
                .buffer
                .minibatches(self.config.minibatches_per_rollout, &mut self.rng)?;
            for indices in batches {
                let (rows, row_advantages) = self.buffer.gather(&indices)?;
                let batch = self.replay(&rows, &rollout.conditions, row_advantages)?;
                let output = objective.loss(&batch)?;
                first_update.get_or_insert_with(|| output.metrics.clone());
                let mut grads = GradientsParams::from_grads(output.loss.backward(), &self.policy);
                let norm = global_grad_norm(&self.policy, &grads)?;
                if !norm.is_finite() {
                    skipped += 1;
                    eprintln!(
                        "flow-rl: step {}: skipped an update with gradient norm {norm}",
                        self.step
                    );
                    continue;
                }
                if let Some(max_norm) = self.config.grad_clip_norm {
                    // As PyTorch's clip_grad_norm_: scale by max_norm / (norm + 1e-6) if < 1.
                    let factor = max_norm / (norm + 1e-6);
                    if factor < 1.0 {
                        scale_grads(&self.policy, &mut grads, factor);
                    }
                }
                self.policy =
                    self.optimizer
                        .step(self.config.learning_rate, self.policy.clone(), grads);
                applied.push(output.metrics);
                grad_norms.push(norm);
            }
        }
        let metrics = StepMetrics {
            step: self.step,
            rewards: scores
                .names
                .iter()
                .zip(&scores.values)
                .map(|(name, values)| reward_stats(name, values))
                .collect(),
            zero_std_group_fraction: advantages.zero_std_group_fraction,
            sde_steps,
            objective: ObjectiveMetrics::average(&applied).unwrap_or_default(),
            first_update,
            updates: applied.len(),
            skipped_updates: skipped,
            grad_norm: mean(&grad_norms),
            rollout_seconds,
            reward_seconds,
            update_seconds: started.elapsed().as_secs_f64(),
        };
        self.step += 1;
        if let Some(log) = &mut self.metrics_log {
            log.write(&metrics)?;
        }
        Ok(metrics)
    }

    /// The objective's batch for replayed rows: the current policy's means (with gradient)
    /// against the rollout's frozen anchor.
    fn replay(
        &self,
        rows: &TrajectoryRows,
        conditions: &P::Condition,
        advantages: Vec<f32>,
    ) -> Result<RowBatch> {
        let device = &self.device;
        let row_conditions = conditions.pick(&rows.sample);
        let latents = rows.latents.clone().to_device(device);
        let sigma = vector(&rows.sigma, device);
        let velocity = checked_velocity(&self.policy, latents.clone(), sigma, &row_conditions)?;
        let new = self
            .kernel
            .transition(latents, velocity, &rows.sigma, &rows.sigma_next)?;
        let advantages: Vec<f64> = advantages.iter().map(|&a| a as f64).collect();
        let mut batch = RowBatch::new(
            new.mean,
            rows.old_mean.clone().to_device(device),
            rows.next.clone().to_device(device),
            new.std,
            vector(&rows.dt(), device),
            vector(&advantages, device),
        )
        .with_velocity_scale(vector(&rows.velocity_scale, device));
        if let Some(reference) = &self.reference {
            let sigma = vector(&rows.sigma, &rows.latents.device());
            let velocity =
                checked_velocity(reference, rows.latents.clone(), sigma, &row_conditions)?;
            let reference_mean = self.kernel.transition(
                rows.latents.clone(),
                velocity,
                &rows.sigma,
                &rows.sigma_next,
            )?;
            batch = batch.with_ref_mean(reference_mean.mean.to_device(device));
        }
        Ok(batch)
    }
}

fn reward_stats(name: &str, values: &[f32]) -> RewardStats {
    let values: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    RewardStats {
        name: name.to_owned(),
        mean: mean(&values),
        std: crate::advantage::population_std(&values),
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}
