//! Runs the denoising chain under no-grad and records every trained (SDE) step.

use burn::config::Config;
use burn::prelude::*;

use crate::error::{Error, Result};
use crate::kernel::{Ode, StepCoefficients, StepKernel};
use crate::policy::{ConditionBatch, FlowPolicy, checked_velocity, first_device};
use crate::rng::Rng;
use crate::schedule::SigmaSchedule;
use crate::tensor_util::int_index;

/// Configuration of [`rollout`].
#[derive(Config, Debug, PartialEq)]
pub struct RolloutConfig {
    /// Samples per condition (the group size G).
    #[config(default = 16)]
    pub group_size: usize,
    /// Start every member of a group from the same noise (otherwise each has its own).
    #[config(default = false)]
    pub shared_initial_noise: bool,
    /// Samples per policy forward pass; `None` runs all samples of a step in one pass.
    /// Only memory changes with it: the noise is drawn for all samples at once, so every
    /// chunk size gives the same rows and samples.
    pub batch_size: Option<usize>,
    /// The global index of the first condition's group when this call samples one worker's
    /// share of a larger rollout (`flow_rl::distributed`); 0 otherwise. Each sample's noise
    /// is keyed by its global index, so groups 4..8 sampled here equal groups 4..8 of the
    /// whole rollout.
    #[config(default = 0)]
    pub first_group: usize,
}

impl RolloutConfig {
    /// Checks the counts.
    pub fn validate(&self) -> Result<()> {
        if self.group_size == 0 {
            return Err(Error::invalid("group_size", 0, "at least 1"));
        }
        if self.batch_size == Some(0) {
            return Err(Error::invalid(
                "rollout batch_size",
                0,
                "at least 1 sample per forward pass, or None for all samples",
            ));
        }
        Ok(())
    }
}

/// What a rollout samples with: the σ schedule, the kernel of the stochastic steps, which
/// steps are stochastic (and recorded), and the latent size N.
#[derive(Debug, Clone, Copy)]
pub struct RolloutPlan<'a> {
    /// The σ schedule of the denoising chain.
    pub schedule: &'a SigmaSchedule,
    /// The kernel of the stochastic steps; the other steps run the ODE.
    pub kernel: &'a dyn StepKernel,
    /// The stochastic (trained) steps, each in `0..schedule.steps()`.
    pub sde_steps: &'a [usize],
    /// The latent dimension N of one sample (flattened).
    pub latent_dims: usize,
}

impl RolloutPlan<'_> {
    /// Checks the latent size and that every SDE step is a step of the schedule.
    fn validate(&self) -> Result<()> {
        if self.latent_dims == 0 {
            return Err(Error::invalid("latent_dims", 0, "at least 1"));
        }
        let steps = self.schedule.steps();
        if let Some(&bad) = self.sde_steps.iter().find(|&&s| s >= steps) {
            return Err(Error::invalid(
                "sde step",
                bad,
                format!("a step in 0..{steps}"),
            ));
        }
        Ok(())
    }
}

/// The trained rows of one rollout: one row per (sample, SDE step), on the device and the host.
///
/// Rows are ordered step-major: all samples of the first SDE step, then the next step.
#[derive(Debug, Clone)]
pub struct TrajectoryRows {
    /// `x_t`, the latent the step started from, `[R, N]`.
    pub latents: Tensor<2>,
    /// `x'`, the latent the step drew, `[R, N]`.
    pub next: Tensor<2>,
    /// `μ_old`, the rollout policy's transition mean, `[R, N]`.
    pub old_mean: Tensor<2>,
    /// `σ` of each row's step.
    pub sigma: Vec<f64>,
    /// `σ'` of each row's step.
    pub sigma_next: Vec<f64>,
    /// `s` of each row's step.
    pub std: Vec<f64>,
    /// The kernel's velocity coefficient `b` of each row's step.
    pub velocity_scale: Vec<f64>,
    /// The step index of each row.
    pub step: Vec<usize>,
    /// The sample (index into the rollout's samples) of each row.
    pub sample: Vec<usize>,
    /// The group of each row's sample.
    pub group: Vec<usize>,
}

impl TrajectoryRows {
    /// The number of rows R.
    pub fn len(&self) -> usize {
        self.sample.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.sample.is_empty()
    }

    /// `dt = σ' − σ` of each row.
    pub fn dt(&self) -> Vec<f64> {
        self.sigma
            .iter()
            .zip(&self.sigma_next)
            .map(|(s, n)| n - s)
            .collect()
    }

    /// These rows followed by `other`'s.
    pub fn concat(self, other: Self) -> Self {
        fn join<T>(mut first: Vec<T>, second: Vec<T>) -> Vec<T> {
            first.extend(second);
            first
        }
        Self {
            latents: Tensor::cat(vec![self.latents, other.latents], 0),
            next: Tensor::cat(vec![self.next, other.next], 0),
            old_mean: Tensor::cat(vec![self.old_mean, other.old_mean], 0),
            sigma: join(self.sigma, other.sigma),
            sigma_next: join(self.sigma_next, other.sigma_next),
            std: join(self.std, other.std),
            velocity_scale: join(self.velocity_scale, other.velocity_scale),
            step: join(self.step, other.step),
            sample: join(self.sample, other.sample),
            group: join(self.group, other.group),
        }
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        let device = self.latents.device();
        let index = int_index(indices, &device);
        let pick_f = |v: &[f64]| indices.iter().map(|&i| v[i]).collect();
        let pick_u = |v: &[usize]| indices.iter().map(|&i| v[i]).collect();
        Self {
            latents: self.latents.clone().select(0, index.clone()),
            next: self.next.clone().select(0, index.clone()),
            old_mean: self.old_mean.clone().select(0, index),
            sigma: pick_f(&self.sigma),
            sigma_next: pick_f(&self.sigma_next),
            std: pick_f(&self.std),
            velocity_scale: pick_f(&self.velocity_scale),
            step: pick_u(&self.step),
            sample: pick_u(&self.sample),
            group: pick_u(&self.group),
        }
    }
}

impl<C: ConditionBatch> Rollout<C> {
    /// The number of samples B (each SDE step contributes B rows).
    pub fn rows_per_step(&self) -> usize {
        self.conditions.len()
    }
}

/// The result of one rollout.
#[derive(Debug, Clone)]
pub struct Rollout<C> {
    /// The final samples (at σ = 0), `[B, N]`, B = groups × group size.
    pub samples: Tensor<2>,
    /// The condition of every sample (each group's condition repeated G times).
    pub conditions: C,
    /// The trained rows.
    pub rows: TrajectoryRows,
    /// The stochastic steps of this rollout, ascending.
    pub sde_steps: Vec<usize>,
}

/// Samples `group_conditions.len()` groups of `config.group_size` latents of
/// `plan.latent_dims` dimensions with `policy` under no-grad, running `plan.kernel` at
/// `plan.sde_steps` and the ODE elsewhere, and records every SDE step's rows.
///
/// The policy runs on chunks of `config.batch_size` samples. One draw from `rng` keys the
/// rollout's noise, and each sample (each group, with shared initial noise) has its own
/// stream of it, keyed by its global index (`config.first_group` onwards, see
/// [`Rng::stream`]). The rollout is therefore reproducible, does not depend on the chunk
/// size, and a worker's share of a rollout equals that part of the whole.
pub fn rollout<P: FlowPolicy>(
    policy: &P,
    group_conditions: &P::Condition,
    config: &RolloutConfig,
    plan: &RolloutPlan<'_>,
    rng: &mut Rng,
) -> Result<Rollout<P::Condition>> {
    config.validate()?;
    plan.validate()?;
    let groups = group_conditions.len();
    if groups == 0 {
        return Err(Error::invalid(
            "conditions",
            "an empty batch",
            "at least 1 condition (one per group)",
        ));
    }
    let policy = policy.valid();
    let latent_dims = plan.latent_dims;
    let samples = groups * config.group_size;
    let sample_group: Vec<usize> = (0..samples).map(|i| i / config.group_size).collect();
    let conditions = group_conditions.pick(&sample_group);
    let device = first_device(&policy)?.without_autodiff();
    let noise_key = rng.next_u64();
    let first_sample = config.first_group * config.group_size;
    let mut sample_noise: Vec<Rng> = (first_sample..first_sample + samples)
        .map(|sample| Rng::stream(noise_key, sample as u64))
        .collect();
    let mut x = if config.shared_initial_noise {
        let group_key = rng.next_u64();
        let mut group_noise: Vec<Rng> = (config.first_group..config.first_group + groups)
            .map(|group| Rng::stream(group_key, group as u64))
            .collect();
        let per_group = Rng::normal_rows(&mut group_noise, latent_dims, &device);
        per_group.select(0, int_index(&sample_group, &device))
    } else {
        Rng::normal_rows(&mut sample_noise, latent_dims, &device)
    };
    let chunks = SampleChunks::new(&conditions, config.batch_size.unwrap_or(samples));

    let mut recorded = Vec::new();
    for step in 0..plan.schedule.steps() {
        let (sigma, sigma_next) = plan.schedule.step(step)?;
        let velocity = chunks.velocity(&policy, &x, sigma)?;
        let (sigmas, sigmas_next) = (vec![sigma; samples], vec![sigma_next; samples]);
        if !plan.sde_steps.contains(&step) {
            x = Ode.transition(x, velocity, &sigmas, &sigmas_next)?.mean;
            continue;
        }
        let transition = plan
            .kernel
            .transition(x.clone(), velocity, &sigmas, &sigmas_next)?;
        let coefficients = transition.coefficients[0];
        if coefficients.std <= 0.0 {
            return Err(Error::invalid(
                format!("sde step {step}"),
                format!("{} with s = 0 (σ' = {sigma_next})", plan.kernel.name()),
                "a step where the kernel is stochastic; the last step is deterministic for CPS",
            ));
        }
        let noise = Rng::normal_rows(&mut sample_noise, latent_dims, &device);
        let next = transition.sample(noise)?;
        recorded.push(RecordedStep {
            step,
            sigma,
            sigma_next,
            coefficients,
            latents: x,
            next: next.clone(),
            mean: transition.mean,
        });
        x = next;
    }
    Ok(Rollout {
        samples: x,
        rows: RecordedStep::into_rows(recorded, &sample_group, latent_dims, &device),
        conditions,
        sde_steps: plan.sde_steps.to_vec(),
    })
}

/// The samples of a rollout split into contiguous chunks of at most `size`, for the
/// policy's forward passes.
struct SampleChunks<C> {
    /// The first and one-past-last sample of each chunk.
    ranges: Vec<std::ops::Range<usize>>,
    /// The conditions of each chunk; a single chunk holds the whole batch.
    conditions: Vec<C>,
}

impl<C: ConditionBatch> SampleChunks<C> {
    fn new(conditions: &C, size: usize) -> Self {
        let samples = conditions.len();
        let ranges: Vec<_> = (0..samples)
            .step_by(size.max(1))
            .map(|start| start..(start + size).min(samples))
            .collect();
        let conditions = if ranges.len() == 1 {
            vec![conditions.clone()]
        } else {
            ranges
                .iter()
                .map(|range| conditions.pick(&range.clone().collect::<Vec<_>>()))
                .collect()
        };
        Self { ranges, conditions }
    }

    /// The policy's velocity `[B, N]` for all samples `x` `[B, N]` at noise level `sigma`,
    /// one forward pass per chunk.
    fn velocity<P: FlowPolicy<Condition = C>>(
        &self,
        policy: &P,
        x: &Tensor<2>,
        sigma: f64,
    ) -> Result<Tensor<2>> {
        let device = x.device();
        let mut parts = Vec::with_capacity(self.ranges.len());
        for (range, conditions) in self.ranges.iter().zip(&self.conditions) {
            let chunk = if self.ranges.len() == 1 {
                x.clone()
            } else {
                x.clone().slice(s![range.clone(), ..])
            };
            let sigma_row = Tensor::<1>::full([range.len()], sigma, &device);
            parts.push(checked_velocity(policy, chunk, sigma_row, conditions)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(parts, 0)
        })
    }
}

/// One stochastic step of a rollout, for all B samples.
struct RecordedStep {
    step: usize,
    sigma: f64,
    sigma_next: f64,
    coefficients: StepCoefficients,
    /// `x_t`, `[B, N]`.
    latents: Tensor<2>,
    /// `x'`, `[B, N]`.
    next: Tensor<2>,
    /// `μ_old`, `[B, N]`.
    mean: Tensor<2>,
}

impl RecordedStep {
    /// The steps as step-major rows: every sample of the first step, then the next step.
    fn into_rows(
        steps: Vec<Self>,
        sample_group: &[usize],
        latent_dims: usize,
        device: &Device,
    ) -> TrajectoryRows {
        let samples = sample_group.len();
        let mut rows = TrajectoryRows {
            latents: Tensor::empty([0, latent_dims], device),
            next: Tensor::empty([0, latent_dims], device),
            old_mean: Tensor::empty([0, latent_dims], device),
            sigma: Vec::new(),
            sigma_next: Vec::new(),
            std: Vec::new(),
            velocity_scale: Vec::new(),
            step: Vec::new(),
            sample: Vec::new(),
            group: Vec::new(),
        };
        if steps.is_empty() {
            return rows;
        }
        let (mut latents, mut nexts, mut means) = (Vec::new(), Vec::new(), Vec::new());
        for recorded in steps {
            let per_sample = |value: f64| std::iter::repeat_n(value, samples);
            rows.sigma.extend(per_sample(recorded.sigma));
            rows.sigma_next.extend(per_sample(recorded.sigma_next));
            rows.std.extend(per_sample(recorded.coefficients.std));
            rows.velocity_scale
                .extend(per_sample(recorded.coefficients.velocity_scale));
            rows.step
                .extend(std::iter::repeat_n(recorded.step, samples));
            rows.sample.extend(0..samples);
            rows.group.extend(sample_group.iter().copied());
            latents.push(recorded.latents);
            nexts.push(recorded.next);
            means.push(recorded.mean);
        }
        rows.latents = Tensor::cat(latents, 0);
        rows.next = Tensor::cat(nexts, 0);
        rows.old_mean = Tensor::cat(means, 0);
        rows
    }
}
