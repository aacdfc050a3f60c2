//! Public-API tests of the trust-region objectives against the f64 reference in `common`.

mod common;

use burn::prelude::*;
use common::objectives::objectives_with_reference;
use common::{HostBatch, assert_close, values};
use flow_rl::Error;
use flow_rl::objective::{
    DppoDivergence, DppoMask, FlowDppoConfig, GrpoGuardConfig, ObjectiveConfig, RatioClipConfig,
    ReferenceKlConfig, RowBatch, RowStatus, TrustRegionObjective,
};
use proptest::prelude::*;

fn device() -> Device {
    Device::default().autodiff()
}

/// Loss value and gradient with respect to `new_mean`, on the device.
fn loss_and_grad(objective: &dyn TrustRegionObjective, host: &HostBatch) -> (f64, Vec<f64>) {
    let batch = host.to_device(&device());
    let output = objective.loss(&batch).unwrap();
    let grads = output.loss.backward();
    let grad = batch.new_mean.grad(&grads).map(values).unwrap_or_else(|| {
        // A loss with no path to new_mean (every row inactive) has a zero gradient.
        vec![0.0; host.rows * host.dims]
    });
    (values(output.loss)[0], grad)
}

#[test]
fn each_loss_and_gradient_match_the_reference_and_finite_differences() {
    for seed in 0..4 {
        let host = HostBatch::random(seed, 12, 5, 0.3);
        for (objective, reference) in objectives_with_reference() {
            let (loss, grad) = loss_and_grad(objective.as_ref(), &host);
            let want = reference(&host);
            assert!(
                (loss - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{} seed {seed}: loss {loss}, reference {want}",
                objective.name()
            );
            let numeric = host.finite_difference_grad(&reference);
            let scale = numeric.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            assert!(
                scale > 0.0,
                "{}: the reference gradient is all zero",
                objective.name()
            );
            assert_close(&grad, &numeric, 1e-4 * scale, 1e-3, objective.name());
        }
    }
}

#[test]
fn the_test_batches_exercise_both_branches() {
    // Guards the test above against batches where nothing is clipped or dropped.
    let host = HostBatch::random(0, 12, 5, 0.3);
    let clip = RatioClipConfig::new()
        .with_epsilon_low(0.05)
        .with_epsilon_high(0.08)
        .init()
        .unwrap();
    let fraction = clip
        .loss(&host.to_device(&device()))
        .unwrap()
        .metrics
        .clip
        .unwrap()
        .fraction;
    assert!(fraction > 0.0 && fraction < 1.0, "clip fraction {fraction}");
    let dppo = FlowDppoConfig::new().with_threshold(0.01).init().unwrap();
    let mask = dppo
        .loss(&host.to_device(&device()))
        .unwrap()
        .metrics
        .mask
        .unwrap();
    assert!(
        mask.dropped_fraction > 0.0 && mask.dropped_fraction < 1.0,
        "{mask:?}"
    );
    assert!(
        mask.over_threshold_fraction > mask.dropped_fraction,
        "corrective rows pass: {mask:?}"
    );
}

#[test]
fn on_policy_ratio_is_one_and_kl_is_zero() {
    let mut host = HostBatch::random(3, 16, 32, 0.0);
    host.new_mean = host.old_mean.clone();
    let mean_advantage = host.advantages.iter().sum::<f64>() / host.rows as f64;
    for name in ["ratio-clip", "grpo-guard", "flow-dppo"] {
        let objective = ObjectiveConfig::from_name(name).unwrap().init().unwrap();
        let metrics = objective.loss(&host.to_device(&device())).unwrap().metrics;
        assert_eq!(metrics.ratio.min, 1.0, "{name}");
        assert_eq!(metrics.ratio.max, 1.0, "{name}");
        assert_eq!(metrics.kl_max, 0.0, "{name}");
        assert_eq!(metrics.approx_kl, 0.0, "{name}");
        if name != "grpo-guard" {
            assert!(
                (metrics.loss + mean_advantage).abs() < 1e-5,
                "{name}: {}",
                metrics.loss
            );
        }
    }
}

/// One row with N = 1, s = 1, μ_old = 0: `KL = d²/2` and `log r = e·d − d²/2`, so the ratio
/// and divergence can be placed exactly.
fn single_row(advantage: f64, d: f64, e: f64) -> HostBatch {
    HostBatch {
        rows: 1,
        dims: 1,
        new_mean: vec![d],
        old_mean: vec![0.0],
        sample: vec![e],
        std: vec![1.0],
        dt: vec![-0.1],
        advantages: vec![advantage],
        ref_mean: None,
        velocity_scale: None,
    }
}

#[test]
fn dppo_mask_truth_table() {
    let tau = 0.125; // d = 0.5 gives KL = 0.125 = τ exactly in f32: the boundary counts as over.
    for (d, over) in [(0.5, true), (0.8, true), (0.1, false)] {
        // e = d/2 makes log r exactly 0 in f32 (halving is exact).
        // e = 2d gives log r = 1.5·d² > 0 with a non-zero gradient ∝ (e − d).
        for (e, ratio_sign) in [(2.0 * d, 1), (d / 2.0, 0), (0.0, -1)] {
            for advantage in [1.0, 0.0, -1.0] {
                let host = single_row(advantage, d, e);
                let pushes =
                    (advantage > 0.0 && ratio_sign > 0) || (advantage < 0.0 && ratio_sign < 0);
                for (mask, drops) in [
                    (DppoMask::AdvantageAware, over && pushes),
                    (DppoMask::Symmetric, over),
                ] {
                    let objective = FlowDppoConfig::new()
                        .with_threshold(tau)
                        .with_mask(mask)
                        .init()
                        .unwrap();
                    let batch = host.to_device(&device());
                    let output = objective.loss(&batch).unwrap();
                    let metrics = output.metrics.mask.unwrap();
                    let case = format!("{mask:?} A={advantage} d={d} r-1 sign={ratio_sign}");
                    assert_eq!(
                        metrics.dropped_fraction,
                        f64::from(u8::from(drops)),
                        "{case}"
                    );
                    assert_eq!(
                        metrics.over_threshold_fraction,
                        f64::from(u8::from(over)),
                        "{case}"
                    );
                    let r = host.log_ratio(0).exp();
                    let want_loss = if drops { 0.0 } else { -advantage * r };
                    assert!(
                        (values(output.loss.clone())[0] - want_loss).abs() < 1e-6,
                        "{case}"
                    );
                    let grads = output.loss.backward();
                    let grad = batch.new_mean.grad(&grads).map(values).unwrap_or(vec![0.0]);
                    if drops || advantage == 0.0 {
                        assert_eq!(grad, vec![0.0], "{case}");
                    } else {
                        assert_ne!(grad, vec![0.0], "{case}");
                    }
                    if ratio_sign == 0 {
                        assert_eq!(output.metrics.ratio.mean, 1.0, "{case}: r is exactly 1");
                    }
                }
            }
        }
    }
}

#[test]
fn masked_and_clipped_rows_have_exactly_zero_gradient() {
    let host = HostBatch::random(7, 24, 6, 0.4);
    let batch = host.to_device(&device());
    let dppo = FlowDppoConfig::new().with_threshold(0.01).init().unwrap();
    let output = dppo.loss(&batch).unwrap();
    let grad = values(batch.new_mean.grad(&output.loss.backward()).unwrap());
    let mut dropped = 0;
    for row in 0..host.rows {
        let row_grad = &grad[row * host.dims..(row + 1) * host.dims];
        if host.dppo_drops(row, 0.01, false, false) {
            dropped += 1;
            assert!(
                row_grad.iter().all(|&g| g == 0.0),
                "dropped row {row}: {row_grad:?}"
            );
        } else {
            assert!(row_grad.iter().any(|&g| g != 0.0), "kept row {row}");
        }
    }
    assert!(dropped > 0);

    let clip = RatioClipConfig::new()
        .with_epsilon_low(0.05)
        .with_epsilon_high(0.05)
        .init()
        .unwrap();
    let batch = host.to_device(&device());
    let output = clip.loss(&batch).unwrap();
    let grad = values(batch.new_mean.grad(&output.loss.backward()).unwrap());
    let mut clipped = 0;
    for row in 0..host.rows {
        let (a, r) = (host.advantages[row], host.log_ratio(row).exp());
        if (a > 0.0 && r > 1.05) || (a < 0.0 && r < 0.95) {
            clipped += 1;
            assert!(
                grad[row * host.dims..(row + 1) * host.dims]
                    .iter()
                    .all(|&g| g == 0.0)
            );
        }
    }
    assert!(clipped > 0);
}

#[test]
fn an_overflowed_ratio_in_a_masked_or_clipped_row_gives_no_nan() {
    // Row 0: e = 30, d = 2.5, s = 0.1 ⇒ log r ≈ 7.5e3 and log r̂ = 750: exp overflows f32.
    // Row 1 is ordinary.
    let host = overflowing_batch(1.0);
    let objectives: Vec<Box<dyn TrustRegionObjective>> = vec![
        Box::new(RatioClipConfig::new().init().unwrap()),
        Box::new(GrpoGuardConfig::new().init().unwrap()),
        Box::new(FlowDppoConfig::new().init().unwrap()),
        Box::new(
            FlowDppoConfig::new()
                .with_mask(DppoMask::Symmetric)
                .init()
                .unwrap(),
        ),
    ];
    for objective in objectives {
        let (loss, grad) = loss_and_grad(objective.as_ref(), &host);
        assert!(loss.is_finite(), "{}: loss {loss}", objective.name());
        assert!(
            grad.iter().all(|g| g.is_finite()),
            "{}: {grad:?}",
            objective.name()
        );
        assert_eq!(
            grad[0],
            0.0,
            "{}: the overflowed row is inactive",
            objective.name()
        );
    }
}

#[test]
fn the_loss_is_a_mean_over_all_rows() {
    // Two identical kept rows and two dropped ones: the loss is half the kept rows' value.
    let kept = single_row(1.0, 0.001, 0.0);
    let dropped = single_row(1.0, 0.5, 0.5);
    let mut host = kept.clone();
    host.rows = 4;
    for other in [&kept, &dropped, &dropped] {
        host.new_mean.extend(&other.new_mean);
        host.old_mean.extend(&other.old_mean);
        host.sample.extend(&other.sample);
        host.std.extend(&other.std);
        host.dt.extend(&other.dt);
        host.advantages.extend(&other.advantages);
    }
    let output = FlowDppoConfig::new()
        .init()
        .unwrap()
        .loss(&host.to_device(&device()))
        .unwrap();
    let kept_loss = -kept.log_ratio(0).exp();
    assert!((values(output.loss)[0] - kept_loss / 2.0).abs() < 1e-6);
    assert_eq!(output.metrics.mask.unwrap().dropped_fraction, 0.5);
}

#[test]
fn metrics_match_the_reference() {
    let host = HostBatch::random(11, 20, 8, 0.3);
    let metrics = FlowDppoConfig::new()
        .with_threshold(0.01)
        .init()
        .unwrap()
        .loss(&host.to_device(&device()))
        .unwrap()
        .metrics;
    let ratios: Vec<f64> = (0..host.rows).map(|i| host.log_ratio(i).exp()).collect();
    let kls: Vec<f64> = (0..host.rows).map(|i| host.kl(i)).collect();
    let mean = ratios.iter().sum::<f64>() / 20.0;
    let std = (ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / 20.0).sqrt();
    let approx_kl = (0..host.rows)
        .map(|i| 0.5 * host.log_ratio(i).powi(2))
        .sum::<f64>()
        / 20.0;
    assert_close(
        &[metrics.ratio.mean, metrics.ratio.std],
        &[mean, std],
        1e-5,
        1e-4,
        "ratio",
    );
    assert_close(&[metrics.approx_kl], &[approx_kl], 1e-7, 1e-4, "approx_kl");
    assert_close(
        &[metrics.kl_mean],
        &[kls.iter().sum::<f64>() / 20.0],
        1e-7,
        1e-4,
        "kl_mean",
    );
    assert_close(
        &[metrics.kl_max],
        &[kls.iter().cloned().fold(0.0, f64::max)],
        1e-7,
        1e-4,
        "kl_max",
    );
    let mask = metrics.mask.unwrap();
    let drops: Vec<bool> = (0..host.rows)
        .map(|i| host.dppo_drops(i, 0.01, false, false))
        .collect();
    let positive = (0..host.rows)
        .filter(|&i| drops[i] && host.advantages[i] > 0.0)
        .count();
    let negative = (0..host.rows)
        .filter(|&i| drops[i] && host.advantages[i] < 0.0)
        .count();
    assert_eq!(mask.dropped_positive_fraction, positive as f64 / 20.0);
    assert_eq!(mask.dropped_negative_fraction, negative as f64 / 20.0);
    assert!(positive + negative > 0);
}

#[test]
fn reference_kl_reports_its_term() {
    let host = HostBatch::random(5, 8, 4, 0.2);
    let objective = ReferenceKlConfig::new()
        .with_beta(0.5)
        .init(RatioClipConfig::new().init().unwrap())
        .unwrap();
    let metrics = objective.loss(&host.to_device(&device())).unwrap().metrics;
    let term = metrics.reference_kl.unwrap();
    assert_close(
        &[term],
        &[host.mean_reference_kl()],
        1e-7,
        1e-4,
        "reference KL",
    );
    let without = RatioClipConfig::new()
        .init()
        .unwrap()
        .loss(&host.to_device(&device()))
        .unwrap();
    assert_close(
        &[metrics.loss],
        &[without.metrics.loss + 0.5 * term],
        1e-7,
        1e-5,
        "loss",
    );
}

// ---------------------------------------------------------------------------------------
// Per-row diagnostics

/// Which objective a row expectation is for, with its parameters.
enum Rule {
    RatioClip {
        low: f64,
        high: f64,
    },
    GrpoGuard {
        epsilon: f64,
        reweight: bool,
    },
    FlowDppo {
        tau: f64,
        symmetric: bool,
        velocity: bool,
    },
}

/// The status and loss term ALGORITHMS.md §4 gives row `i`, in f64 from the host batch.
fn expected_row(rule: &Rule, host: &HostBatch, i: usize) -> (RowStatus, f64) {
    let a = host.advantages[i];
    let clip = |ratio: f64, low: f64, high: f64, weight: f64| {
        if a > 0.0 && ratio > 1.0 + high {
            (RowStatus::ClippedHigh, -a * (1.0 + high) * weight)
        } else if a < 0.0 && ratio < 1.0 - low {
            (RowStatus::ClippedLow, -a * (1.0 - low) * weight)
        } else {
            (RowStatus::Kept, -a * ratio * weight)
        }
    };
    match *rule {
        Rule::RatioClip { low, high } => clip(host.log_ratio(i).exp(), low, high, 1.0),
        Rule::GrpoGuard { epsilon, reweight } => {
            let regulated = ((host.log_ratio(i) + host.kl(i)) * host.std[i]).exp();
            let weight = if reweight {
                1.0 / host.dt[i].abs()
            } else {
                1.0
            };
            clip(regulated, epsilon, epsilon, weight)
        }
        Rule::FlowDppo {
            tau,
            symmetric,
            velocity,
        } => {
            if host.dppo_drops(i, tau, symmetric, velocity) {
                (RowStatus::Dropped, 0.0)
            } else {
                (RowStatus::Kept, -a * host.log_ratio(i).exp())
            }
        }
    }
}

#[test]
fn row_diagnostics_match_the_f64_formulas_and_average_to_the_metrics() {
    let cases: Vec<(Box<dyn TrustRegionObjective>, Rule, f64)> = vec![
        (
            Box::new(
                RatioClipConfig::new()
                    .with_epsilon_low(0.05)
                    .with_epsilon_high(0.08)
                    .init()
                    .unwrap(),
            ),
            Rule::RatioClip {
                low: 0.05,
                high: 0.08,
            },
            0.0,
        ),
        (
            Box::new(GrpoGuardConfig::new().with_epsilon(0.1).init().unwrap()),
            Rule::GrpoGuard {
                epsilon: 0.1,
                reweight: true,
            },
            0.0,
        ),
        (
            Box::new(
                FlowDppoConfig::new()
                    .with_threshold(0.5)
                    .with_mask(DppoMask::Symmetric)
                    .with_divergence(DppoDivergence::Velocity)
                    .init()
                    .unwrap(),
            ),
            Rule::FlowDppo {
                tau: 0.5,
                symmetric: true,
                velocity: true,
            },
            0.0,
        ),
        (
            // The wrapper keeps the inner objective's rows; its term is in the metrics only.
            Box::new(
                ReferenceKlConfig::new()
                    .with_beta(0.3)
                    .init(FlowDppoConfig::new().with_threshold(0.01).init().unwrap())
                    .unwrap(),
            ),
            Rule::FlowDppo {
                tau: 0.01,
                symmetric: false,
                velocity: false,
            },
            0.3,
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for seed in 0..4 {
        let host = HostBatch::random(seed, 12, 5, 0.3);
        for (objective, rule, beta) in &cases {
            let name = objective.name();
            let output = objective.loss(&host.to_device(&device())).unwrap();
            let (rows, metrics) = (&output.rows, &output.metrics);
            assert_eq!(rows.len(), host.rows, "{name}");
            let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
            let log_ratio: Vec<f64> = (0..host.rows).map(|i| host.log_ratio(i)).collect();
            let kl: Vec<f64> = (0..host.rows).map(|i| host.kl(i)).collect();
            assert_close(&widen(&rows.log_ratio), &log_ratio, 1e-5, 1e-4, name);
            assert_close(&widen(&rows.kl), &kl, 1e-7, 1e-4, name);
            let (status, loss): (Vec<RowStatus>, Vec<f64>) =
                (0..host.rows).map(|i| expected_row(rule, &host, i)).unzip();
            assert_eq!(rows.status, status, "{name} seed {seed}");
            assert_close(&widen(&rows.loss), &loss, 1e-5, 1e-4, name);
            seen.extend(status);

            // The aggregates are the means of the same per-row values.
            let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
            let fraction = |s: RowStatus| {
                mean(
                    rows.status
                        .iter()
                        .map(|&x| f64::from(u8::from(x == s)))
                        .collect(),
                )
            };
            let reference_term = beta * metrics.reference_kl.unwrap_or(0.0);
            assert_close(
                &[mean(widen(&rows.loss))],
                &[metrics.loss - reference_term],
                1e-9,
                1e-9,
                name,
            );
            assert_close(
                &[mean(widen(&rows.kl))],
                &[metrics.kl_mean],
                1e-12,
                1e-9,
                name,
            );
            let half_square = rows
                .log_ratio
                .iter()
                .map(|&l| 0.5 * f64::from(l).powi(2))
                .collect();
            assert_close(
                &[mean(half_square)],
                &[metrics.approx_kl],
                1e-12,
                1e-9,
                name,
            );
            let ratios = rows.log_ratio.iter().map(|&l| f64::from(l).exp()).collect();
            assert_close(&[mean(ratios)], &[metrics.ratio.mean], 1e-12, 1e-9, name);
            if let Some(clip) = metrics.clip {
                assert_eq!(
                    clip.high_fraction,
                    fraction(RowStatus::ClippedHigh),
                    "{name}"
                );
                assert_eq!(clip.low_fraction, fraction(RowStatus::ClippedLow), "{name}");
            }
            if let Some(mask) = metrics.mask {
                assert_eq!(
                    mask.dropped_fraction,
                    fraction(RowStatus::Dropped),
                    "{name}"
                );
            }
        }
    }
    assert_eq!(seen.len(), 4, "every status occurs: {seen:?}");
}

// ---------------------------------------------------------------------------------------
// Bad input

fn expect_error(objective: &dyn TrustRegionObjective, batch: &RowBatch, needle: &str) {
    let err = objective.loss(batch).unwrap_err();
    assert!(
        err.to_string().contains(needle),
        "expected `{needle}` in: {err}"
    );
}

#[test]
fn rows_whose_tensors_disagree_in_shape_are_errors() {
    let host = HostBatch::random(1, 4, 3, 0.1);
    let dev = device();
    let good = host.to_device(&dev);
    let objective = FlowDppoConfig::new().init().unwrap();
    let wrong_matrix = Tensor::<2>::zeros([4, 2], &dev);
    let wrong_vector = Tensor::<1>::zeros([3], &dev);
    let cases: Vec<(RowBatch, &str)> = vec![
        (
            RowBatch {
                old_mean: wrong_matrix.clone(),
                ..good.clone()
            },
            "old_mean",
        ),
        (
            RowBatch {
                sample: wrong_matrix.clone(),
                ..good.clone()
            },
            "sample",
        ),
        (
            RowBatch {
                std: wrong_vector.clone(),
                ..good.clone()
            },
            "std",
        ),
        (
            RowBatch {
                dt: wrong_vector.clone(),
                ..good.clone()
            },
            "dt",
        ),
        (
            RowBatch {
                advantages: wrong_vector.clone(),
                ..good.clone()
            },
            "advantages",
        ),
        (good.clone().with_ref_mean(wrong_matrix), "ref_mean"),
        (
            good.clone().with_velocity_scale(wrong_vector),
            "velocity_scale",
        ),
    ];
    for (batch, field) in cases {
        let err = objective.loss(&batch).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(field) && message.contains("[4"),
            "{message}"
        );
    }
    let empty = RowBatch::new(
        Tensor::zeros([0, 3], &dev),
        Tensor::zeros([0, 3], &dev),
        Tensor::zeros([0, 3], &dev),
        Tensor::zeros([0], &dev),
        Tensor::zeros([0], &dev),
        Tensor::zeros([0], &dev),
    );
    expect_error(&objective, &empty, "R ≥ 1");
}

#[test]
fn invalid_configs_are_errors() {
    for tau in [0.0, -1e-5, f64::NAN] {
        let err = FlowDppoConfig::new()
            .with_threshold(tau)
            .init()
            .unwrap_err();
        assert!(err.to_string().contains("tau"), "{err}");
    }
    assert!(
        RatioClipConfig::new()
            .with_epsilon_low(-0.1)
            .init()
            .is_err()
    );
    assert!(
        RatioClipConfig::new()
            .with_epsilon_high(-1e-4)
            .init()
            .is_err()
    );
    assert!(RatioClipConfig::new().with_epsilon_low(1.0).init().is_err());
    assert!(GrpoGuardConfig::new().with_epsilon(-0.2).init().is_err());
    assert!(
        ReferenceKlConfig::new()
            .with_beta(-1.0)
            .init(RatioClipConfig::new().init().unwrap())
            .is_err()
    );
    let err = ObjectiveConfig::from_name("ppo").unwrap_err();
    assert!(err.to_string().contains("flow-dppo"), "{err}");
}

#[test]
fn missing_optional_inputs_and_bad_values_are_errors() {
    let mut host = HostBatch::random(2, 4, 3, 0.1);
    host.ref_mean = None;
    host.velocity_scale = None;
    let batch = host.to_device(&device());
    let velocity = FlowDppoConfig::new()
        .with_divergence(DppoDivergence::Velocity)
        .init()
        .unwrap();
    expect_error(&velocity, &batch, "velocity_scale");
    let reference = ReferenceKlConfig::new()
        .with_beta(0.1)
        .init(RatioClipConfig::new().init().unwrap())
        .unwrap();
    expect_error(&reference, &batch, "ref_mean");

    let objective = RatioClipConfig::new().init().unwrap();
    let mut zero_std = host.clone();
    zero_std.std[2] = 0.0;
    expect_error(&objective, &zero_std.to_device(&device()), "std of row 2");
    let mut nan_advantage = host.clone();
    nan_advantage.advantages[1] = f64::NAN;
    expect_error(
        &objective,
        &nan_advantage.to_device(&device()),
        "advantage at index 1",
    );
    let mut nan_mean = host.clone();
    nan_mean.new_mean[4] = f64::NAN;
    expect_error(&objective, &nan_mean.to_device(&device()), "log-ratio");
    let mut zero_dt = host.clone();
    zero_dt.dt[3] = 0.0;
    let guard = GrpoGuardConfig::new().init().unwrap();
    expect_error(&guard, &zero_dt.to_device(&device()), "dt of row 3");
}

/// Every objective, with defaults that keep the rows of `HostBatch::random(_, _, _, 0.1)`.
fn each_objective() -> Vec<Box<dyn TrustRegionObjective>> {
    vec![
        Box::new(RatioClipConfig::new().init().unwrap()),
        Box::new(GrpoGuardConfig::new().init().unwrap()),
        Box::new(FlowDppoConfig::new().init().unwrap()),
    ]
}

#[test]
fn an_infinite_sample_is_an_error_not_an_infinite_loss() {
    for value in [f64::INFINITY, f64::NEG_INFINITY] {
        let mut host = HostBatch::random(2, 4, 3, 0.1);
        host.sample[7] = value; // row 2
        for objective in each_objective() {
            let err = objective.loss(&host.to_device(&device())).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, Error::NonFinite { index: 2, .. }) && message.contains("log-ratio"),
                "{}: {message}",
                objective.name()
            );
        }
    }
}

#[test]
fn a_std_whose_square_is_not_a_normal_f32_is_an_error() {
    // 1e-30² underflows to 0 (infinite KL, NaN gradients); 1e30² overflows to inf.
    for std in [1e-30, 1e-20, 1e30, -0.7, f64::NAN] {
        let mut host = HostBatch::random(2, 4, 3, 0.1);
        host.std[1] = std;
        for objective in each_objective() {
            let err = objective.loss(&host.to_device(&device())).unwrap_err();
            assert!(
                err.to_string().contains("std of row 1"),
                "{} s = {std}: {err}",
                objective.name()
            );
        }
    }
    let mut host = HostBatch::random(2, 4, 3, 0.1);
    host.std[1] = 0.7;
    for objective in each_objective() {
        assert!(objective.loss(&host.to_device(&device())).is_ok());
    }
}

#[test]
fn a_dt_whose_inverse_overflows_is_an_error_under_dt_reweighting() {
    // 1/|1e-40| is infinite in f32; 0 and ±inf have no finite, non-zero weight either.
    for dt in [1e-40, 0.0, f64::INFINITY, f64::NAN] {
        let mut host = HostBatch::random(2, 4, 3, 0.1);
        host.dt[3] = dt;
        let guard = GrpoGuardConfig::new().init().unwrap();
        expect_error(&guard, &host.to_device(&device()), "dt of row 3");
        let unweighted = GrpoGuardConfig::new()
            .with_dt_reweighting(false)
            .init()
            .unwrap();
        assert!(
            unweighted.loss(&host.to_device(&device())).is_ok(),
            "dt {dt}"
        );
    }
}

#[test]
fn an_overflowed_ratio_in_a_row_that_keeps_its_gradient_is_an_error() {
    // Row 0 as in the masked/clipped overflow test (log r ≈ 7.2e3, log r̂ = 750), but with
    // A < 0: r > 1 is the unclipped branch and a corrective update, so every objective keeps
    // the row and −A·r is +inf.
    let host = overflowing_batch(-1.0);
    for objective in each_objective() {
        let err = objective.loss(&host.to_device(&device())).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, Error::NonFinite { index: 0, .. })
                && message.contains("lower the learning rate"),
            "{}: {message}",
            objective.name()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Properties

fn all_objectives() -> Vec<Box<dyn TrustRegionObjective>> {
    objectives_with_reference()
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn kl_is_non_negative_and_symmetric_in_d(seed in 0u64..10_000, rows in 1usize..8, dims in 1usize..16) {
        let host = HostBatch::random(seed, rows, dims, 0.5);
        let objective = RatioClipConfig::new().init().unwrap();
        let forward = objective.loss(&host.to_device(&device())).unwrap().metrics;
        // Swapping old and new means negates d.
        let mut swapped = host.clone();
        std::mem::swap(&mut swapped.new_mean, &mut swapped.old_mean);
        let backward = objective.loss(&swapped.to_device(&device())).unwrap().metrics;
        prop_assert!(forward.kl_mean >= 0.0 && forward.kl_max >= 0.0);
        prop_assert!((forward.kl_mean - backward.kl_mean).abs() <= 1e-6 * (1.0 + forward.kl_mean));
        prop_assert!((forward.kl_max - backward.kl_max).abs() <= 1e-6 * (1.0 + forward.kl_max));
    }

    #[test]
    fn the_loss_is_invariant_to_row_order(seed in 0u64..10_000, rows in 2usize..10) {
        let host = HostBatch::random(seed, rows, 4, 0.3);
        let mut order: Vec<usize> = (0..rows).collect();
        flow_rl::Rng::seed_from(seed).shuffle(&mut order);
        let permuted = host.permuted(&order);
        for objective in all_objectives() {
            let a = objective.loss(&host.to_device(&device())).unwrap().metrics;
            let b = objective.loss(&permuted.to_device(&device())).unwrap().metrics;
            prop_assert!((a.loss - b.loss).abs() <= 1e-5 * (1.0 + a.loss.abs()), "{}", objective.name());
        }
    }

    #[test]
    fn each_objective_equals_the_hand_written_formula(seed in 0u64..10_000, rows in 1usize..10, dims in 1usize..10) {
        let host = HostBatch::random(seed, rows, dims, 0.3);
        for (objective, reference) in objectives_with_reference() {
            let loss = values(objective.loss(&host.to_device(&device())).unwrap().loss)[0];
            let want = reference(&host);
            prop_assert!((loss - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{}: {loss} vs {want}", objective.name());
        }
    }
}

/// Row 0: e = 30, d = 2.5, s = 0.1 ⇒ log r ≈ 7.5e3 and log r̂ = 750, so exp overflows f32;
/// its advantage is `advantage`. Row 1 is ordinary, with A = 1.
fn overflowing_batch(advantage: f64) -> HostBatch {
    HostBatch {
        rows: 2,
        dims: 1,
        new_mean: vec![2.5, 0.01],
        old_mean: vec![0.0, 0.0],
        sample: vec![30.0, 0.3],
        std: vec![0.1, 0.5],
        dt: vec![-0.1, -0.1],
        advantages: vec![advantage, 1.0],
        ref_mean: None,
        velocity_scale: None,
    }
}
