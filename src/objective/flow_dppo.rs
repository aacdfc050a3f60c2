use burn::config::Config;

use super::TrustRegionObjective;
use super::batch::RowBatch;
use super::metrics::{HostRows, MaskMetrics, ObjectiveOutput, fraction, joint_fraction};
use super::terms::{RowTerms, active_surrogate};
use crate::error::{Error, Result};
use crate::tensor_util::{expect_vector, to_f32};

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
        let (rows, _) = batch.validate()?;
        let terms = RowTerms::new(batch);
        let log_ratio = terms.log_ratio();
        let divergence = match self.divergence {
            DppoDivergence::MeanKl => terms.kl.clone(),
            DppoDivergence::Velocity => {
                let scale = batch.velocity_scale.clone().ok_or_else(|| {
                    Error::invalid(
                        "velocity_scale",
                        "None",
                        "the kernel's per-row velocity coefficients (RowBatch::with_velocity_scale) for the velocity-space divergence",
                    )
                })?;
                expect_vector("velocity_scale", &scale, rows)?;
                let scale = to_f32(scale).detach();
                terms.mean_sq_diff.clone() / (scale.clone() * scale)
            }
        };
        let over_threshold = divergence.clone().greater_equal_elem(self.threshold);
        let log_ratio_value = log_ratio.clone().detach();
        let drop = match self.mask {
            DppoMask::Symmetric => over_threshold.clone(),
            DppoMask::AdvantageAware => {
                let advantages = batch.advantages.clone();
                // r > 1 ⟺ log r > 0: comparing the log avoids rounding in exp.
                let pushes_up = advantages
                    .clone()
                    .greater_elem(0.0)
                    .bool_and(log_ratio_value.clone().greater_elem(0.0));
                let pushes_down = advantages
                    .lower_elem(0.0)
                    .bool_and(log_ratio_value.lower_elem(0.0));
                over_threshold
                    .clone()
                    .bool_and(pushes_up.bool_or(pushes_down))
            }
        };
        let row_loss = active_surrogate(log_ratio.clone(), batch.advantages.clone(), drop.clone());
        let host = HostRows::read(
            &log_ratio,
            &terms.kl,
            &terms.std,
            &batch.advantages,
            &row_loss,
            vec![divergence, over_threshold.float(), drop.float()],
        )?;
        let (divergence, over, dropped) = (&host.extra[0], &host.extra[1], &host.extra[2]);
        let positive: Vec<f32> = host
            .advantages
            .iter()
            .map(|&a| f32::from(a > 0.0))
            .collect();
        let negative: Vec<f32> = host
            .advantages
            .iter()
            .map(|&a| f32::from(a < 0.0))
            .collect();
        let mut metrics = host.common_metrics();
        metrics.mask = Some(MaskMetrics {
            divergence_mean: divergence.iter().map(|&d| d as f64).sum::<f64>() / rows as f64,
            divergence_max: divergence
                .iter()
                .fold(f64::NEG_INFINITY, |m, &d| m.max(d as f64)),
            over_threshold_fraction: fraction(over),
            dropped_fraction: fraction(dropped),
            dropped_positive_fraction: joint_fraction(dropped, &positive),
            dropped_negative_fraction: joint_fraction(dropped, &negative),
        });
        Ok(ObjectiveOutput {
            loss: row_loss.mean(),
            metrics,
        })
    }
}
