//! Shared test helpers: host (f64) reference implementations of ALGORITHMS.md written
//! straight from the formulas, independent of the crate's algebra, and batch builders.
#![allow(dead_code)]

pub mod mmdit_fixture;
pub mod objectives;
pub mod toy;
pub mod workers;

use burn::prelude::*;
use flow_rl::Rng;
use flow_rl::objective::RowBatch;

/// A file path inside a fresh temporary folder; dropping it removes the folder and
/// everything written there, even when the test fails.
#[derive(Debug)]
pub struct ScratchPath {
    folder: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl ScratchPath {
    /// The folder that holds the path.
    pub fn folder(&self) -> &std::path::Path {
        self.folder.path()
    }
}

impl std::ops::Deref for ScratchPath {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::path::Path> for ScratchPath {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

/// `name` (not yet created) in a new temporary folder of its own.
pub fn scratch(name: &str) -> ScratchPath {
    let folder = tempfile::Builder::new()
        .prefix("flow-rl-test-")
        .tempdir()
        .expect("a temporary folder");
    let path = folder.path().join(name);
    ScratchPath { folder, path }
}

/// A batch of rows held on the host in f64.
#[derive(Debug, Clone)]
pub struct HostBatch {
    pub rows: usize,
    pub dims: usize,
    pub new_mean: Vec<f64>,
    pub old_mean: Vec<f64>,
    pub sample: Vec<f64>,
    pub std: Vec<f64>,
    pub dt: Vec<f64>,
    pub advantages: Vec<f64>,
    pub ref_mean: Option<Vec<f64>>,
    pub velocity_scale: Option<Vec<f64>>,
}

pub fn normal(rng: &mut Rng) -> f64 {
    // Box–Muller; the crate's Rng gives uniform bits only.
    let u1 = rng.uniform().max(1e-300);
    let u2 = rng.uniform();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl HostBatch {
    /// Random rows: x' = μ_old + s·ε and μ_new = μ_old + d with `|d|` of order `drift`.
    pub fn random(seed: u64, rows: usize, dims: usize, drift: f64) -> Self {
        let mut rng = Rng::seed_from(seed);
        let std: Vec<f64> = (0..rows).map(|_| 0.2 + rng.uniform()).collect();
        let dt: Vec<f64> = (0..rows).map(|_| -(0.02 + 0.1 * rng.uniform())).collect();
        let advantages: Vec<f64> = (0..rows).map(|_| 2.0 * normal(&mut rng)).collect();
        let old_mean: Vec<f64> = (0..rows * dims).map(|_| normal(&mut rng)).collect();
        let sample: Vec<f64> = (0..rows * dims)
            .map(|i| old_mean[i] + std[i / dims] * normal(&mut rng))
            .collect();
        let new_mean: Vec<f64> = (0..rows * dims)
            .map(|i| old_mean[i] + drift * std[i / dims] * normal(&mut rng))
            .collect();
        let ref_mean: Vec<f64> = (0..rows * dims)
            .map(|i| old_mean[i] + drift * normal(&mut rng))
            .collect();
        let velocity_scale: Vec<f64> = dt.clone();
        Self {
            rows,
            dims,
            new_mean,
            old_mean,
            sample,
            std,
            dt,
            advantages,
            ref_mean: Some(ref_mean),
            velocity_scale: Some(velocity_scale),
        }
    }

    fn row<'a>(&self, values: &'a [f64], row: usize) -> &'a [f64] {
        &values[row * self.dims..(row + 1) * self.dims]
    }

    /// Gaussian log-prob of `x` under `N(mu, s²)`, mean-reduced (ALGORITHMS.md §3).
    fn log_prob(x: &[f64], mu: &[f64], s: f64) -> f64 {
        let n = x.len() as f64;
        x.iter()
            .zip(mu)
            .map(|(x, m)| -(x - m).powi(2) / (2.0 * s * s))
            .sum::<f64>()
            / n
            - s.ln()
            - 0.5 * (2.0 * std::f64::consts::PI).ln()
    }

    pub fn log_ratio(&self, row: usize) -> f64 {
        let x = self.row(&self.sample, row);
        Self::log_prob(x, self.row(&self.new_mean, row), self.std[row])
            - Self::log_prob(x, self.row(&self.old_mean, row), self.std[row])
    }

    pub fn kl(&self, row: usize) -> f64 {
        let s = self.std[row];
        mean_sq_diff(self.row(&self.new_mean, row), self.row(&self.old_mean, row)) / (2.0 * s * s)
    }

    pub fn velocity_divergence(&self, row: usize) -> f64 {
        let b = self.velocity_scale.as_ref().unwrap()[row];
        mean_sq_diff(self.row(&self.new_mean, row), self.row(&self.old_mean, row)) / (b * b)
    }

    pub fn reference_kl(&self, row: usize) -> f64 {
        let s = self.std[row];
        let reference = self.ref_mean.as_ref().unwrap();
        mean_sq_diff(self.row(&self.new_mean, row), self.row(reference, row)) / (2.0 * s * s)
    }

    /// `mean(max(−A·r, −A·clip(r, 1 − lo, 1 + hi)))`.
    pub fn ratio_clip_loss(&self, lo: f64, hi: f64) -> f64 {
        (0..self.rows)
            .map(|i| clipped(self.advantages[i], self.log_ratio(i).exp(), lo, hi))
            .sum::<f64>()
            / self.rows as f64
    }

    /// GRPO-Guard: `log r̂ = (log r + KL)·s`, clipped surrogate times `1/|dt|` if reweighted.
    pub fn grpo_guard_loss(&self, epsilon: f64, reweight: bool) -> f64 {
        (0..self.rows)
            .map(|i| {
                let regulated = ((self.log_ratio(i) + self.kl(i)) * self.std[i]).exp();
                let weight = if reweight {
                    1.0 / self.dt[i].abs()
                } else {
                    1.0
                };
                clipped(self.advantages[i], regulated, epsilon, epsilon) * weight
            })
            .sum::<f64>()
            / self.rows as f64
    }

    /// Flow-DPPO: `mean(drop ? 0 : −A·r)`.
    pub fn dppo_loss(&self, tau: f64, symmetric: bool, velocity: bool) -> f64 {
        (0..self.rows)
            .map(|i| {
                if self.dppo_drops(i, tau, symmetric, velocity) {
                    0.0
                } else {
                    -self.advantages[i] * self.log_ratio(i).exp()
                }
            })
            .sum::<f64>()
            / self.rows as f64
    }

    pub fn dppo_drops(&self, row: usize, tau: f64, symmetric: bool, velocity: bool) -> bool {
        let divergence = if velocity {
            self.velocity_divergence(row)
        } else {
            self.kl(row)
        };
        let a = self.advantages[row];
        let r = self.log_ratio(row).exp();
        divergence >= tau && (symmetric || (a > 0.0 && r > 1.0) || (a < 0.0 && r < 1.0))
    }

    pub fn mean_reference_kl(&self) -> f64 {
        (0..self.rows).map(|i| self.reference_kl(i)).sum::<f64>() / self.rows as f64
    }

    /// The batch on `device`; `new_mean` is a gradient-requiring leaf.
    pub fn to_device(&self, device: &Device) -> RowBatch {
        let matrix = |v: &[f64]| {
            let data: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::<2>::from_data(TensorData::new(data, [self.rows, self.dims]), device)
        };
        let vector = |v: &[f64]| {
            let data: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::<1>::from_data(TensorData::new(data, [self.rows]), device)
        };
        let mut batch = RowBatch::new(
            matrix(&self.new_mean).require_grad(),
            matrix(&self.old_mean),
            matrix(&self.sample),
            vector(&self.std),
            vector(&self.dt),
            vector(&self.advantages),
        );
        if let Some(reference) = &self.ref_mean {
            batch = batch.with_ref_mean(matrix(reference));
        }
        if let Some(scale) = &self.velocity_scale {
            batch = batch.with_velocity_scale(vector(scale));
        }
        batch
    }

    /// Central finite differences of `loss` with respect to every entry of `new_mean`.
    pub fn finite_difference_grad(&self, loss: impl Fn(&HostBatch) -> f64) -> Vec<f64> {
        let h = 1e-6;
        (0..self.new_mean.len())
            .map(|i| {
                let mut plus = self.clone();
                plus.new_mean[i] += h;
                let mut minus = self.clone();
                minus.new_mean[i] -= h;
                (loss(&plus) - loss(&minus)) / (2.0 * h)
            })
            .collect()
    }

    /// The rows at `order`, in that order (a permutation, or a subset when shorter).
    pub fn permuted(&self, order: &[usize]) -> Self {
        let take_rows = |values: &[f64]| -> Vec<f64> {
            order
                .iter()
                .flat_map(|&r| values[r * self.dims..(r + 1) * self.dims].to_vec())
                .collect()
        };
        let take = |values: &[f64]| -> Vec<f64> { order.iter().map(|&r| values[r]).collect() };
        Self {
            rows: order.len(),
            ..self.map_fields(take_rows, take)
        }
    }

    /// The batch with `per_value` applied to each `[rows·dims]` field and `per_row` to each
    /// `[rows]` field (every field, so that a new one cannot be forgotten).
    pub fn map_fields(
        &self,
        per_value: impl Fn(&[f64]) -> Vec<f64>,
        per_row: impl Fn(&[f64]) -> Vec<f64>,
    ) -> Self {
        Self {
            rows: self.rows,
            dims: self.dims,
            new_mean: per_value(&self.new_mean),
            old_mean: per_value(&self.old_mean),
            sample: per_value(&self.sample),
            std: per_row(&self.std),
            dt: per_row(&self.dt),
            advantages: per_row(&self.advantages),
            ref_mean: self.ref_mean.as_deref().map(&per_value),
            velocity_scale: self.velocity_scale.as_deref().map(&per_row),
        }
    }
}

fn mean_sq_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / a.len() as f64
}

/// `max(−A·r, −A·clip(r, 1 − lo, 1 + hi))`.
fn clipped(a: f64, r: f64, lo: f64, hi: f64) -> f64 {
    (-a * r).max(-a * r.clamp(1.0 - lo, 1.0 + hi))
}

/// Reads a tensor back as f64 values.
pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Asserts `|a − b| ≤ abs + rel·|b|` elementwise.
pub fn assert_close(got: &[f64], want: &[f64], abs: f64, rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= abs + rel * w.abs(),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// Every float parameter of a module, flattened, in visiting order.
pub fn module_values<M: burn::module::Module>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let values = param
                .val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            self.0.extend(values);
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// `max|actual − expected| / max|expected|`: the error of a whole output relative to its
/// largest value, as the faithfulness tests measure it.
pub fn relative_error(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let error = actual
        .iter()
        .zip(expected)
        .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
    error / scale
}
