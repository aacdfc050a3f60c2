//! Step kernels: each denoising step as a Gaussian policy `N(μ, s²I)` over the next latent.
//!
//! Every kernel in the crate is linear in the latent and the velocity,
//! `μ = a·x + b·v`, with a per-step std `s` ([`StepCoefficients`]). The coefficients are
//! computed on the host in f64 from `(σ, σ')`; the tensor work is two broadcast products and
//! a sum, in f32 whatever the model's dtype. Sampling ([`Transition::sample`]) and scoring
//! ([`Transition::log_prob`]) use the same [`Transition`], so a rollout and its replay cannot
//! disagree.
//!
//! ```
//! use burn::prelude::*;
//! use flow_rl::kernel::{FlowSdeConfig, StepKernel};
//!
//! let device = Device::default();
//! let kernel = FlowSdeConfig::new().init()?; // η = 0.7
//! let x = Tensor::<2>::ones([2, 4], &device); // [R, N]
//! let v = Tensor::<2>::zeros([2, 4], &device);
//! let step = kernel.transition(x, v, &[1.0, 1.0], &[0.964286, 0.964286])?;
//! assert_eq!(step.mean.dims(), [2, 4]);
//! assert!((step.coefficients[0].std - 0.7).abs() < 1e-3);
//! # Ok::<(), flow_rl::Error>(())
//! ```

mod cps;
mod dance_sde;
mod flow_sde;
mod gaussian;
mod ode;

pub use cps::{Cps, CpsConfig};
pub use dance_sde::{DanceSde, DanceSdeConfig};
pub use flow_sde::{FlowSde, FlowSdeConfig};
pub use gaussian::{gaussian_kl, gaussian_log_prob};
pub use ode::Ode;

use burn::config::Config;
use burn::prelude::*;

use crate::error::{Error, Result};
use crate::tensor_util::{column, expect_matrix, to_f32, vector};

/// The coefficients of one step: `μ = sample_scale·x + velocity_scale·v`, std `std`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCoefficients {
    /// `a`, the weight of the current latent x in the mean.
    pub sample_scale: f64,
    /// `b`, the weight of the velocity v in the mean. Because x is shared by the old and new
    /// policy, `μ_new − μ_old = b·(v_new − v_old)`.
    pub velocity_scale: f64,
    /// `s`, the std of the step's Gaussian; 0 for a deterministic step.
    pub std: f64,
}

/// One step's Gaussian over the next latent, for R rows.
#[derive(Debug, Clone)]
pub struct Transition {
    /// `μ`, `[R, N]`, f32.
    pub mean: Tensor<2>,
    /// `s` per row, `[R]`, f32.
    pub std: Tensor<1>,
    /// The per-row coefficients on the host, so callers can read `s` without a device sync.
    pub coefficients: Vec<StepCoefficients>,
}

impl Transition {
    /// Draws `x' = μ + s·ε` for a given standard-normal `noise` of shape `[R, N]`.
    pub fn sample(&self, noise: Tensor<2>) -> Result<Tensor<2>> {
        let [rows, dims] = self.mean.dims();
        expect_matrix("noise", &noise, rows, dims)?;
        Ok(self.mean.clone() + to_f32(noise) * self.std.clone().unsqueeze_dim::<2>(1))
    }

    /// `log π(x' | μ, s)`, mean-reduced over N (ALGORITHMS.md §3), `[R]`.
    ///
    /// Errors if any row is deterministic (`s = 0`): such a step has no log-probability.
    pub fn log_prob(&self, next: Tensor<2>) -> Result<Tensor<1>> {
        if let Some(row) = self.coefficients.iter().position(|c| c.std <= 0.0) {
            return Err(Error::invalid(
                format!("std of row {row}"),
                self.coefficients[row].std,
                "s > 0: a deterministic (ODE) step has no log-probability",
            ));
        }
        gaussian_log_prob(next, self.mean.clone(), self.std.clone())
    }
}

/// A denoising step as a Gaussian policy. Implement [`StepKernel::coefficients`]; the tensor
/// work is shared.
pub trait StepKernel: std::fmt::Debug + Send + Sync {
    /// A short name for logs, e.g. `"flow-sde"`.
    fn name(&self) -> &'static str;

    /// The coefficients of the step from `sigma` to `sigma_next`.
    ///
    /// Errors unless `0 ≤ σ' < σ ≤ 1`.
    fn coefficients(&self, sigma: f64, sigma_next: f64) -> Result<StepCoefficients>;

    /// The Gaussian of the next latent for R rows: `x`, `velocity` are `[R, N]` (any float
    /// dtype; the result is f32), `sigma` and `sigma_next` hold one value per row.
    fn transition(
        &self,
        x: Tensor<2>,
        velocity: Tensor<2>,
        sigma: &[f64],
        sigma_next: &[f64],
    ) -> Result<Transition> {
        let [rows, dims] = x.dims();
        expect_matrix("velocity", &velocity, rows, dims)?;
        for (name, values) in [("sigma", sigma), ("sigma_next", sigma_next)] {
            if values.len() != rows {
                return Err(Error::shape(
                    name,
                    format!("{rows} values (one per row of x)"),
                    [values.len()],
                ));
            }
        }
        let coefficients = sigma
            .iter()
            .zip(sigma_next)
            .map(|(&s, &s_next)| self.coefficients(s, s_next))
            .collect::<Result<Vec<_>>>()?;
        let device = x.device();
        let sample_scale: Vec<f64> = coefficients.iter().map(|c| c.sample_scale).collect();
        let velocity_scale: Vec<f64> = coefficients.iter().map(|c| c.velocity_scale).collect();
        let std: Vec<f64> = coefficients.iter().map(|c| c.std).collect();
        let mean = to_f32(x) * column(&sample_scale, &device)
            + to_f32(velocity) * column(&velocity_scale, &device);
        Ok(Transition {
            mean,
            std: vector(&std, &device),
            coefficients,
        })
    }
}

/// Checks `0 ≤ σ' < σ ≤ 1`, both finite.
pub(crate) fn check_sigmas(sigma: f64, sigma_next: f64) -> Result<()> {
    if !(sigma.is_finite() && sigma > 0.0 && sigma <= 1.0) {
        return Err(Error::invalid("sigma", sigma, "a noise level in (0, 1]"));
    }
    if !(sigma_next.is_finite() && sigma_next >= 0.0 && sigma_next < sigma) {
        return Err(Error::invalid(
            "sigma_next",
            sigma_next,
            format!("a noise level in [0, σ = {sigma}) (steps go from noise to data)"),
        ));
    }
    Ok(())
}

/// Checks that an SDE kernel's noise level η lies in `[0, 1)`.
pub(crate) fn check_eta(kernel: &str, eta: f64) -> Result<()> {
    if !(0.0..1.0).contains(&eta) {
        return Err(Error::invalid(
            format!("{kernel} eta"),
            eta,
            "a noise level η in [0, 1)",
        ));
    }
    Ok(())
}

/// A serialisable choice of kernel, for configs and command lines.
#[derive(Config, Debug, PartialEq)]
pub enum KernelConfig {
    /// Flow-GRPO's SDE, see [`FlowSde`].
    FlowSde(FlowSdeConfig),
    /// DanceGRPO's SDE, see [`DanceSde`].
    DanceSde(DanceSdeConfig),
    /// Coefficients-preserving sampling, see [`Cps`].
    Cps(CpsConfig),
    /// Deterministic Euler steps, see [`Ode`].
    Ode,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig::FlowSde(FlowSdeConfig::new())
    }
}

impl KernelConfig {
    /// Builds the kernel, validating its parameters.
    pub fn init(&self) -> Result<Box<dyn StepKernel>> {
        Ok(match self {
            KernelConfig::FlowSde(config) => Box::new(config.init()?),
            KernelConfig::DanceSde(config) => Box::new(config.init()?),
            KernelConfig::Cps(config) => Box::new(config.init()?),
            KernelConfig::Ode => Box::new(Ode),
        })
    }
}

#[cfg(test)]
mod tests;
