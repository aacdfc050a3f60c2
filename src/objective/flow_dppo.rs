use burn::config::Config;
use burn::prelude::*;

use super::TrustRegionObjective;
use super::batch::RowBatch;
use super::evaluate::{Decision, RowValues, evaluate};
use super::metrics::ObjectiveOutput;
use super::terms::{RowTerms, active_surrogate};
use crate::error::{Error, Result};
use crate::tensor_util::to_f32;

/// Which rows Flow-DPPO drops once their divergence reaches τ.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum DppoMask {
    /// Drop only updates that leave the trust region *and* push further in the advantage's
    /// direction (A > 0 with r > 1, or A < 0 with r < 1); corrective updates always pass.
    AdvantageAware,
    /// Drop every row whose divergence reaches τ, whatever its direction.
    Symmetric,
}

/// Which divergence gates Flow-DPPO's mask.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum DppoDivergence {
    /// The exact `KL(π_old ‖ π_new) = mean_N(d²)/(2s²)` of the Gaussian step.
    MeanKl,
    /// `mean_N((v_new − v_old)²)`, computed as `mean_N(d²)/b²`; needs
    /// [`RowBatch::velocity_scale`]. Its scale differs from the KL's: re-calibrate τ.
    Velocity,
}

/// Configuration of [`FlowDppo`]; the defaults are the paper's.
#[derive(Config, Debug, PartialEq)]
pub struct FlowDppoConfig {
    /// τ, the divergence threshold, in mean-reduced units (a summed KL is N times larger).
    #[config(default = 1e-5)]
    pub threshold: f64,
    /// Which rows are dropped once over τ.
    #[config(default = "DppoMask::AdvantageAware")]
    pub mask: DppoMask,
    /// Which divergence is compared with τ.
    #[config(default = "DppoDivergence::MeanKl")]
    pub divergence: DppoDivergence,
}

impl FlowDppoConfig {
    /// Builds the objective, checking `τ > 0`.
    pub fn init(&self) -> Result<FlowDppo> {
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(Error::invalid(
                "threshold (tau)",
                self.threshold,
                "a finite τ > 0 in mean-reduced units (the paper uses 1e-5)",
            ));
        }
        Ok(FlowDppo {
            threshold: self.threshold,
            mask: self.mask,
            divergence: self.divergence,
        })
    }
}

/// Flow-DPPO's divergence-proximal objective (ALGORITHMS.md §4):
///
/// ```text
/// D    = KL(π_old ‖ π_new)                       (exact, per row, no gradient)
/// drop = D ≥ τ  and  ((A > 0 and r > 1) or (A < 0 and r < 1))
/// L    = mean_rows( drop ? 0 : −A·r )
/// ```
///
/// There is no clipping: a row either carries its full policy gradient or none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowDppo {
    threshold: f64,
    mask: DppoMask,
    divergence: DppoDivergence,
}

impl TrustRegionObjective for FlowDppo {
    fn name(&self) -> &'static str {
        "flow-dppo"
    }

    fn loss(&self, batch: &RowBatch) -> Result<ObjectiveOutput> {
        evaluate(batch, |terms| {
            let log_ratio = terms.log_ratio();
            let divergence = self.divergence(batch, terms)?;
            let over_threshold = divergence.clone().greater_equal_elem(self.threshold);
            let dropped = match self.mask {
                DppoMask::Symmetric => over_threshold.clone(),
                DppoMask::AdvantageAware => {
                    let advantages = batch.advantages.clone();
                    let log_ratio = log_ratio.clone().detach();
                    // r > 1 ⟺ log r > 0: comparing the log avoids rounding in exp.
                    let pushes_up = advantages
                        .clone()
                        .greater_elem(0.0)
                        .bool_and(log_ratio.clone().greater_elem(0.0));
                    let pushes_down = advantages
                        .lower_elem(0.0)
                        .bool_and(log_ratio.lower_elem(0.0));
                    over_threshold
                        .clone()
                        .bool_and(pushes_up.bool_or(pushes_down))
                }
            };
            let row_loss =
                active_surrogate(log_ratio.clone(), batch.advantages.clone(), dropped.clone());
            Ok(RowValues {
                log_ratio,
                row_loss,
                regulated_log_ratio: None,
                weighting_dt: None,
                decision: Decision::Mask {
                    divergence,
                    over_threshold,
                    dropped,
                },
            })
        })
    }
}

impl FlowDppo {
    /// The gating divergence D per row, detached, `[R]`.
    fn divergence(&self, batch: &RowBatch, terms: &RowTerms) -> Result<Tensor<1>> {
        match self.divergence {
            DppoDivergence::MeanKl => Ok(terms.kl.clone()),
            DppoDivergence::Velocity => {
                // RowBatch::validate has checked its shape.
                let scale = batch.velocity_scale.clone().ok_or_else(|| {
                    Error::invalid(
                        "velocity_scale",
                        "None",
                        "the kernel's per-row velocity coefficients (RowBatch::with_velocity_scale) for the velocity-space divergence",
                    )
                })?;
                let scale = to_f32(scale).detach();
                Ok(terms.mean_sq_diff.clone() / (scale.clone() * scale))
            }
        }
    }
}
