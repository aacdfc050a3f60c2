//! Runs the denoising chain under no-grad and records every trained (SDE) step.

use burn::config::Config;
use burn::prelude::*;

use crate::error::{Error, Result};
use crate::kernel::{Ode, StepKernel};
use crate::policy::{ConditionBatch, FlowPolicy, checked_velocity};
use crate::rng::Rng;
use crate::schedule::SigmaSchedule;

/// Configuration of [`rollout`].
#[derive(Config, Debug, PartialEq)]
pub struct RolloutConfig {
    /// Samples per condition (the group size G).
    #[config(default = 16)]
    pub group_size: usize,
    /// Start every member of a group from the same noise (otherwise each has its own).
    #[config(default = false)]
    pub shared_initial_noise: bool,
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

/// Samples `group_conditions.len()` groups of `config.group_size` latents of `latent_dims`
/// dimensions with `policy` under no-grad, running `kernel` at `sde_steps` and the ODE
/// elsewhere, and records every SDE step's rows.
///
/// Noise comes from `rng` (through the device's generator), so the rollout is reproducible.
#[allow(clippy::too_many_arguments)]
pub fn rollout<P: FlowPolicy>(
    policy: &P,
    group_conditions: &P::Condition,
    config: &RolloutConfig,
    schedule: &SigmaSchedule,
    kernel: &dyn StepKernel,
    sde_steps: &[usize],
    latent_dims: usize,
    rng: &mut Rng,
) -> Result<Rollout<P::Condition>> {
    let groups = group_conditions.len();
    if groups == 0 || config.group_size == 0 || latent_dims == 0 {
        return Err(Error::invalid(
            "groups × group_size × latent_dims",
            format!("{groups} × {} × {latent_dims}", config.group_size),
            "all at least 1",
        ));
    }
    if let Some(&bad) = sde_steps.iter().find(|&&s| s >= schedule.steps()) {
        return Err(Error::invalid(
            "sde step",
            bad,
            format!("a step in 0..{}", schedule.steps()),
        ));
    }
    let policy = policy.valid();
    let samples = groups * config.group_size;
    let sample_group: Vec<usize> = (0..samples).map(|i| i / config.group_size).collect();
    let conditions = group_conditions.pick(&sample_group);
    let device = first_device(&policy)?.without_autodiff();
    let mut x = if config.shared_initial_noise {
        let per_group = rng.normal_tensor([groups, latent_dims], &device);
        per_group.select(0, int_index(&sample_group, &device))
    } else {
        rng.normal_tensor([samples, latent_dims], &device)
    };

    let mut rows = TrajectoryRows {
        latents: Tensor::empty([0, latent_dims], &device),
        next: Tensor::empty([0, latent_dims], &device),
        old_mean: Tensor::empty([0, latent_dims], &device),
        sigma: Vec::new(),
        sigma_next: Vec::new(),
        std: Vec::new(),
        velocity_scale: Vec::new(),
        step: Vec::new(),
        sample: Vec::new(),
        group: Vec::new(),
    };
    let (mut latents, mut nexts, mut means) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..schedule.steps() {
        let (sigma, sigma_next) = schedule.step(step)?;
        let sigma_row = Tensor::<1>::full([samples], sigma, &device);
        let velocity = checked_velocity(&policy, x.clone(), sigma_row, &conditions)?;
        if !sde_steps.contains(&step) {
            x = Ode
                .transition(
                    x,
                    velocity,
                    &vec![sigma; samples],
                    &vec![sigma_next; samples],
                )?
                .mean;
            continue;
        }
        let transition = kernel.transition(
            x.clone(),
            velocity,
            &vec![sigma; samples],
            &vec![sigma_next; samples],
        )?;
        let coefficients = transition.coefficients[0];
        if coefficients.std <= 0.0 {
            return Err(Error::invalid(
                format!("sde step {step}"),
                format!("{} with s = 0 (σ' = {sigma_next})", kernel.name()),
                "a step where the kernel is stochastic; the last step is deterministic for CPS",
            ));
        }
        let noise = rng.normal_tensor([samples, latent_dims], &device);
        let next = transition.sample(noise)?;
        latents.push(x);
        nexts.push(next.clone());
        means.push(transition.mean);
        rows.sigma.extend(std::iter::repeat_n(sigma, samples));
        rows.sigma_next
            .extend(std::iter::repeat_n(sigma_next, samples));
        rows.std
            .extend(std::iter::repeat_n(coefficients.std, samples));
        rows.velocity_scale
            .extend(std::iter::repeat_n(coefficients.velocity_scale, samples));
        rows.step.extend(std::iter::repeat_n(step, samples));
        rows.sample.extend(0..samples);
        rows.group.extend(sample_group.iter().copied());
        x = next;
    }
    if !latents.is_empty() {
        rows.latents = Tensor::cat(latents, 0);
        rows.next = Tensor::cat(nexts, 0);
        rows.old_mean = Tensor::cat(means, 0);
    }
    Ok(Rollout {
        samples: x,
        conditions,
        rows,
        sde_steps: sde_steps.to_vec(),
    })
}

/// The device of the policy's first parameter.
pub(crate) fn first_device<P: FlowPolicy>(policy: &P) -> Result<Device> {
    policy.devices().into_iter().next().ok_or_else(|| {
        Error::invalid(
            "policy",
            "a module without parameters",
            "a policy with parameters",
        )
    })
}

pub(crate) fn int_index(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}
