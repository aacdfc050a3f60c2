//! The trust-region objectives: loss, metrics and the gradient with respect to the new mean.

use burn::prelude::*;
use flow_rl::objective::{ObjectiveMetrics, TrustRegionObjective};

use super::common::HostBatch;
use super::common::objectives::objectives_with_reference;
use super::harness::{GRADIENT, HOST, REDUCED, assert_matches, host, reference_device};

/// Random batches (seed, rows, latent dims, drift of the new mean in units of s), small
/// enough that the per-row KLs spread on both sides of the thresholds, so that every
/// objective keeps some rows and clips or drops others (checked below).
const BATCHES: [(u64, usize, usize, f64); 2] = [(0, 12, 5, 0.3), (5, 16, 8, 0.2)];

/// What one objective evaluation gives, on the host.
struct Evaluation {
    loss: f64,
    metrics: ObjectiveMetrics,
    gradient: Vec<f64>,
}

fn evaluate(
    objective: &dyn TrustRegionObjective,
    batch: &HostBatch,
    device: &Device,
) -> Evaluation {
    let rows = batch.to_device(&device.clone().autodiff());
    let output = objective.loss(&rows).unwrap();
    let gradients = output.loss.backward();
    let gradient = rows
        .new_mean
        .grad(&gradients)
        .map(host)
        .unwrap_or_else(|| vec![0.0; batch.rows * batch.dims]);
    Evaluation {
        loss: host(output.loss)[0],
        metrics: output.metrics,
        gradient,
    }
}

/// The metrics with continuous values, by name.
fn continuous(metrics: &ObjectiveMetrics) -> Vec<(&'static str, f64)> {
    let mut values = vec![
        ("loss", metrics.loss),
        ("ratio mean", metrics.ratio.mean),
        ("ratio std", metrics.ratio.std),
        ("ratio min", metrics.ratio.min),
        ("ratio max", metrics.ratio.max),
        ("approx KL", metrics.approx_kl),
        ("KL mean", metrics.kl_mean),
        ("KL max", metrics.kl_max),
    ];
    if let Some(mask) = metrics.mask {
        values.push(("divergence mean", mask.divergence_mean));
        values.push(("divergence max", mask.divergence_max));
    }
    if let Some(reference_kl) = metrics.reference_kl {
        values.push(("reference KL", reference_kl));
    }
    values
}

/// The metrics that count rows (clip and mask fractions): decisions, identical on every
/// backend as long as no row lies within rounding of a boundary ([`assert_clear_of_boundaries`]).
fn decisions(metrics: &ObjectiveMetrics) -> Vec<(&'static str, f64)> {
    let mut values = vec![("rows", metrics.rows as f64)];
    if let Some(clip) = metrics.clip {
        values.push(("clip fraction", clip.fraction));
        values.push(("clip high fraction", clip.high_fraction));
        values.push(("clip low fraction", clip.low_fraction));
    }
    if let Some(mask) = metrics.mask {
        values.push(("over-threshold fraction", mask.over_threshold_fraction));
        values.push(("dropped fraction", mask.dropped_fraction));
        values.push(("dropped A>0 fraction", mask.dropped_positive_fraction));
        values.push(("dropped A<0 fraction", mask.dropped_negative_fraction));
    }
    values
}

/// The batch with every value rounded to f32, as the device sees it, so the f64 references
/// compute from exactly the device's inputs.
fn rounded_to_f32(batch: &HostBatch) -> HostBatch {
    let round = |values: &[f64]| -> Vec<f64> { values.iter().map(|&v| v as f32 as f64).collect() };
    batch.map_fields(round, round)
}

/// Asserts that no row sits within 1e-3 (relative) of a decision boundary of the objectives
/// in `objectives_with_reference`, so a clip or mask decision cannot flip with the rounding
/// differences between backends (which are below 1e-5 relative).
fn assert_clear_of_boundaries(batch: &HostBatch) {
    let near =
        |value: f64, boundary: f64| (value - boundary).abs() < 1e-3 * boundary.abs().max(1.0);
    for row in 0..batch.rows {
        let log_ratio = batch.log_ratio(row);
        let ratio = log_ratio.exp();
        let regulated = ((log_ratio + batch.kl(row)) * batch.std[row]).exp();
        let kl = batch.kl(row);
        let velocity = batch.velocity_divergence(row);
        let close = [0.95, 1.08].iter().any(|&b| near(ratio, b))
            || [0.9, 1.1].iter().any(|&b| near(regulated, b))
            || (kl - 0.01).abs() < 1e-3 * 0.01
            || (velocity - 0.5).abs() < 1e-3 * 0.5
            || log_ratio.abs() < 1e-4;
        assert!(
            !close,
            "row {row} of the test batch lies on a decision boundary (r = {ratio}, r̂ = \
             {regulated}, KL = {kl}, velocity divergence = {velocity}): choose another seed"
        );
    }
}

/// Every objective on `device` against flex (loss, metrics, gradient) and against the f64
/// reference loss and its finite-difference gradient.
pub fn check(device: &Device) {
    for (seed, rows, dims, drift) in BATCHES {
        let batch = rounded_to_f32(&HostBatch::random(seed, rows, dims, drift));
        assert_clear_of_boundaries(&batch);
        for (objective, reference_loss) in objectives_with_reference() {
            let check = format!("{} (seed {seed}) on {device:?}", objective.name());
            let check = check.as_str();
            let got = evaluate(objective.as_ref(), &batch, device);
            let want = evaluate(objective.as_ref(), &batch, &reference_device());

            assert_matches(check, "loss vs flex", &[got.loss], &[want.loss], REDUCED);
            for ((name, got_value), (_, want_value)) in continuous(&got.metrics)
                .into_iter()
                .zip(continuous(&want.metrics))
            {
                assert_matches(check, name, &[got_value], &[want_value], REDUCED);
            }
            assert_eq!(
                decisions(&got.metrics),
                decisions(&want.metrics),
                "{check}: clip/mask decisions differ from flex"
            );
            assert_matches(
                check,
                "gradient vs flex",
                &got.gradient,
                &want.gradient,
                GRADIENT.scaled_abs(&want.gradient),
            );

            let host_loss = reference_loss(&batch);
            assert_matches(check, "loss vs host", &[got.loss], &[host_loss], HOST);
            let host_gradient = batch.finite_difference_grad(&reference_loss);
            assert_matches(
                check,
                "gradient vs host finite differences",
                &got.gradient,
                &host_gradient,
                GRADIENT.scaled_abs(&host_gradient),
            );
            let scale = want.gradient.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            assert!(scale > 0.0, "{check}: the gradient is all zero on flex");
            let limited = match (want.metrics.clip, want.metrics.mask) {
                (Some(clip), _) => clip.fraction,
                (_, Some(mask)) => mask.dropped_fraction,
                _ => unreachable!("every objective here clips or masks"),
            };
            assert!(
                limited > 0.0 && limited < 1.0,
                "{check}: the batch should have both clipped/dropped and kept rows ({limited})"
            );
        }
    }
}
