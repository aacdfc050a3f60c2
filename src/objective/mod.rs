//! Trust-region objectives over a batch of rows, behind one object-safe trait.
//!
//! Each objective maps a [`RowBatch`] (new and old transition means, the drawn sample, the
//! step's std and dt, the advantages) to a differentiable scalar loss and typed
//! [`ObjectiveMetrics`]. The loss is the mean over **all** rows: masked or clipped rows count
//! as zero rather than shrinking the denominator. Swapping objectives is one line:
//!
//! ```
//! use burn::prelude::*;
//! use flow_rl::objective::{
//!     FlowDppoConfig, RatioClipConfig, RowBatch, RowStatus, TrustRegionObjective,
//! };
//!
//! let device = Device::default().autodiff();
//! let (rows, dims) = (4, 8);
//! let old_mean = Tensor::<2>::zeros([rows, dims], &device);
//! let new_mean = Tensor::<2>::full([rows, dims], 1e-3, &device).require_grad();
//! let sample = Tensor::<2>::ones([rows, dims], &device).mul_scalar(0.5);
//! let std = Tensor::<1>::full([rows], 0.7, &device);
//! let dt = Tensor::<1>::full([rows], -0.1, &device);
//! let advantages = Tensor::<1>::from_floats([1.0, -1.0, 0.5, -0.5], &device);
//! let batch = RowBatch::new(new_mean.clone(), old_mean, sample, std, dt, advantages);
//!
//! let objective: Box<dyn TrustRegionObjective> = if true {
//!     Box::new(FlowDppoConfig::new().init()?)
//! } else {
//!     Box::new(RatioClipConfig::new().init()?)
//! };
//! let output = objective.loss(&batch)?;
//! let grads = output.loss.backward();
//! assert!(new_mean.grad(&grads).is_some());
//! println!("{} dropped {:.2}", objective.name(), output.metrics.mask.unwrap().dropped_fraction);
//! // Per row: what the mask did, and each row's log r, KL and loss term.
//! assert_eq!(output.rows.status.len(), rows);
//! assert_eq!(output.rows.status[0], RowStatus::Kept);
//! # Ok::<(), flow_rl::Error>(())
//! ```

mod batch;
mod diagnostics;
mod evaluate;
mod flow_dppo;
mod grpo_guard;
mod metrics;
mod ratio_clip;
mod reference_kl;
mod terms;

pub use batch::RowBatch;
pub use diagnostics::{RowDiagnostics, RowStatus};
pub use flow_dppo::{DppoDivergence, DppoMask, FlowDppo, FlowDppoConfig};
pub use grpo_guard::{GrpoGuard, GrpoGuardConfig};
pub use metrics::{ClipMetrics, MaskMetrics, ObjectiveMetrics, ObjectiveOutput, RatioStats};
pub use ratio_clip::{RatioClip, RatioClipConfig};
pub use reference_kl::{ReferenceKl, ReferenceKlConfig};

use burn::config::Config;

use crate::error::{Error, Result};

/// A trust-region policy-gradient objective over a batch of rows.
///
/// Object-safe, so a trainer can hold a `Box<dyn TrustRegionObjective>`.
pub trait TrustRegionObjective: std::fmt::Debug + Send + Sync {
    /// A short name for logs, e.g. `"flow-dppo"`.
    fn name(&self) -> &'static str;

    /// The loss (to minimise) and its diagnostics.
    ///
    /// The crate's objectives also return each row's log-ratio, KL, loss and
    /// [`RowStatus`] in [`ObjectiveOutput::rows`], from the same single read-back as the
    /// metrics.
    ///
    /// They reject any row that cannot give a finite loss, with an error naming the row and
    /// the value: shapes that disagree; a std that is not positive or whose square is not a
    /// normal f32; a non-finite advantage; a log-ratio or KL that is NaN or ±inf (non-finite
    /// means or sample); under GRPO-Guard's `1/|dt|` weight, a dt that is zero, subnormal or
    /// not finite; and a row that keeps its gradient while its ratio `exp(log r)` overflows
    /// f32 (the policy moved too far in one update: lower the learning rate).
    fn loss(&self, batch: &RowBatch) -> Result<ObjectiveOutput>;
}

impl<T: TrustRegionObjective + ?Sized> TrustRegionObjective for Box<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn loss(&self, batch: &RowBatch) -> Result<ObjectiveOutput> {
        (**self).loss(batch)
    }
}

impl<T: TrustRegionObjective + ?Sized> TrustRegionObjective for &T {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn loss(&self, batch: &RowBatch) -> Result<ObjectiveOutput> {
        (**self).loss(batch)
    }
}

/// A serialisable choice of objective, for configs and command lines.
#[derive(Config, Debug, PartialEq)]
pub enum ObjectiveConfig {
    /// PPO ratio clipping (Flow-GRPO).
    RatioClip(RatioClipConfig),
    /// Regulated clipping (GRPO-Guard).
    GrpoGuard(GrpoGuardConfig),
    /// Divergence-proximal masking (Flow-DPPO).
    FlowDppo(FlowDppoConfig),
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig::FlowDppo(FlowDppoConfig::new())
    }
}

impl ObjectiveConfig {
    /// Builds the objective, validating its parameters.
    pub fn init(&self) -> Result<Box<dyn TrustRegionObjective>> {
        Ok(match self {
            ObjectiveConfig::RatioClip(config) => Box::new(config.init()?),
            ObjectiveConfig::GrpoGuard(config) => Box::new(config.init()?),
            ObjectiveConfig::FlowDppo(config) => Box::new(config.init()?),
        })
    }

    /// The objective with its reference defaults, by its [`TrustRegionObjective::name`]:
    /// `"ratio-clip"`, `"grpo-guard"` or `"flow-dppo"`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "ratio-clip" => Ok(ObjectiveConfig::RatioClip(RatioClipConfig::new())),
            "grpo-guard" => Ok(ObjectiveConfig::GrpoGuard(GrpoGuardConfig::new())),
            "flow-dppo" => Ok(ObjectiveConfig::FlowDppo(FlowDppoConfig::new())),
            other => Err(Error::invalid(
                "objective",
                other,
                "one of \"ratio-clip\", \"grpo-guard\", \"flow-dppo\"",
            )),
        }
    }
}

/// Checks a clip width: finite, ≥ 0, and below 1 where it bounds the ratio from below.
fn check_epsilon(name: &str, epsilon: f64, lower_bound: bool) -> Result<()> {
    let valid = epsilon.is_finite() && epsilon >= 0.0 && (!lower_bound || epsilon < 1.0);
    if !valid {
        let expected = if lower_bound {
            "a clip width ε in [0, 1)"
        } else {
            "a finite clip width ε ≥ 0"
        };
        return Err(Error::invalid(name, epsilon, expected));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
