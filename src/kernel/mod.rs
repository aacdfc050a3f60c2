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
use crate::tensor_util::{column, expect_matrix, int_index, to_f32, vector};

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

    /// `log π(x' | μ, s)`, mean-reduced over N (ALGORITHMS.md §3), for `next` of shape
    /// `[R, N]`; `[R]`.
    ///
    /// Errors if any row is deterministic (`s = 0`): such a step has no log-probability. For
    /// a batch that mixes stochastic and deterministic rows, use
    /// [`Transition::stochastic_log_prob`].
    pub fn log_prob(&self, next: Tensor<2>) -> Result<Tensor<1>> {
        self.check_stds()?;
        if let Some(row) = self.coefficients.iter().position(|c| c.std == 0.0) {
            return Err(Error::invalid(
                format!("std of row {row}"),
                self.coefficients[row].std,
                "s > 0: a deterministic (ODE) step has no log-probability \
                 (Transition::stochastic_log_prob scores the stochastic rows of a mixed batch)",
            ));
        }
        gaussian_log_prob(next, self.mean.clone(), self.std.clone())
    }

    /// The rows that have a log-probability (`s > 0`), in ascending order. The others are
    /// deterministic: an ODE step, or the last step of [`Cps`] (σ' = 0).
    pub fn stochastic_rows(&self) -> Vec<usize> {
        (0..self.coefficients.len())
            .filter(|&row| self.coefficients[row].std > 0.0)
            .collect()
    }

    /// The log-probabilities of the stochastic rows of a batch that may mix stochastic and
    /// deterministic steps: `(rows, log_prob)` with `rows` = [`Transition::stochastic_rows`]
    /// (K of them) and `log_prob[k] = log π(next[rows[k]] | μ[rows[k]], s[rows[k]])`,
    /// mean-reduced over N, `[K]`. `next` is `[R, N]`; K may be 0.
    ///
    /// Errors if `next` is not `[R, N]`, or if a row's std is neither 0 nor finite and > 0.
    ///
    /// ```
    /// use burn::prelude::*;
    /// use flow_rl::kernel::{CpsConfig, StepKernel};
    ///
    /// let device = Device::default();
    /// let kernel = CpsConfig::new().init()?;
    /// // Row 0 takes a middle step; row 1 CPS's last step (σ' = 0), which is deterministic.
    /// let x = Tensor::<2>::ones([2, 4], &device); // [R, N]
    /// let v = Tensor::<2>::zeros([2, 4], &device);
    /// let step = kernel.transition(x, v, &[0.5, 0.25], &[0.25, 0.0])?;
    /// let next = step.mean.clone(); // x' = μ: the Gaussian's mode
    /// assert!(step.log_prob(next.clone()).is_err());
    /// let (rows, log_prob) = step.stochastic_log_prob(next)?;
    /// assert_eq!(rows, vec![0]);
    /// assert_eq!(log_prob.dims(), [1]); // [K]
    /// # Ok::<(), flow_rl::Error>(())
    /// ```
    pub fn stochastic_log_prob(&self, next: Tensor<2>) -> Result<(Vec<usize>, Tensor<1>)> {
        let [rows, dims] = self.mean.dims();
        expect_matrix("next", &next, rows, dims)?;
        self.check_stds()?;
        let stochastic = self.stochastic_rows();
        let device = self.mean.device();
        let log_prob = if stochastic.is_empty() {
            Tensor::zeros([0], &device)
        } else if stochastic.len() == rows {
            gaussian_log_prob(next, self.mean.clone(), self.std.clone())?
        } else {
            let indices = int_index(&stochastic, &device);
            gaussian_log_prob(
                next.select(0, indices.clone()),
                self.mean.clone().select(0, indices.clone()),
                self.std.clone().select(0, indices),
            )?
        };
        Ok((stochastic, log_prob))
    }

    /// Every std must be 0 (deterministic) or finite and > 0.
    fn check_stds(&self) -> Result<()> {
        let valid = |s: f64| s == 0.0 || (s.is_finite() && s > 0.0);
        match self.coefficients.iter().position(|c| !valid(c.std)) {
            Some(row) => Err(Error::invalid(
                format!("std of row {row}"),
                self.coefficients[row].std,
                "0 (a deterministic step) or a finite s > 0",
            )),
            None => Ok(()),
        }
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
