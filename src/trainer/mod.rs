//! The training loop, in phases: rollout → rewards → advantages → epochs × mini-batches
//! (× micro-batches) → optimiser steps.

mod checkpoint;
mod config;
mod grad_norm;
mod update;
mod workers;

pub use config::TrainerConfig;

use std::rc::Rc;
use std::time::Instant;

use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::prelude::*;

use crate::advantage::{Advantages, PromptStatTracker, PromptStatTrackerConfig, weighted_sum};
use crate::buffer::{InMemoryBuffer, TrajectoryBuffer};
use crate::distributed::{Communicator, RolloutShard, SingleProcess, agree};
use crate::error::{Error, Result};
use crate::kernel::StepKernel;
use crate::metrics::{JsonLinesWriter, RewardStats, StepMetrics};
use crate::objective::{ObjectiveMetrics, ReferenceKlConfig, TrustRegionObjective};
use crate::policy::{ConditionBatch, FlowPolicy, first_device};
use crate::reward::{RewardScores, RewardSet};
use crate::rng::Rng;
use crate::rollout::{Rollout, RolloutConfig, RolloutPlan, rollout};
use crate::schedule::SigmaSchedule;
use update::Updater;

/// Online RL fine-tuning of a [`FlowPolicy`] with a trust-region objective.
pub struct Trainer<P: FlowPolicy> {
    config: TrainerConfig,
    policy: P,
    reference: Option<P>,
    objective: Box<dyn TrustRegionObjective>,
    kernel: Box<dyn StepKernel>,
    schedule: SigmaSchedule,
    optimizer: ModuleOptimizer,
    rng: Rng,
    step: usize,
    tracker: Option<PromptStatTracker>,
    device: Device,
    metrics_log: Option<JsonLinesWriter>,
    /// The workers of a data-parallel run ([`SingleProcess`] alone by default).
    communicator: Rc<dyn Communicator>,
    /// This worker's groups of each rollout.
    shard: RolloutShard,
}

/// Everything a step changes. A step works on a copy and commits it only once it has
/// succeeded, so that a failed step leaves the trainer exactly as it was (ALGORITHMS.md §7).
struct StepState<P> {
    policy: P,
    optimizer: ModuleOptimizer,
    rng: Rng,
    tracker: Option<PromptStatTracker>,
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
        let shard = RolloutShard::new(config.groups_per_rollout, config.group_size, 1, 0)?;
        Ok(Self {
            objective: config.objective.init()?,
            kernel: config.kernel.init()?,
            schedule: config.schedule.init()?,
            rng: Rng::seed_from(config.seed),
            config,
            policy,
            reference: None,
            optimizer,
            step: 0,
            tracker,
            device: device.clone(),
            metrics_log,
            communicator: Rc::new(SingleProcess),
            shard,
        })
    }

    /// Replaces the configured objective with any implementation.
    pub fn with_objective(mut self, objective: Box<dyn TrustRegionObjective>) -> Self {
        self.objective = objective;
        self
    }

    /// Replaces the configured kernel (`TrainerConfig::kernel`) with any implementation;
    /// the rollout samples with it and the updates score with it.
    pub fn with_kernel(mut self, kernel: Box<dyn StepKernel>) -> Self {
        self.kernel = kernel;
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
    /// A step that fails (a reward error, a non-finite value, a full disk for the metrics
    /// log) changes nothing: parameters, optimiser state, RNG and tracker are as before, so
    /// retrying gives the uninterrupted run.
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
        let communicator = &*self.communicator;
        agree(
            communicator,
            "the step's input",
            self.check_step_input(conditions, prompts),
        )?;
        let mut state = StepState {
            policy: self.policy.clone(),
            optimizer: self.optimizer.clone(),
            rng: self.rng.clone(),
            tracker: self.tracker.clone(),
        };

        // Rollout and rewards of this worker's groups; failures anywhere fail every worker.
        let started = Instant::now();
        let local_conditions = self.local_conditions(conditions);
        let sampled = self
            .collect_rollout(&state.policy, &local_conditions, &mut state.rng)
            .and_then(|rollout| {
                let rollout_seconds = started.elapsed().as_secs_f64();
                let scores = rewards.score(&rollout.samples, &rollout.conditions)?;
                Ok((rollout, scores, rollout_seconds))
            });
        let (rollout, local_scores, rollout_seconds) =
            agree(communicator, "the rollout and its rewards", sampled)?;

        // Advantages over the whole rollout, the same on every worker.
        let started = Instant::now();
        let scores = workers::gather_scores(communicator, local_scores)?;
        let advantages = self.advantages(&scores, rewards, prompts, state.tracker.as_mut())?;
        let reward_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut buffer = InMemoryBuffer::new();
        let first_sample = self.shard.samples().start;
        let row_advantages = rollout
            .rows
            .sample
            .iter()
            .map(|&sample| advantages.values[first_sample + sample])
            .collect();
        buffer.push(rollout.rows, row_advantages)?;
        let objective = ReferenceKlConfig::new()
            .with_beta(self.config.reference_beta)
            .init(&*self.objective)?;
        let updater = Updater {
            config: &self.config,
            kernel: self.kernel.as_ref(),
            objective: &objective,
            reference: self.reference.as_ref(),
            device: &self.device,
            step: self.step,
            communicator,
            shard: &self.shard,
        };
        let updates = updater.run(&mut state, &buffer, &rollout.conditions)?;

        let metrics = StepMetrics {
            step: self.step,
            rewards: scores
                .names
                .iter()
                .zip(&scores.values)
                .map(|(name, values)| reward_stats(name, values))
                .collect(),
            zero_std_group_fraction: advantages.zero_std_group_fraction,
            sde_steps: rollout.sde_steps,
            objective: ObjectiveMetrics::average(&updates.applied).unwrap_or_default(),
            first_update: updates.first,
            updates: updates.applied.len(),
            skipped_updates: updates.skipped,
            grad_norm: mean(&updates.grad_norms),
            rollout_seconds,
            reward_seconds,
            update_seconds: started.elapsed().as_secs_f64(),
        };
        let logged = match &mut self.metrics_log {
            Some(log) => log.write(&metrics),
            None => Ok(()),
        };
        agree(&*self.communicator, "writing the metrics log", logged)?;
        self.commit(state);
        Ok(metrics)
    }

    /// Checks what can be checked before anything runs: the number of conditions, the
    /// reference policy, and prompts against the tracker.
    fn check_step_input(&self, conditions: &P::Condition, prompts: Option<&[&str]>) -> Result<()> {
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
            (Some(_), None) => Err(Error::invalid(
                "prompts",
                "None",
                "one prompt key per group (Trainer::step_with_prompts) with a prompt_tracker",
            )),
            (None, Some(_)) => Err(Error::invalid(
                "prompt_tracker",
                "None",
                "a PromptStatTrackerConfig in TrainerConfig to use prompt keys",
            )),
            _ => Ok(()),
        }
    }

    /// Draws this rollout's stochastic steps and samples the groups with the policy.
    fn collect_rollout(
        &self,
        policy: &P,
        conditions: &P::Condition,
        rng: &mut Rng,
    ) -> Result<Rollout<P::Condition>> {
        let sde_steps = self.config.sde_steps.select(self.schedule.steps(), rng)?;
        let config = RolloutConfig::new()
            .with_group_size(self.config.group_size)
            .with_first_group(self.shard.groups().start)
            .with_shared_initial_noise(self.config.shared_initial_noise)
            .with_batch_size(self.config.rollout_batch_size);
        let plan = RolloutPlan {
            schedule: &self.schedule,
            kernel: self.kernel.as_ref(),
            sde_steps: &sde_steps,
            latent_dims: self.config.latent_dims,
        };
        rollout(policy, conditions, &config, &plan, rng)
    }

    /// The advantage of every sample: group-relative, or centred on each prompt's tracked
    /// mean when a tracker is configured.
    fn advantages(
        &self,
        scores: &RewardScores,
        rewards: &RewardSet<P::Condition>,
        prompts: Option<&[&str]>,
        tracker: Option<&mut PromptStatTracker>,
    ) -> Result<Advantages> {
        match (tracker, prompts) {
            (Some(tracker), Some(prompts)) => {
                let combined = weighted_sum(&scores.values, &rewards.weights())?;
                let sample_prompts: Vec<&str> = (0..combined.len())
                    .map(|i| prompts[i / self.config.group_size])
                    .collect();
                tracker.update(&sample_prompts, &combined)
            }
            _ => self.config.advantage.compute_multi(
                &scores.values,
                &rewards.weights(),
                rewards.combination(),
                self.config.group_size,
            ),
        }
    }

    /// Makes a successful step's state the trainer's.
    fn commit(&mut self, state: StepState<P>) {
        self.policy = state.policy;
        self.optimizer = state.optimizer;
        self.rng = state.rng;
        self.tracker = state.tracker;
        self.step += 1;
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
