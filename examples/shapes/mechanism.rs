//! The mechanism behind the claims, measured on the rows the trainer really updates on:
//! how noisy the single-sample log-ratio is against the exact KL, and how often ratio
//! clipping and Flow-DPPO's mask stop the wrong rows.
//!
//! [`Recording`] wraps any objective and keeps, for every row of every update, its exact
//! KL, its log-ratio, its advantage and what the objective did with it. [`Mechanism`]
//! summarises them (ALGORITHMS.md §3: `std(log r) = sqrt(2·KL/N)` for rows of equal KL).

use std::sync::{Arc, Mutex};

use flow_rl::Result;
use flow_rl::objective::{ObjectiveOutput, RowBatch, RowStatus, TrustRegionObjective};
use serde::Serialize;

/// One row of one update as the objective saw it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RecordedRow {
    /// The exact per-row `KL(π_old ‖ π_new)`, mean-reduced over the N latent dims.
    pub kl: f32,
    /// The true `log r`, mean-reduced as the KL.
    pub log_ratio: f32,
    /// The row's advantage.
    pub advantage: f32,
    /// What the objective did with it.
    pub status: RowStatus,
}

impl RecordedRow {
    /// Whether the update moved the row's probability the way its advantage favours
    /// (`A > 0` and `r > 1`, or `A < 0` and `r < 1`): the direction a trust region stops.
    pub fn pushes_along_advantage(&self) -> bool {
        (self.advantage > 0.0 && self.log_ratio > 0.0)
            || (self.advantage < 0.0 && self.log_ratio < 0.0)
    }

    /// Whether the objective removed the row's gradient (clipped or dropped).
    pub fn stopped(&self) -> bool {
        self.status != RowStatus::Kept
    }
}

/// An objective that records every row it evaluates; clones share the objective and the
/// record.
#[derive(Debug)]
pub struct Recording<O> {
    inner: Arc<O>,
    rows: Arc<Mutex<Vec<RecordedRow>>>,
}

impl<O> Clone for Recording<O> {
    fn clone(&self) -> Self {
        Recording {
            inner: Arc::clone(&self.inner),
            rows: Arc::clone(&self.rows),
        }
    }
}

impl<O: TrustRegionObjective> Recording<O> {
    /// Records the rows `inner` evaluates.
    pub fn new(inner: O) -> Recording<O> {
        Recording {
            inner: Arc::new(inner),
            rows: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Every row recorded so far, in evaluation order.
    pub fn rows(&self) -> Vec<RecordedRow> {
        self.rows.lock().expect("a recording panicked").clone()
    }
}

impl<O: TrustRegionObjective> TrustRegionObjective for Recording<O> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn loss(&self, batch: &RowBatch) -> Result<ObjectiveOutput> {
        let output = self.inner.loss(batch)?;
        let advantages = batch
            .advantages
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|err| flow_rl::Error::TensorRead(format!("{err:?}")))?;
        let diagnostics = &output.rows;
        let mut rows = self.rows.lock().expect("a recording panicked");
        rows.extend((0..diagnostics.len()).map(|row| RecordedRow {
            kl: diagnostics.kl[row],
            log_ratio: diagnostics.log_ratio[row],
            advantage: advantages[row],
            status: diagnostics.status[row],
        }));
        Ok(output)
    }
}

/// One KL bin of [`Mechanism::bins`]: the spread of `log r` among rows of about equal KL
/// against the prediction `sqrt(2·KL/N)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NoiseBin {
    /// The bin's KL range, `[low, high)`.
    pub kl_low: f64,
    /// See `kl_low`.
    pub kl_high: f64,
    /// Rows in the bin.
    pub rows: usize,
    /// Their mean exact KL.
    pub mean_kl: f64,
    /// The std of their `log r` (around the mean `−KL`, ALGORITHMS.md §3).
    pub log_ratio_std: f64,
    /// `sqrt(2·mean_kl/N)`.
    pub predicted_std: f64,
}

/// How a trust region's stops line up with the exact KL, as fractions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConstraintErrors {
    /// Rows whose gradient was removed (clipped or dropped).
    pub stopped_rows: usize,
    /// Of those, the fraction with exact KL below τ: stopped though inside the region
    /// (over-constraint).
    pub over_constraint: f64,
    /// Rows that kept their gradient.
    pub kept_rows: usize,
    /// Of those, the fraction with KL at least τ (the under-constraint for ratio
    /// clip).
    pub kept_above_threshold: f64,
    /// Of those, the fraction with KL at least τ that pushed further along the advantage:
    /// updates a KL trust region would stop and that went through (under-constraint).
    pub under_constraint: f64,
}

/// The mechanism's summary over a set of recorded rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mechanism {
    /// All rows with a positive KL (the first update of a rollout is on-policy: KL = 0 and
    /// `log r = 0` exactly, and it says nothing about the noise).
    pub rows: usize,
    /// The latent dimension N.
    pub latent_dims: usize,
    /// The KL threshold τ the errors are measured against.
    pub threshold: f64,
    /// The noise by KL bin, in rising KL.
    pub bins: Vec<NoiseBin>,
    /// The mean over rows of `|log r + KL| / sqrt(2·KL/N)`, `sqrt(2/π) ≈ 0.80` when the
    /// prediction holds.
    pub mean_normalised_noise: f64,
    /// Stops against the exact KL.
    pub errors: ConstraintErrors,
}

impl Mechanism {
    /// Summarises `rows` for N = `latent_dims` and threshold τ, in `bins` equal bins of
    /// `log10(KL)` between the smallest and largest positive KL.
    pub fn measure(
        rows: &[RecordedRow],
        latent_dims: usize,
        threshold: f64,
        bins: usize,
    ) -> Mechanism {
        let moved: Vec<&RecordedRow> = rows.iter().filter(|row| row.kl > 0.0).collect();
        let predicted = |kl: f64| (2.0 * kl / latent_dims as f64).sqrt();
        let mean_normalised_noise = mean(moved.iter().map(|row| {
            let kl = f64::from(row.kl);
            (f64::from(row.log_ratio) + kl).abs() / predicted(kl)
        }));
        Mechanism {
            rows: moved.len(),
            latent_dims,
            threshold,
            bins: noise_bins(&moved, bins, predicted),
            mean_normalised_noise,
            errors: constraint_errors(&moved, threshold),
        }
    }
}

fn noise_bins(rows: &[&RecordedRow], bins: usize, predicted: impl Fn(f64) -> f64) -> Vec<NoiseBin> {
    let logs: Vec<f64> = rows.iter().map(|row| f64::from(row.kl).log10()).collect();
    let (low, high) = logs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &value| {
            (low.min(value), high.max(value))
        });
    if rows.is_empty() || bins == 0 {
        return Vec::new();
    }
    let width = ((high - low) / bins as f64).max(f64::MIN_POSITIVE);
    (0..bins)
        .filter_map(|bin| {
            let (from, to) = (low + bin as f64 * width, low + (bin + 1) as f64 * width);
            let members: Vec<&RecordedRow> = rows
                .iter()
                .zip(&logs)
                .filter(|(_, log)| **log >= from && (**log < to || bin + 1 == bins))
                .map(|(row, _)| *row)
                .collect();
            // A std needs a few rows to mean anything.
            (members.len() >= 5).then(|| {
                let mean_kl = mean(members.iter().map(|row| f64::from(row.kl)));
                let centred: Vec<f64> = members
                    .iter()
                    .map(|row| f64::from(row.log_ratio) + f64::from(row.kl))
                    .collect();
                let centre = mean(centred.iter().copied());
                let variance = mean(centred.iter().map(|value| (value - centre).powi(2)));
                NoiseBin {
                    kl_low: 10f64.powf(from),
                    kl_high: 10f64.powf(to),
                    rows: members.len(),
                    mean_kl,
                    log_ratio_std: variance.sqrt(),
                    predicted_std: predicted(mean_kl),
                }
            })
        })
        .collect()
}

fn constraint_errors(rows: &[&RecordedRow], threshold: f64) -> ConstraintErrors {
    let above = |row: &RecordedRow| f64::from(row.kl) >= threshold;
    let (stopped, kept): (Vec<&RecordedRow>, Vec<&RecordedRow>) =
        rows.iter().copied().partition(|row| row.stopped());
    let fraction = |of: &[&RecordedRow], test: &dyn Fn(&RecordedRow) -> bool| {
        if of.is_empty() {
            0.0
        } else {
            of.iter().filter(|row| test(row)).count() as f64 / of.len() as f64
        }
    };
    ConstraintErrors {
        stopped_rows: stopped.len(),
        over_constraint: fraction(&stopped, &|row| !above(row)),
        kept_rows: kept.len(),
        kept_above_threshold: fraction(&kept, &above),
        under_constraint: fraction(&kept, &|row| above(row) && row.pushes_along_advantage()),
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (total, count) = values.fold((0.0, 0usize), |(total, count), value| {
        (total + value, count + 1)
    });
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}
