//! Identities of ALGORITHMS.md §3 and §4 checked on the crate's internal per-row terms.

use crate::rng::Rng;
use burn::prelude::*;

use super::batch::RowBatch;
use super::terms::RowTerms;
use crate::kernel::{gaussian_kl, gaussian_log_prob};
use crate::tensor_util::host_values;

/// Rows with `x' = μ_old + s·ε` and `μ_new = μ_old + d`, where every row shares one `d`.
fn rows_with_shared_drift(rows: usize, dims: usize, std: f32, drift: f32) -> (RowBatch, Tensor<2>) {
    let device = Device::default();
    let mut rng = Rng::seed_from(1234);
    let old_mean = rng.normal_tensor([rows, dims], &device);
    let noise = rng.normal_tensor([rows, dims], &device);
    let drift_row = rng.normal_tensor([1, dims], &device).mul_scalar(drift);
    let new_mean = old_mean.clone() + drift_row.expand([rows, dims]);
    let sample = old_mean.clone() + noise.clone().mul_scalar(std);
    let std = Tensor::<1>::full([rows], std, &device);
    let dt = Tensor::<1>::full([rows], -0.1, &device);
    let advantages = Tensor::<1>::ones([rows], &device);
    (
        RowBatch::new(new_mean, old_mean, sample, std, dt, advantages),
        noise,
    )
}

/// `log π_new(x') − log π_old(x')` from the public Gaussian log-prob, `[R]`.
fn log_prob_difference(batch: &RowBatch) -> Tensor<1> {
    let log_prob = |mean: &Tensor<2>| {
        gaussian_log_prob(batch.sample.clone(), mean.clone(), batch.std.clone()).unwrap()
    };
    log_prob(&batch.new_mean) - log_prob(&batch.old_mean)
}

#[test]
fn log_ratio_is_projected_noise_minus_kl_and_matches_the_gaussian_log_probs() {
    let (batch, noise) = rows_with_shared_drift(64, 32, 0.7, 0.05);
    let terms = RowTerms::new(&batch);
    let diff = batch.new_mean.clone() - batch.old_mean.clone();
    // mean_N(ε·d)/s − KL, from the noise that drew x'.
    let projected = (noise * diff)
        .mean_dim(1)
        .squeeze_dim::<1>(1)
        .div_scalar(0.7);
    let kl = gaussian_kl(
        batch.new_mean.clone(),
        batch.old_mean.clone(),
        batch.std.clone(),
    )
    .unwrap();
    let identity = host_values(projected - kl).unwrap();
    let from_log_probs = host_values(log_prob_difference(&batch)).unwrap();
    let log_ratio = host_values(terms.log_ratio()).unwrap();
    for row in 0..64 {
        assert!((log_ratio[row] - identity[row]).abs() < 1e-5, "row {row}");
        assert!(
            (log_ratio[row] - from_log_probs[row]).abs() < 1e-4,
            "row {row}"
        );
    }
}

#[test]
fn log_ratio_std_is_sqrt_two_kl_over_n_and_its_mean_is_minus_kl() {
    // Every row has the same d, so the same KL; only ε differs. The sample std of 4000 values
    // has a relative standard error of 1/sqrt(2·4000) ≈ 1.1%; 5% is about 4.5 standard
    // errors. The mean's standard error is sqrt(2·KL/N)/sqrt(4000).
    let (rows, dims) = (4000, 64);
    let (batch, _) = rows_with_shared_drift(rows, dims, 0.5, 0.02);
    let terms = RowTerms::new(&batch);
    let log_ratio: Vec<f64> = host_values(terms.log_ratio())
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let kl = host_values(terms.kl).unwrap()[0] as f64;
    let mean = log_ratio.iter().sum::<f64>() / rows as f64;
    let std = (log_ratio.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / rows as f64).sqrt();
    let predicted = (2.0 * kl / dims as f64).sqrt();
    assert!(kl > 1e-4, "the drift must be visible: KL = {kl}");
    assert!(
        (std / predicted - 1.0).abs() < 0.05,
        "std {std} vs sqrt(2·KL/N) {predicted}"
    );
    let standard_error = predicted / (rows as f64).sqrt();
    assert!(
        (mean + kl).abs() < 4.0 * standard_error,
        "mean {mean} vs −KL {}",
        -kl
    );
}

#[test]
fn grpo_guard_regulated_log_ratio_is_the_mean_noise_drift_product() {
    // ALGORITHMS.md §4: log r̂ = (log π_new − log π_old + KL)·s = mean_N(ε·d).
    let (batch, noise) = rows_with_shared_drift(32, 16, 0.4, 0.1);
    let terms = RowTerms::new(&batch);
    let regulated = host_values(terms.projected_noise() * terms.std.clone()).unwrap();
    let diff = batch.new_mean.clone() - batch.old_mean.clone();
    let want = host_values((noise * diff).mean_dim(1).squeeze_dim::<1>(1)).unwrap();
    let log_ratio_plus_kl = host_values(
        (log_prob_difference(&batch)
            + gaussian_kl(
                batch.new_mean.clone(),
                batch.old_mean.clone(),
                batch.std.clone(),
            )
            .unwrap())
        .mul_scalar(0.4),
    )
    .unwrap();
    for row in 0..32 {
        assert!((regulated[row] - want[row]).abs() < 1e-6, "row {row}");
        assert!(
            (log_ratio_plus_kl[row] - want[row]).abs() < 1e-5,
            "row {row}"
        );
    }
}
