//! The evaluation every objective shares: validate the batch → per-row terms → the
//! objective's own row values → one read-back → row checks → metrics and row diagnostics.
//!
//! An objective supplies only its [`RowValues`] (its row loss and how it decided each row);
//! everything it reports is computed here from the values of a single device transfer.

use burn::prelude::*;

use super::batch::RowBatch;
use super::diagnostics::{RowDiagnostics, RowStatus};
use super::metrics::{ClipMetrics, MaskMetrics, ObjectiveMetrics, ObjectiveOutput, RatioStats};
use super::terms::RowTerms;
use crate::error::{Error, Result};
use crate::tensor_util::{host_values, to_f32};

/// What one objective computes per row from the shared [`RowTerms`], all `[R]`.
pub(crate) struct RowValues {
    /// The true `log r`, for the metrics and the checks (detached before read-back).
    pub log_ratio: Tensor<1>,
    /// Each row's loss, differentiable through `new_mean`; the loss is its mean.
    pub row_loss: Tensor<1>,
    /// The log of the ratio the gradient flows through, where it is not `log r`
    /// (GRPO-Guard's `log r̂`).
    pub regulated_log_ratio: Option<Tensor<1>>,
    /// `dt` of each row, when the loss is weighted by `1/|dt|`.
    pub weighting_dt: Option<Tensor<1>>,
    /// How the objective decided each row.
    pub decision: Decision,
}

/// How an objective decides which rows keep their gradient.
#[allow(
    clippy::large_enum_variant,
    reason = "one short-lived value per evaluation, moved once"
)]
pub(crate) enum Decision {
    /// Ratio clipping: rows clipped at `1 + ε_high` and at `1 − ε_low`.
    Clip {
        high: Tensor<1, Bool>,
        low: Tensor<1, Bool>,
    },
    /// Flow-DPPO's mask: the gating divergence, the rows with `D ≥ τ`, the rows dropped.
    Mask {
        divergence: Tensor<1>,
        over_threshold: Tensor<1, Bool>,
        dropped: Tensor<1, Bool>,
    },
}

/// Evaluates an objective whose per-row values `row_values` computes from the batch's terms.
pub(crate) fn evaluate(
    batch: &RowBatch,
    row_values: impl FnOnce(&RowTerms) -> Result<RowValues>,
) -> Result<ObjectiveOutput> {
    batch.validate()?;
    let terms = RowTerms::new(batch);
    let values = row_values(&terms)?;
    let host = HostRows::read(&terms, batch, &values)?;
    host.check()?;
    Ok(ObjectiveOutput {
        loss: values.row_loss.mean(),
        metrics: host.metrics(),
        rows: host.diagnostics(),
    })
}

/// The per-row values of one evaluation on the host, `[R]` each.
struct HostRows {
    log_ratio: Vec<f32>,
    kl: Vec<f32>,
    std: Vec<f32>,
    advantages: Vec<f32>,
    row_loss: Vec<f32>,
    regulated_log_ratio: Option<Vec<f32>>,
    weighting_dt: Option<Vec<f32>>,
    decision: HostDecision,
}

/// [`Decision`] on the host.
enum HostDecision {
    Clip {
        high: Vec<bool>,
        low: Vec<bool>,
    },
    Mask {
        divergence: Vec<f32>,
        over_threshold: Vec<bool>,
        dropped: Vec<bool>,
    },
}

impl HostRows {
    /// Reads every per-row value back in one transfer.
    fn read(terms: &RowTerms, batch: &RowBatch, values: &RowValues) -> Result<Self> {
        let mut read_back = ReadBack::default();
        let log_ratio = read_back.add(&values.log_ratio);
        let kl = read_back.add(&terms.kl);
        let std = read_back.add(&terms.std);
        let advantages = read_back.add(&batch.advantages);
        let row_loss = read_back.add(&values.row_loss);
        let regulated_log_ratio = values
            .regulated_log_ratio
            .as_ref()
            .map(|column| read_back.add(column));
        let weighting_dt = values
            .weighting_dt
            .as_ref()
            .map(|column| read_back.add(column));
        enum Handles {
            Clip(Column, Column),
            Mask(Column, Column, Column),
        }
        let decision = match &values.decision {
            Decision::Clip { high, low } => {
                Handles::Clip(read_back.add_flags(high), read_back.add_flags(low))
            }
            Decision::Mask {
                divergence,
                over_threshold,
                dropped,
            } => Handles::Mask(
                read_back.add(divergence),
                read_back.add_flags(over_threshold),
                read_back.add_flags(dropped),
            ),
        };
        let mut host = read_back.read()?;
        Ok(Self {
            log_ratio: host.take(log_ratio),
            kl: host.take(kl),
            std: host.take(std),
            advantages: host.take(advantages),
            row_loss: host.take(row_loss),
            regulated_log_ratio: regulated_log_ratio.map(|column| host.take(column)),
            weighting_dt: weighting_dt.map(|column| host.take(column)),
            decision: match decision {
                Handles::Clip(high, low) => HostDecision::Clip {
                    high: host.take_flags(high),
                    low: host.take_flags(low),
                },
                Handles::Mask(divergence, over_threshold, dropped) => HostDecision::Mask {
                    divergence: host.take(divergence),
                    over_threshold: host.take_flags(over_threshold),
                    dropped: host.take_flags(dropped),
                },
            },
        })
    }

    /// Rejects every row that cannot give a finite loss, naming the row and the value.
    fn check(&self) -> Result<()> {
        check_std(&self.std)?;
        check_finite("advantage", &self.advantages)?;
        check_finite(
            "log-ratio (new_mean, old_mean or sample holds NaN or ±inf, or they are too far \
             apart for f32)",
            &self.log_ratio,
        )?;
        check_finite(
            "KL(π_old ‖ π_new) (new_mean or old_mean holds ±inf, or mean_N(d²)/s² overflows f32)",
            &self.kl,
        )?;
        if let HostDecision::Mask { divergence, .. } = &self.decision {
            check_finite(
                "divergence (a velocity_scale b of 0 or ±inf gives no velocity-space divergence)",
                divergence,
            )?;
        }
        if let Some(dt) = &self.weighting_dt {
            check_weighting_dt(dt)?;
        }
        self.check_row_loss()
    }

    /// With every input finite, a row's loss is infinite only when a product overflowed:
    /// on a row that keeps its gradient, the ratio `exp(log r)` itself.
    fn check_row_loss(&self) -> Result<()> {
        let Some(row) = self.row_loss.iter().position(|l| !l.is_finite()) else {
            return Ok(());
        };
        let (name, gradient_log_ratio) = match &self.regulated_log_ratio {
            Some(regulated) => ("log r̂", regulated[row]),
            None => ("log r", self.log_ratio[row]),
        };
        let ratio_overflows = f64::from(gradient_log_ratio) > f64::from(f32::MAX).ln();
        let what = if self.status(row) == RowStatus::Kept && ratio_overflows {
            format!(
                "loss of a row that keeps its gradient (its ratio exp({name} = \
                 {gradient_log_ratio}) overflows f32: the policy moved too far from the rollout \
                 policy in one update; lower the learning rate)"
            )
        } else {
            format!(
                "loss (−A·ratio·weight overflows f32 with A = {}, {name} = {gradient_log_ratio}: \
                 is |A| or 1/|dt| too large?)",
                self.advantages[row]
            )
        };
        Err(Error::NonFinite {
            what,
            index: row,
            value: f64::from(self.row_loss[row]),
        })
    }

    fn status(&self, row: usize) -> RowStatus {
        match &self.decision {
            HostDecision::Clip { high, .. } if high[row] => RowStatus::ClippedHigh,
            HostDecision::Clip { low, .. } if low[row] => RowStatus::ClippedLow,
            HostDecision::Mask { dropped, .. } if dropped[row] => RowStatus::Dropped,
            _ => RowStatus::Kept,
        }
    }

    fn diagnostics(&self) -> RowDiagnostics {
        RowDiagnostics {
            log_ratio: self.log_ratio.clone(),
            kl: self.kl.clone(),
            loss: self.row_loss.clone(),
            status: (0..self.log_ratio.len())
                .map(|row| self.status(row))
                .collect(),
        }
    }

    /// The metrics of ALGORITHMS.md §8.
    fn metrics(&self) -> ObjectiveMetrics {
        let ratios: Vec<f64> = self.log_ratio.iter().map(|&l| f64::from(l).exp()).collect();
        let ratio_mean = mean(&ratios);
        let ratio_variance = mean(
            &ratios
                .iter()
                .map(|r| (r - ratio_mean).powi(2))
                .collect::<Vec<_>>(),
        );
        let kl = widened(&self.kl);
        let half_squared_log_ratio: Vec<f64> = self
            .log_ratio
            .iter()
            .map(|&l| 0.5 * f64::from(l).powi(2))
            .collect();
        let (clip, mask) = match &self.decision {
            HostDecision::Clip { high, low } => (Some(self.clip_metrics(high, low)), None),
            HostDecision::Mask {
                divergence,
                over_threshold,
                dropped,
            } => (
                None,
                Some(self.mask_metrics(divergence, over_threshold, dropped)),
            ),
        };
        ObjectiveMetrics {
            rows: self.log_ratio.len(),
            loss: mean(&widened(&self.row_loss)),
            ratio: RatioStats {
                mean: ratio_mean,
                std: ratio_variance.sqrt(),
                min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
                max: maximum(&ratios),
            },
            approx_kl: mean(&half_squared_log_ratio),
            kl_mean: mean(&kl),
            kl_max: maximum(&kl),
            clip,
            mask,
            reference_kl: None,
        }
    }

    fn clip_metrics(&self, high: &[bool], low: &[bool]) -> ClipMetrics {
        let high_fraction = fraction(high.iter().copied());
        let low_fraction = fraction(low.iter().copied());
        ClipMetrics {
            fraction: high_fraction + low_fraction,
            high_fraction,
            low_fraction,
        }
    }

    fn mask_metrics(
        &self,
        divergence: &[f32],
        over_threshold: &[bool],
        dropped: &[bool],
    ) -> MaskMetrics {
        let dropped_with = |sign: fn(f32) -> bool| {
            fraction(
                dropped
                    .iter()
                    .zip(&self.advantages)
                    .map(|(&d, &a)| d && sign(a)),
            )
        };
        let divergence = widened(divergence);
        MaskMetrics {
            divergence_mean: mean(&divergence),
            divergence_max: maximum(&divergence),
            over_threshold_fraction: fraction(over_threshold.iter().copied()),
            dropped_fraction: fraction(dropped.iter().copied()),
            dropped_positive_fraction: dropped_with(|a| a > 0.0),
            dropped_negative_fraction: dropped_with(|a| a < 0.0),
        }
    }
}

/// Device columns `[R]` gathered for one stacked transfer; each one added gets a handle.
#[derive(Default)]
struct ReadBack {
    columns: Vec<Tensor<1>>,
}

/// A column's place in a [`ReadBack`].
#[derive(Clone, Copy)]
struct Column(usize);

impl ReadBack {
    fn add(&mut self, column: &Tensor<1>) -> Column {
        self.columns.push(to_f32(column.clone().detach()));
        Column(self.columns.len() - 1)
    }

    fn add_flags(&mut self, flags: &Tensor<1, Bool>) -> Column {
        self.add(&flags.clone().float())
    }

    /// Stacks the columns and reads them back in one transfer.
    fn read(self) -> Result<HostColumns> {
        let rows = self.columns[0].dims()[0];
        let flat = host_values(Tensor::stack::<2>(self.columns, 0))?;
        Ok(HostColumns(
            flat.chunks(rows).map(<[f32]>::to_vec).collect(),
        ))
    }
}

/// The columns of a [`ReadBack`] on the host.
struct HostColumns(Vec<Vec<f32>>);

impl HostColumns {
    fn take(&mut self, column: Column) -> Vec<f32> {
        std::mem::take(&mut self.0[column.0])
    }

    fn take_flags(&mut self, column: Column) -> Vec<bool> {
        self.take(column).into_iter().map(|f| f > 0.5).collect()
    }
}

fn widened(values: &[f32]) -> Vec<f64> {
    values.iter().copied().map(f64::from).collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn maximum(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The fraction of set flags.
fn fraction(flags: impl ExactSizeIterator<Item = bool>) -> f64 {
    let rows = flags.len();
    flags.filter(|&flag| flag).count() as f64 / rows as f64
}

/// Errors on the first value that is NaN or ±inf.
pub(crate) fn check_finite(what: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFinite {
            what: what.into(),
            index,
            value: f64::from(values[index]),
        }),
        None => Ok(()),
    }
}

/// A std must be positive with a square that is a normal f32: `s²` below the smallest normal
/// f32 (s < 1.1e-19) rounds towards 0 and gives an infinite KL, above f32::MAX
/// (s > 1.8e19) it is infinite.
fn check_std(std: &[f32]) -> Result<()> {
    match std.iter().position(|&s| !(s > 0.0 && (s * s).is_normal())) {
        Some(row) => Err(Error::invalid(
            format!("std of row {row}"),
            std[row],
            "a finite s > 0 whose square is a normal f32 (1.1e-19 < s < 1.8e19): only \
             stochastic (SDE) steps have a log-probability",
        )),
        None => Ok(()),
    }
}

/// `1/|dt|` is finite only for a normal, finite, non-zero dt.
fn check_weighting_dt(dt: &[f32]) -> Result<()> {
    match dt.iter().position(|v| !v.is_normal()) {
        Some(row) => Err(Error::invalid(
            format!("dt of row {row}"),
            dt[row],
            "a finite, non-zero step size (σ' − σ) whose 1/|dt| weight is finite (|dt| ≥ 1.2e-38)",
        )),
        None => Ok(()),
    }
}
