use super::{StepCoefficients, StepKernel, check_sigmas};
use crate::error::Result;

/// The deterministic Euler step `μ = x + v·dt`, `s = 0`. It has no log-probability and is
/// never trained; rollouts use it for the steps that are not stochastic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ode;

impl StepKernel for Ode {
    fn name(&self) -> &'static str {
        "ode"
    }

    fn coefficients(&self, sigma: f64, sigma_next: f64) -> Result<StepCoefficients> {
        check_sigmas(sigma, sigma_next)?;
        Ok(StepCoefficients {
            sample_scale: 1.0,
            velocity_scale: sigma_next - sigma,
            std: 0.0,
        })
    }
}
