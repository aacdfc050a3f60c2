//! Typed diagnostics of one objective evaluation (ALGORITHMS.md §8).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::diagnostics::RowDiagnostics;

/// Summary statistics of the importance ratio `r = π_new(x')/π_old(x')` over the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RatioStats {
    /// Mean of r.
    pub mean: f64,
    /// Population std of r.
    pub std: f64,
    /// Smallest r.
    pub min: f64,
    /// Largest r (may be `inf` when `exp(log r)` overflows f64).
    pub max: f64,
}

/// How many rows a clipping objective clipped, as fractions of all rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClipMetrics {
    /// Rows whose clipped branch was selected.
    pub fraction: f64,
    /// Rows clipped at `1 + ε_high` (A > 0, r > 1 + ε_high).
    pub high_fraction: f64,
    /// Rows clipped at `1 − ε_low` (A < 0, r < 1 − ε_low).
    pub low_fraction: f64,
}

/// What Flow-DPPO's divergence mask did, as fractions of all rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MaskMetrics {
    /// Mean of the gating divergence D (the KL, or the velocity-space divergence).
    pub divergence_mean: f64,
    /// Largest D.
    pub divergence_max: f64,
    /// Rows with `D ≥ τ`.
    pub over_threshold_fraction: f64,
    /// Rows dropped (masked to zero loss and zero gradient).
    pub dropped_fraction: f64,
    /// Rows dropped whose advantage is positive.
    pub dropped_positive_fraction: f64,
    /// Rows dropped whose advantage is negative.
    pub dropped_negative_fraction: f64,
}

/// Diagnostics of one objective evaluation over R rows. Every objective reports the ratio
/// statistics and the exact KL; `clip` and `mask` are set by the objectives they apply to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveMetrics {
    /// Number of rows R.
    pub rows: usize,
    /// The loss value (mean over all R rows, plus the reference-KL term if any).
    pub loss: f64,
    /// Statistics of the true importance ratio r.
    pub ratio: RatioStats,
    /// `mean(½·(log r)²)`, the usual single-sample KL estimate.
    pub approx_kl: f64,
    /// Mean of the exact per-row `KL(π_old ‖ π_new)` (mean-reduced over N).
    pub kl_mean: f64,
    /// Largest exact per-row KL.
    pub kl_max: f64,
    /// Clipping statistics (ratio clip, GRPO-Guard).
    pub clip: Option<ClipMetrics>,
    /// Masking statistics (Flow-DPPO).
    pub mask: Option<MaskMetrics>,
    /// `mean_rows(KL(π_θ ‖ π_ref))`, the reference-KL term before β, when a reference is used.
    pub reference_kl: Option<f64>,
}

impl ObjectiveMetrics {
    /// The field-wise mean of several evaluations (e.g. the updates of one training step);
    /// optional parts are averaged over the evaluations that have them. `None` if empty.
    pub fn average(all: &[ObjectiveMetrics]) -> Option<ObjectiveMetrics> {
        let count = all.len() as f64;
        let mean = |f: &dyn Fn(&ObjectiveMetrics) -> f64| all.iter().map(f).sum::<f64>() / count;
        let mean_some = |values: Vec<f64>| {
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let clips: Vec<ClipMetrics> = all.iter().filter_map(|m| m.clip).collect();
        let masks: Vec<MaskMetrics> = all.iter().filter_map(|m| m.mask).collect();
        let clip_mean =
            |f: &dyn Fn(&ClipMetrics) -> f64| clips.iter().map(f).sum::<f64>() / clips.len() as f64;
        let mask_mean =
            |f: &dyn Fn(&MaskMetrics) -> f64| masks.iter().map(f).sum::<f64>() / masks.len() as f64;
        (!all.is_empty()).then(|| ObjectiveMetrics {
            rows: all.iter().map(|m| m.rows).sum::<usize>() / all.len(),
            loss: mean(&|m| m.loss),
            ratio: RatioStats {
                mean: mean(&|m| m.ratio.mean),
                std: mean(&|m| m.ratio.std),
                min: mean(&|m| m.ratio.min),
                max: mean(&|m| m.ratio.max),
            },
            approx_kl: mean(&|m| m.approx_kl),
            kl_mean: mean(&|m| m.kl_mean),
            kl_max: mean(&|m| m.kl_max),
            clip: (!clips.is_empty()).then(|| ClipMetrics {
                fraction: clip_mean(&|c| c.fraction),
                high_fraction: clip_mean(&|c| c.high_fraction),
                low_fraction: clip_mean(&|c| c.low_fraction),
            }),
            mask: (!masks.is_empty()).then(|| MaskMetrics {
                divergence_mean: mask_mean(&|m| m.divergence_mean),
                divergence_max: mask_mean(&|m| m.divergence_max),
                over_threshold_fraction: mask_mean(&|m| m.over_threshold_fraction),
                dropped_fraction: mask_mean(&|m| m.dropped_fraction),
                dropped_positive_fraction: mask_mean(&|m| m.dropped_positive_fraction),
                dropped_negative_fraction: mask_mean(&|m| m.dropped_negative_fraction),
            }),
            reference_kl: mean_some(all.iter().filter_map(|m| m.reference_kl).collect()),
        })
    }

    /// The metrics of one evaluation over the union of disjoint row sets, from the metrics
    /// of each part (e.g. the micro-batches of one mini-batch): means and fractions weighted
    /// by rows, extremes over all parts, and the ratio's population std pooled as
    /// `sqrt(Σ n_j·(std_j² + (mean_j − mean)²) / Σ n_j)`. Equals the metrics of a single pass
    /// over all rows up to rounding. `None` if `parts` is empty or holds no rows.
    pub fn merge(parts: &[ObjectiveMetrics]) -> Option<ObjectiveMetrics> {
        let rows: usize = parts.iter().map(|m| m.rows).sum();
        if rows == 0 {
            return None;
        }
        let share = |m: &ObjectiveMetrics| m.rows as f64 / rows as f64;
        let weighted = |f: &dyn Fn(&ObjectiveMetrics) -> f64| {
            parts.iter().map(|m| share(m) * f(m)).sum::<f64>()
        };
        let ratio_mean = weighted(&|m| m.ratio.mean);
        let ratio_variance =
            weighted(&|m| m.ratio.std.powi(2) + (m.ratio.mean - ratio_mean).powi(2));
        // An optional part is present for every part or for none (one objective made them
        // all); merge only what is there, weighted by the rows of the parts that have it.
        let clip = merge_optional(
            parts,
            |m| m.clip,
            |clips| ClipMetrics {
                fraction: weighted_by_rows(clips, |c| c.fraction),
                high_fraction: weighted_by_rows(clips, |c| c.high_fraction),
                low_fraction: weighted_by_rows(clips, |c| c.low_fraction),
            },
        );
        let mask = merge_optional(
            parts,
            |m| m.mask,
            |masks| MaskMetrics {
                divergence_mean: weighted_by_rows(masks, |m| m.divergence_mean),
                divergence_max: masks
                    .iter()
                    .map(|(_, m)| m.divergence_max)
                    .fold(f64::NEG_INFINITY, f64::max),
                over_threshold_fraction: weighted_by_rows(masks, |m| m.over_threshold_fraction),
                dropped_fraction: weighted_by_rows(masks, |m| m.dropped_fraction),
                dropped_positive_fraction: weighted_by_rows(masks, |m| m.dropped_positive_fraction),
                dropped_negative_fraction: weighted_by_rows(masks, |m| m.dropped_negative_fraction),
            },
        );
        let reference_kl = merge_optional(
            parts,
            |m| m.reference_kl,
            |values| weighted_by_rows(values, |&v| v),
        );
        Some(ObjectiveMetrics {
            rows,
            loss: weighted(&|m| m.loss),
            ratio: RatioStats {
                mean: ratio_mean,
                std: ratio_variance.sqrt(),
                min: parts
                    .iter()
                    .map(|m| m.ratio.min)
                    .fold(f64::INFINITY, f64::min),
                max: parts
                    .iter()
                    .map(|m| m.ratio.max)
                    .fold(f64::NEG_INFINITY, f64::max),
            },
            approx_kl: weighted(&|m| m.approx_kl),
            kl_mean: weighted(&|m| m.kl_mean),
            kl_max: parts
                .iter()
                .map(|m| m.kl_max)
                .fold(f64::NEG_INFINITY, f64::max),
            clip,
            mask,
            reference_kl,
        })
    }
}

/// `make` applied to the `(rows, part)` pairs of the parts that have an optional part;
/// `None` when no part has one.
fn merge_optional<T, U>(
    parts: &[ObjectiveMetrics],
    get: impl Fn(&ObjectiveMetrics) -> Option<T>,
    make: impl Fn(&[(usize, T)]) -> U,
) -> Option<U> {
    let present: Vec<(usize, T)> = parts
        .iter()
        .filter_map(|m| get(m).map(|part| (m.rows, part)))
        .collect();
    (!present.is_empty()).then(|| make(&present))
}

/// The row-weighted mean of `value` over `(rows, part)` pairs.
fn weighted_by_rows<T>(parts: &[(usize, T)], value: impl Fn(&T) -> f64) -> f64 {
    let rows: usize = parts.iter().map(|(rows, _)| rows).sum();
    parts
        .iter()
        .map(|(part_rows, part)| *part_rows as f64 * value(part))
        .sum::<f64>()
        / rows as f64
}

/// The output of [`TrustRegionObjective::loss`](super::TrustRegionObjective::loss).
#[derive(Debug, Clone)]
pub struct ObjectiveOutput {
    /// The scalar loss, `[1]`, differentiable through `new_mean`. Minimise it.
    pub loss: Tensor<1>,
    /// Diagnostics computed from the same values.
    pub metrics: ObjectiveMetrics,
    /// The per-row values the metrics summarise, each `[R]`, from the same transfer.
    pub rows: RowDiagnostics,
}
