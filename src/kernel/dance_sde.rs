use burn::config::Config;

use super::flow_sde::sde_coefficients;
use super::{StepCoefficients, StepKernel, check_eta, check_sigmas};
use crate::error::Result;

/// Configuration of [`DanceSde`].
#[derive(Config, Debug, PartialEq)]
pub struct DanceSdeConfig {
    /// Constant diffusion level η in `[0, 1)` (DanceGRPO uses 0.3).
    #[config(default = 0.3)]
    pub eta: f64,
}

impl DanceSdeConfig {
    /// Builds the kernel, checking `η ∈ [0, 1)`.
    pub fn init(&self) -> Result<DanceSde> {
        check_eta("dance-sde", self.eta)?;
        Ok(DanceSde { eta: self.eta })
    }
}

/// DanceGRPO's SDE sampler: the [`FlowSde`](super::FlowSde) mean with a constant
/// `σ_t = η`, and `s = η·sqrt(−dt)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DanceSde {
    eta: f64,
}

impl DanceSde {
    /// The diffusion level η.
    pub fn eta(&self) -> f64 {
        self.eta
    }
}

impl StepKernel for DanceSde {
    fn name(&self) -> &'static str {
        "dance-sde"
    }

    fn coefficients(&self, sigma: f64, sigma_next: f64) -> Result<StepCoefficients> {
        check_sigmas(sigma, sigma_next)?;
        Ok(sde_coefficients(sigma, sigma_next, self.eta))
    }
}
