use burn::config::Config;

use super::{StepCoefficients, StepKernel, check_eta, check_sigmas};
use crate::error::Result;

/// Configuration of [`FlowSde`].
#[derive(Config, Debug, PartialEq)]
pub struct FlowSdeConfig {
    /// Noise level η in `[0, 1)`.
    #[config(default = 0.7)]
    pub eta: f64,
}

impl FlowSdeConfig {
    /// Builds the kernel, checking `η ∈ [0, 1)`.
    pub fn init(&self) -> Result<FlowSde> {
        check_eta("flow-sde", self.eta)?;
        Ok(FlowSde { eta: self.eta })
    }
}

/// Flow-GRPO's SDE sampler (ALGORITHMS.md §2):
///
/// ```text
/// σ_t = η·sqrt(σ / (1 − σ̃)),   σ̃ = σ' when σ = 1, else σ
/// μ   = x·(1 + σ_t²·dt/(2σ)) + v·(1 + σ_t²·(1 − σ)/(2σ))·dt
/// s   = σ_t·sqrt(−dt)
/// ```
///
/// The reference substitutes the schedule's second value σ_1 for σ when σ = 1; the only step
/// with σ = 1 is step 0, whose σ' is σ_1, so using σ' is the same rule without needing the
/// schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowSde {
    eta: f64,
}

impl FlowSde {
    /// The noise level η.
    pub fn eta(&self) -> f64 {
        self.eta
    }
}

impl StepKernel for FlowSde {
    fn name(&self) -> &'static str {
        "flow-sde"
    }

    fn coefficients(&self, sigma: f64, sigma_next: f64) -> Result<StepCoefficients> {
        check_sigmas(sigma, sigma_next)?;
        let sigma_tilde = if sigma == 1.0 { sigma_next } else { sigma };
        let sigma_t = self.eta * (sigma / (1.0 - sigma_tilde)).sqrt();
        Ok(sde_coefficients(sigma, sigma_next, sigma_t))
    }
}

/// The Flow-SDE mean and std for a given diffusion level σ_t (shared with Dance-SDE).
pub(super) fn sde_coefficients(sigma: f64, sigma_next: f64, sigma_t: f64) -> StepCoefficients {
    let dt = sigma_next - sigma;
    let variance = sigma_t * sigma_t;
    StepCoefficients {
        sample_scale: 1.0 + variance * dt / (2.0 * sigma),
        velocity_scale: (1.0 + variance * (1.0 - sigma) / (2.0 * sigma)) * dt,
        std: sigma_t * (-dt).sqrt(),
    }
}
