use burn::config::Config;

use super::{StepCoefficients, StepKernel, check_eta, check_sigmas};
use crate::error::Result;

/// Configuration of [`Cps`].
#[derive(Config, Debug, PartialEq)]
pub struct CpsConfig {
    /// Noise level η in `[0, 1)`: the fraction of σ' that is fresh noise, as an angle.
    #[config(default = 0.8)]
    pub eta: f64,
}

impl CpsConfig {
    /// Builds the kernel, checking `η ∈ [0, 1)`.
    pub fn init(&self) -> Result<Cps> {
        check_eta("cps", self.eta)?;
        Ok(Cps { eta: self.eta })
    }
}

/// Coefficients-preserving sampling (ALGORITHMS.md §2):
///
/// ```text
/// s  = σ'·sin(η·π/2)
/// x̂0 = x − σ·v,   x̂1 = x + (1 − σ)·v
/// μ  = x̂0·(1 − σ') + x̂1·sqrt(σ'² − s²)
/// ```
///
/// The next latent keeps the flow's `(1 − σ')·x0 + σ'·noise` coefficients exactly. Unlike the
/// reference code, which scores with an unscaled surrogate `−mean((x' − μ)²)`, this crate
/// scores CPS steps with the exact Gaussian log-probability, so the ratio is a true importance
/// ratio. The last step (σ' = 0) is deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cps {
    eta: f64,
}

impl Cps {
    /// The noise level η.
    pub fn eta(&self) -> f64 {
        self.eta
    }
}

impl StepKernel for Cps {
    fn name(&self) -> &'static str {
        "cps"
    }

    fn coefficients(&self, sigma: f64, sigma_next: f64) -> Result<StepCoefficients> {
        check_sigmas(sigma, sigma_next)?;
        let angle = self.eta * std::f64::consts::FRAC_PI_2;
        let std = sigma_next * angle.sin();
        // sqrt(σ'² − s²) written without the subtraction, which can round below zero.
        let signal = sigma_next * angle.cos();
        Ok(StepCoefficients {
            sample_scale: (1.0 - sigma_next) + signal,
            velocity_scale: -sigma * (1.0 - sigma_next) + (1.0 - sigma) * signal,
            std,
        })
    }
}
