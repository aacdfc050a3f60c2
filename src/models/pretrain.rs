//! Flow-matching (rectified-flow) pre-training, to make a base model in seconds.

use burn::config::Config;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;

use crate::error::{Error, Result};
use crate::policy::FlowPolicy;
use crate::rng::Rng;
use crate::tensor_util::host_values;

/// Configuration of [`pretrain_flow_matching`].
#[derive(Config, Debug, PartialEq)]
pub struct FlowMatchingConfig {
    /// Optimiser steps.
    #[config(default = 2000)]
    pub steps: usize,
    /// Samples per step.
    #[config(default = 256)]
    pub batch_size: usize,
    /// AdamW learning rate (of the first step, when [`Self::final_learning_rate`] is set).
    #[config(default = 2e-3)]
    pub learning_rate: f64,
    /// When set, the learning rate follows a cosine from `learning_rate` at the first step
    /// to this value at the last (see [`FlowMatchingConfig::learning_rate_at`]); when not,
    /// it stays constant.
    #[config(default = "None")]
    pub final_learning_rate: Option<f64>,
    /// Seed of σ and noise draws.
    #[config(default = 0)]
    pub seed: u64,
}

impl FlowMatchingConfig {
    /// The learning rate of step `step` (from 0): `learning_rate` throughout, or with a
    /// final rate `f`, `f + (learning_rate − f)·(1 + cos(π·step/(steps − 1)))/2`.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        match self.final_learning_rate {
            None => self.learning_rate,
            Some(last) => {
                let progress = step as f64 / (self.steps.max(2) - 1) as f64;
                let cosine = (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()) / 2.0;
                last + (self.learning_rate - last) * cosine
            }
        }
    }
}

/// Trains `policy` with the rectified-flow loss `mean((v_θ(x_σ, σ) − (n − x₀))²)`,
/// `x_σ = (1 − σ)·x₀ + σ·n`, σ ~ U(0, 1), n ~ N(0, I), so that the ODE from noise at σ = 1
/// to σ = 0 transports noise to data.
///
/// `data(batch_size, rng)` returns data samples `[B, N]` and their conditions. `progress` is
/// called after each step with (step, loss). `policy` must live on an autodiff device.
/// Returns the trained policy and the mean loss of the last 10% of steps.
pub fn pretrain_flow_matching<P: FlowPolicy>(
    mut policy: P,
    config: &FlowMatchingConfig,
    mut data: impl FnMut(usize, &mut Rng) -> (Tensor<2>, P::Condition),
    mut progress: impl FnMut(usize, f64),
) -> Result<(P, f64)> {
    if config.steps == 0 || config.batch_size == 0 {
        return Err(Error::invalid(
            "steps / batch_size",
            format!("{} / {}", config.steps, config.batch_size),
            "both at least 1",
        ));
    }
    let rates_valid = [Some(config.learning_rate), config.final_learning_rate]
        .into_iter()
        .flatten()
        .all(|rate| rate.is_finite() && rate >= 0.0);
    if !rates_valid {
        return Err(Error::invalid(
            "learning_rate / final_learning_rate",
            format!(
                "{} / {:?}",
                config.learning_rate, config.final_learning_rate
            ),
            "finite and non-negative",
        ));
    }
    let mut optimizer = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init();
    let mut rng = Rng::seed_from(config.seed);
    let tail_start = config.steps - (config.steps / 10).max(1);
    let mut tail_loss = 0.0;
    for step in 0..config.steps {
        let (data_batch, condition) = data(config.batch_size, &mut rng);
        let device = data_batch.device();
        let [rows, dims] = data_batch.dims();
        let noise = rng.normal_tensor([rows, dims], &device);
        let sigma = rng.uniform_tensor(rows, &device);
        let weight = sigma.clone().unsqueeze_dim::<2>(1);
        let noisy = data_batch.clone() * (weight.clone().neg() + 1.0) + noise.clone() * weight;
        let target = noise - data_batch;
        let error = policy.velocity(noisy, sigma, &condition) - target;
        let loss = (error.clone() * error).mean();
        let value = host_values(loss.clone().detach())?[0] as f64;
        if !value.is_finite() {
            return Err(Error::NonFinite {
                what: "flow-matching loss at step".into(),
                index: step,
                value,
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &policy);
        policy = optimizer.step(config.learning_rate_at(step), policy, grads);
        if step >= tail_start {
            tail_loss += value / (config.steps - tail_start) as f64;
        }
        progress(step, value);
    }
    Ok((policy, tail_loss))
}

#[cfg(test)]
mod tests {
    use super::FlowMatchingConfig;

    #[test]
    fn cosine_schedule_runs_from_the_first_rate_to_the_final_one() {
        let config = FlowMatchingConfig::new()
            .with_steps(101)
            .with_learning_rate(1e-3)
            .with_final_learning_rate(Some(1e-5));
        assert_eq!(config.learning_rate_at(0), 1e-3);
        assert!((config.learning_rate_at(100) - 1e-5).abs() < 1e-18);
        // Halfway the cosine is at its mean.
        assert!((config.learning_rate_at(50) - (1e-3 + 1e-5) / 2.0).abs() < 1e-15);
        let rates: Vec<f64> = (0..101).map(|step| config.learning_rate_at(step)).collect();
        assert!(rates.windows(2).all(|pair| pair[1] < pair[0]));
        let constant = FlowMatchingConfig::new().with_learning_rate(3e-4);
        assert_eq!(constant.learning_rate_at(0), 3e-4);
        assert_eq!(constant.learning_rate_at(1999), 3e-4);
    }
}
