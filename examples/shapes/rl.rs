//! One RL fine-tuning run of the base model: the crate's [`Trainer`] with LoRA on the
//! attention projections, rewarded by the scorer, evaluated before and after by the ODE.
//!
//! The run trains on the counting prompts of the base model's training split. It measures
//! the prompt accuracy on those prompts, on the counting prompts held out of pre-training
//! (never seen by either stage) and on every colour-binding prompt (a family the run never
//! trains on: forgetting), and the drift from the base model: the exact per-step KL summed
//! along SDE trajectories ([`trajectory_kl`]).

use std::time::Instant;

use burn::config::Config;
use burn::prelude::*;
use flow_rl::advantage::RewardCombination;
use flow_rl::drift::trajectory_kl;
use flow_rl::kernel::{FlowSdeConfig, KernelConfig};
use flow_rl::metrics::StepMetrics;
use flow_rl::models::mmdit::{Mmdit, MmditLoraConfig, PromptEmbeddings};
use flow_rl::objective::{ObjectiveConfig, TrustRegionObjective};
use flow_rl::reward::RewardSet;
use flow_rl::schedule::{SdeStepSelection, SigmaScheduleConfig};
use flow_rl::trainer::{Trainer, TrainerConfig};
use flow_rl::{Result, Rng};
use serde::Serialize;

use crate::evaluate::{Evaluation, SamplingConfig};
use crate::mechanism::{RecordedRow, Recording};
use crate::pretrain::{IMAGE_DIMS, prompt_split};
use crate::prompt::{Prompt, PromptFamily};
use crate::reward::{RewardKind, ShapesReward};
use crate::scorer::Scorer;
use crate::text::TextEncoder;

/// The [`Rng::stream`] indices of a run's seed: its prompt draws, and its LoRA factors'
/// seed (the trainer draws from the seed itself).
const PROMPT_STREAM: u64 = 1;
const LORA_STREAM: u64 = 2;

/// The three objectives compared, at their reference thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
pub enum ObjectiveName {
    /// PPO ratio clipping (Flow-GRPO), ε = 1e-4.
    RatioClip,
    /// GRPO-Guard's regulated clipping, ε = 1e-4.
    GrpoGuard,
    /// Flow-DPPO's divergence mask, τ = 1e-5.
    FlowDppo,
}

impl ObjectiveName {
    /// All three, in the order of the tables.
    pub const ALL: [ObjectiveName; 3] = [
        ObjectiveName::RatioClip,
        ObjectiveName::GrpoGuard,
        ObjectiveName::FlowDppo,
    ];

    /// The objective's name in the crate (`"ratio-clip"`, ..).
    pub fn name(self) -> &'static str {
        match self {
            ObjectiveName::RatioClip => "ratio-clip",
            ObjectiveName::GrpoGuard => "grpo-guard",
            ObjectiveName::FlowDppo => "flow-dppo",
        }
    }

    /// The objective with its reference defaults.
    pub fn config(self) -> ObjectiveConfig {
        ObjectiveConfig::from_name(self.name()).expect("the crate's own objective names")
    }
}

/// How the count and colour rewards become one advantage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Combination {
    /// Weighted sum of the raw rewards, then group normalisation.
    WeightedSum,
    /// GDPO: each reward normalised in its group, then summed and normalised.
    Gdpo,
}

impl Combination {
    /// A short name for file names and tables.
    pub fn name(self) -> &'static str {
        match self {
            Combination::WeightedSum => "sum",
            Combination::Gdpo => "gdpo",
        }
    }

    fn crate_combination(self) -> RewardCombination {
        match self {
            Combination::WeightedSum => RewardCombination::WeightedSum,
            Combination::Gdpo => RewardCombination::Gdpo,
        }
    }
}

/// What distinguishes one run from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RunSpec {
    /// The trust-region objective.
    pub objective: ObjectiveName,
    /// How the rewards combine.
    pub combination: Combination,
    /// Passes over each rollout.
    pub inner_epochs: usize,
    /// The seed of the trainer and of the run's prompt draws.
    pub seed: u64,
}

impl RunSpec {
    /// A file-name-safe identifier, e.g. `flow-dppo_sum_e1_s0`.
    pub fn id(&self) -> String {
        format!(
            "{}_{}_e{}_s{}",
            self.objective.name(),
            self.combination.name(),
            self.inner_epochs,
            self.seed
        )
    }
}

/// The settings every run of an experiment shares. The defaults follow the Flow-DPPO
/// recipe (ALGORITHMS.md §9) where it applies at this scale: T = 10, Flow-SDE η = 0.7, 3
/// SDE steps from the first half, 2 optimiser steps per rollout, LoRA rank 32 / alpha 64 on
/// the attention projections, AdamW lr 3e-4 without weight decay, gradient clip 1.
#[derive(Config, Debug, PartialEq)]
pub struct FineTuneConfig {
    /// Rollouts (trainer steps) per run.
    #[config(default = 24)]
    pub rollouts: usize,
    /// Prompts per rollout.
    #[config(default = 4)]
    pub groups_per_rollout: usize,
    /// Samples per prompt.
    #[config(default = 8)]
    pub group_size: usize,
    /// Denoising steps T of the rollouts and of evaluation.
    #[config(default = 10)]
    pub sampling_steps: usize,
    /// The σ schedule's shift, for the rollouts and evaluation.
    #[config(default = 1.0)]
    pub shift: f64,
    /// AdamW learning rate.
    #[config(default = 3e-4)]
    pub learning_rate: f64,
    /// LoRA rank.
    #[config(default = 32)]
    pub lora_rank: usize,
    /// LoRA alpha.
    #[config(default = 64.0)]
    pub lora_alpha: f64,
    /// The count reward's weight.
    #[config(default = 0.5)]
    pub count_weight: f64,
    /// The colour reward's weight.
    #[config(default = 0.5)]
    pub colour_weight: f64,
    /// Measure the drift every this many rollouts (and after the last).
    #[config(default = 4)]
    pub drift_every: usize,
    /// SDE trajectories per drift measurement.
    #[config(default = 32)]
    pub drift_samples: usize,
    /// ODE samples per prompt in the evaluations.
    #[config(default = 4)]
    pub eval_samples_per_prompt: usize,
}

impl FineTuneConfig {
    /// The schedule of the rollouts, the evaluations and the drift.
    pub fn schedule(&self) -> SigmaScheduleConfig {
        SigmaScheduleConfig::new()
            .with_steps(self.sampling_steps)
            .with_shift(self.shift)
    }

    /// The deterministic evaluation sampler (seed 0 for every run and the base).
    pub fn sampling(&self) -> SamplingConfig {
        SamplingConfig::new()
            .with_steps(self.sampling_steps)
            .with_shift(self.shift)
            .with_samples_per_prompt(self.eval_samples_per_prompt)
            .with_seed(0)
    }
}

/// The prompt sets of the experiments.
#[derive(Debug, Clone)]
pub struct PromptSets {
    /// What the runs train on: the counting prompts of the base model's training split.
    pub train: Vec<Prompt>,
    /// The counting prompts held out of pre-training: disjoint from all training.
    pub held_out: Vec<Prompt>,
    /// Every colour-binding prompt: a family the runs never train on.
    pub binding: Vec<Prompt>,
}

impl PromptSets {
    /// The sets, from the fixed pre-training split.
    pub fn new() -> Result<PromptSets> {
        let split = prompt_split()?;
        let counting = PromptFamily::Counting.prompts();
        Ok(PromptSets {
            train: counting
                .iter()
                .filter(|prompt| split.train.contains(prompt))
                .cloned()
                .collect(),
            held_out: counting
                .iter()
                .filter(|prompt| split.eval.contains(prompt))
                .cloned()
                .collect(),
            binding: PromptFamily::ColourBinding.prompts(),
        })
    }
}

/// Accuracies and scores of a model on the three prompt sets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    /// Prompt accuracy on the training prompts.
    pub train_accuracy: f64,
    /// Mean count score on the training prompts.
    pub train_count: f64,
    /// Mean colour score on the training prompts.
    pub train_colour: f64,
    /// Prompt accuracy on the held-out counting prompts.
    pub held_out_accuracy: f64,
    /// Mean count score on the held-out counting prompts.
    pub held_out_count: f64,
    /// Mean colour score on the held-out counting prompts.
    pub held_out_colour: f64,
    /// Prompt accuracy on the colour-binding prompts (forgetting).
    pub binding_accuracy: f64,
}

/// The evaluations of one model, with their samples for grids.
pub struct Evaluations {
    /// On the training prompts.
    pub train: Evaluation,
    /// On the held-out counting prompts.
    pub held_out: Evaluation,
    /// On the colour-binding prompts.
    pub binding: Evaluation,
}

impl Evaluations {
    /// Samples and scores `model` on every set by the deterministic ODE.
    pub fn run(
        model: &Mmdit,
        encoder: &TextEncoder,
        sets: &PromptSets,
        config: &FineTuneConfig,
    ) -> Result<Evaluations> {
        let (sampling, scorer) = (config.sampling(), Scorer::default());
        let model = model.valid();
        Ok(Evaluations {
            train: Evaluation::run(&model, encoder, &sets.train, &sampling, &scorer)?,
            held_out: Evaluation::run(&model, encoder, &sets.held_out, &sampling, &scorer)?,
            binding: Evaluation::run(&model, encoder, &sets.binding, &sampling, &scorer)?,
        })
    }

    /// The summary numbers.
    pub fn scores(&self) -> Scores {
        Scores {
            train_accuracy: self.train.accuracy(),
            train_count: self.train.mean_count_score(),
            train_colour: self.train.mean_colour_score(),
            held_out_accuracy: self.held_out.accuracy(),
            held_out_count: self.held_out.mean_count_score(),
            held_out_colour: self.held_out.mean_colour_score(),
            binding_accuracy: self.binding.accuracy(),
        }
    }
}

/// One rollout of a run, as logged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// The rollout's index.
    pub step: usize,
    /// Mean count reward of the rollout's samples.
    pub count: f64,
    /// Mean colour reward.
    pub colour: f64,
    /// Mean prompt accuracy of the rollout's (SDE) samples.
    pub accuracy: f64,
    /// The weighted reward `w_count·count + w_colour·colour`.
    pub reward: f64,
    /// Fraction of rows clipped (ratio clip, GRPO-Guard), mean over the updates.
    pub clip_fraction: Option<f64>,
    /// Fraction of rows dropped (Flow-DPPO).
    pub dropped_fraction: Option<f64>,
    /// Mean exact KL of the updated rows to the rollout's policy.
    pub kl_mean: f64,
    /// The drift from the base model after this rollout's updates, where measured.
    pub drift: Option<f64>,
    /// Wall time of the run so far, seconds.
    pub seconds: f64,
}

impl StepRecord {
    fn of(metrics: &StepMetrics, config: &FineTuneConfig, seconds: f64) -> StepRecord {
        let mean_of = |name: &str| {
            metrics
                .rewards
                .iter()
                .find(|reward| reward.name == name)
                .map_or(f64::NAN, |reward| reward.mean)
        };
        let (count, colour) = (mean_of("count"), mean_of("colour"));
        StepRecord {
            step: metrics.step,
            count,
            colour,
            accuracy: mean_of("accuracy"),
            reward: config.count_weight * count + config.colour_weight * colour,
            clip_fraction: metrics.objective.clip.map(|clip| clip.fraction),
            dropped_fraction: metrics.objective.mask.map(|mask| mask.dropped_fraction),
            kl_mean: metrics.objective.kl_mean,
            drift: None,
            seconds,
        }
    }
}

/// Everything a run produced.
pub struct RunOutcome {
    /// One record per rollout.
    pub steps: Vec<StepRecord>,
    /// The fine-tuned model's evaluations.
    pub after: Evaluations,
    /// Every row of every update.
    pub rows: Vec<RecordedRow>,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Fine-tunes `base` (on an autodiff device) by `spec` and `config`, calling
/// `progress(record)` after every rollout.
pub fn fine_tune(
    spec: &RunSpec,
    config: &FineTuneConfig,
    base: &Mmdit,
    encoder: &TextEncoder,
    sets: &PromptSets,
    device: &Device,
    mut progress: impl FnMut(&StepRecord),
) -> Result<RunOutcome> {
    let started = Instant::now();
    let objective = Recording::new(spec.objective.config().init()?);
    // The adapters' own stream, apart from the trainer's and the prompt draws', so a run's
    // start does not depend on what else used the device's generator.
    let policy = MmditLoraConfig::new()
        .with_rank(config.lora_rank)
        .with_alpha(config.lora_alpha)
        .with_seed(Some(Rng::stream(spec.seed, LORA_STREAM).next_u64()))
        .apply(base.clone())?;
    let trainer_config = TrainerConfig::new(IMAGE_DIMS)
        .with_group_size(config.group_size)
        .with_groups_per_rollout(config.groups_per_rollout)
        .with_schedule(config.schedule())
        .with_kernel(KernelConfig::FlowSde(FlowSdeConfig::new()))
        .with_sde_steps(SdeStepSelection::RandomSubset {
            window_start: 0.0,
            window_end: 0.5,
            count: 3,
        })
        .with_objective(spec.objective.config())
        .with_learning_rate(config.learning_rate)
        .with_weight_decay(0.0)
        .with_inner_epochs(spec.inner_epochs)
        .with_seed(spec.seed);
    let mut trainer = Trainer::new(trainer_config, policy, device)?
        .with_objective(Box::new(objective.clone()) as Box<dyn TrustRegionObjective>);
    let rewards = reward_set(spec.combination, config);
    let texts: Vec<String> = sets.train.iter().map(ToString::to_string).collect();
    let embeddings = encoder.encode(&texts)?;
    let drift_conditions = drift_conditions(encoder, sets, config.drift_samples)?;
    // The run's own prompt draws, apart from the trainer's stream.
    let mut prompt_rng = Rng::stream(spec.seed, PROMPT_STREAM);
    let mut steps = Vec::with_capacity(config.rollouts);
    for rollout in 0..config.rollouts {
        let chosen = prompt_rng.distinct_below(sets.train.len(), config.groups_per_rollout);
        let conditions = embeddings.select(&chosen)?.condition();
        let metrics = trainer.step(&conditions, &rewards)?;
        let mut record = StepRecord::of(&metrics, config, started.elapsed().as_secs_f64());
        if (rollout + 1) % config.drift_every == 0 || rollout + 1 == config.rollouts {
            record.drift = Some(drift(trainer.policy(), base, &drift_conditions, config)?);
        }
        progress(&record);
        steps.push(record);
    }
    let policy = trainer.into_policy();
    let after = Evaluations::run(&policy, encoder, sets, config)?;
    Ok(RunOutcome {
        steps,
        after,
        rows: objective.rows(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Count and colour rewards by their weights, and the accuracy at weight 0 (logged, never
/// trained on).
fn reward_set(
    combination: Combination,
    config: &FineTuneConfig,
) -> RewardSet<flow_rl::models::mmdit::MmditCondition> {
    RewardSet::new(combination.crate_combination())
        .with(ShapesReward::new(RewardKind::Count), config.count_weight)
        .with(ShapesReward::new(RewardKind::Colour), config.colour_weight)
        .with(ShapesReward::new(RewardKind::Accuracy), 0.0)
}

/// The drift's conditions: the training and held-out prompts in turn, `samples` in all.
fn drift_conditions(
    encoder: &TextEncoder,
    sets: &PromptSets,
    samples: usize,
) -> Result<PromptEmbeddings> {
    let prompts: Vec<String> = sets
        .train
        .iter()
        .chain(&sets.held_out)
        .cycle()
        .take(samples.max(1))
        .map(ToString::to_string)
        .collect();
    encoder.encode(&prompts)
}

/// The exact per-step KL from `base`, summed along Flow-SDE trajectories of `policy` at
/// every step, from fixed noise (seed 0) so that successive measurements compare.
pub fn drift(
    policy: &Mmdit,
    base: &Mmdit,
    conditions: &PromptEmbeddings,
    config: &FineTuneConfig,
) -> Result<f64> {
    let kernel = FlowSdeConfig::new().init()?;
    trajectory_kl(
        policy,
        base,
        &conditions.condition(),
        &config.schedule().init()?,
        &kernel,
        IMAGE_DIMS,
        &mut Rng::seed_from(0),
    )
}
