//! Per-row diagnostics of one objective evaluation, for a user who wants to see which rows
//! moved, which were clipped or dropped, and what each contributed to the loss.

use serde::{Deserialize, Serialize};

/// What an objective did with one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RowStatus {
    /// The row's unclipped surrogate `−A·r` was used: it carries its policy gradient (which
    /// is zero when `A = 0`).
    Kept,
    /// Clipped at `1 + ε_high` (A > 0 and the clipped ratio above `1 + ε_high`): the row
    /// contributes a constant and no gradient. For GRPO-Guard the ratio is the regulated `r̂`.
    ClippedHigh,
    /// Clipped at `1 − ε_low` (A < 0 and the clipped ratio below `1 − ε_low`): a constant and
    /// no gradient.
    ClippedLow,
    /// Dropped by Flow-DPPO's divergence mask: zero loss and zero gradient.
    Dropped,
}

/// Per-row values of one evaluation over R rows, on the host, in the batch's row order.
///
/// Every vector has length R. They are the values the aggregate
/// [`ObjectiveMetrics`](super::ObjectiveMetrics) are computed from, read back in the same
/// transfer, so `mean(loss)` is `metrics.loss` (before a [`ReferenceKl`](super::ReferenceKl)
/// term, which is not per-row), `mean(kl)` is `metrics.kl_mean`, `mean(½·log_ratio²)` is
/// `metrics.approx_kl`, and the fraction of [`RowStatus::Dropped`] rows is the mask's
/// `dropped_fraction`.
///
/// A user's own [`TrustRegionObjective`](super::TrustRegionObjective) that reports no rows
/// may return `RowDiagnostics::default()` (all vectors empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RowDiagnostics {
    /// `log r = log π_new(x') − log π_old(x')` per row (the true ratio, also for GRPO-Guard),
    /// `[R]`.
    pub log_ratio: Vec<f32>,
    /// The exact `KL(π_old ‖ π_new) = mean_N(d²)/(2s²)` per row, `[R]`.
    pub kl: Vec<f32>,
    /// Each row's term of the loss (the loss is their mean over all R rows), `[R]`.
    pub loss: Vec<f32>,
    /// What the objective did with each row, `[R]`.
    pub status: Vec<RowStatus>,
}

impl RowDiagnostics {
    /// The number of rows R (0 for an objective that reports none).
    pub fn len(&self) -> usize {
        self.status.len()
    }

    /// Whether no rows are reported.
    pub fn is_empty(&self) -> bool {
        self.status.is_empty()
    }
}
