//! The per-row quantities every objective is built from.

use burn::prelude::*;

use super::batch::RowBatch;
use crate::tensor_util::{row_mean, to_f32};

/// Per-row log-ratio and exact KL, `[R]` each, from one pass over the latents.
///
/// With `e = x' − μ_old` and `d = μ_new − μ_old`, the Gaussian log-probs share `s`, so
///
/// ```text
/// log r = (mean_N(e·d) − ½·mean_N(d²)) / s²  =  mean_N(ε·d)/s − KL
/// KL    = ½·mean_N(d²) / s²
/// ```
///
/// which makes the exact KL a by-product of the ratio: no extra pass, no extra forward.
pub(crate) struct RowTerms {
    /// `log r`, differentiable through `μ_new`.
    pub log_ratio: Tensor<1>,
    /// `KL(π_old ‖ π_new)`, differentiable through `μ_new`.
    pub kl: Tensor<1>,
    /// `mean_N(e·d)/s²`, differentiable; GRPO-Guard's `log r̂ = s·this`.
    pub projected_noise: Tensor<1>,
    /// `mean_N(d²)`, detached; the velocity-space divergence divides it by `b²`.
    pub mean_sq_diff: Tensor<1>,
    /// `s` in f32, `[R]`.
    pub std: Tensor<1>,
}

impl RowTerms {
    pub(crate) fn new(batch: &RowBatch) -> Self {
        let old_mean = to_f32(batch.old_mean.clone()).detach();
        let diff = to_f32(batch.new_mean.clone()) - old_mean.clone();
        let residual = to_f32(batch.sample.clone()).detach() - old_mean;
        let std = to_f32(batch.std.clone()).detach();
        let variance = std.clone().powi_scalar(2);
        let projected_noise = row_mean(residual * diff.clone()).div(variance.clone());
        let mean_sq_diff = row_mean(diff.powi_scalar(2));
        let kl = mean_sq_diff.clone().div(variance.mul_scalar(2.0));
        Self {
            log_ratio: projected_noise.clone() - kl.clone(),
            kl,
            projected_noise,
            mean_sq_diff: mean_sq_diff.detach(),
            std,
        }
    }
}

/// PPO's clipped surrogate `max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high))` per row, written
/// with selection so that an overflowed ratio in a clipped row cannot produce a NaN.
pub(crate) struct ClippedSurrogate {
    /// The per-row loss, `[R]`.
    pub row_loss: Tensor<1>,
    /// Rows clipped at `1 + ε_high` (A > 0, r > 1 + ε_high).
    pub clipped_high: Tensor<1, Bool>,
    /// Rows clipped at `1 − ε_low` (A < 0, r < 1 − ε_low).
    pub clipped_low: Tensor<1, Bool>,
}

impl ClippedSurrogate {
    pub(crate) fn new(
        log_ratio: Tensor<1>,
        advantages: Tensor<1>,
        epsilon_low: f64,
        epsilon_high: f64,
    ) -> Self {
        let ratio_value = log_ratio.clone().detach().exp();
        let clipped_high = advantages
            .clone()
            .greater_elem(0.0)
            .bool_and(ratio_value.clone().greater_elem(1.0 + epsilon_high));
        let clipped_low = advantages
            .clone()
            .lower_elem(0.0)
            .bool_and(ratio_value.clone().lower_elem(1.0 - epsilon_low));
        let clipped = clipped_high.clone().bool_or(clipped_low.clone());
        let clipped_loss =
            advantages.clone().neg() * ratio_value.clamp(1.0 - epsilon_low, 1.0 + epsilon_high);
        let row_loss = active_surrogate(log_ratio, advantages, clipped.clone())
            .mask_where(clipped, clipped_loss);
        Self {
            row_loss,
            clipped_high,
            clipped_low,
        }
    }
}

/// `−A·r` for the rows that carry a gradient; exactly 0 (with a zero gradient) where
/// `inactive` is set or `A = 0`.
///
/// The ratio is exponentiated only after the inactive rows' log-ratio is replaced by 0: an
/// `exp` that overflowed would otherwise turn the zero gradient of a dropped row into
/// `0·∞ = NaN`.
pub(crate) fn active_surrogate(
    log_ratio: Tensor<1>,
    advantages: Tensor<1>,
    inactive: Tensor<1, Bool>,
) -> Tensor<1> {
    let inactive = inactive.bool_or(advantages.clone().equal_elem(0.0));
    let ratio = log_ratio.mask_fill(inactive.clone(), 0.0).exp();
    (advantages.neg() * ratio).mask_fill(inactive, 0.0)
}
