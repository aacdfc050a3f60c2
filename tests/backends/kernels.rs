//! Step kernels: transition means, samples, log-probabilities and exact KLs.

use burn::prelude::*;
use flow_rl::Rng;
use flow_rl::kernel::{
    CpsConfig, DanceSdeConfig, FlowSdeConfig, Ode, StepCoefficients, StepKernel, Transition,
    gaussian_kl,
};
use flow_rl::schedule::SigmaScheduleConfig;

use super::harness::{ELEMENTWISE, HOST, REDUCED, assert_matches, host, matrix, normals};

/// Rows (each at a different step of the schedule) and latent dims.
const ROWS: usize = 8;
const DIMS: usize = 48;

/// The kernel a check runs, with the reference η of each.
#[derive(Debug, Clone, Copy)]
pub enum KernelCase {
    FlowSde,
    DanceSde,
    Cps,
    Ode,
}

impl KernelCase {
    fn kernel(self) -> Box<dyn StepKernel> {
        match self {
            KernelCase::FlowSde => Box::new(FlowSdeConfig::new().init().unwrap()),
            KernelCase::DanceSde => Box::new(DanceSdeConfig::new().init().unwrap()),
            KernelCase::Cps => Box::new(CpsConfig::new().init().unwrap()),
            KernelCase::Ode => Box::new(Ode),
        }
    }
}

/// Host inputs: row i is at step i of the SD3 schedule (T = 10, shift 3), so every row has
/// its own σ, σ' and s; `velocity_new` is the old velocity plus a small perturbation.
struct Inputs {
    sigma: Vec<f64>,
    sigma_next: Vec<f64>,
    x: Vec<f32>,
    velocity: Vec<f32>,
    velocity_new: Vec<f32>,
    noise: Vec<f32>,
}

impl Inputs {
    fn new(seed: u64) -> Self {
        let sigmas = SigmaScheduleConfig::new().init().unwrap().sigmas().to_vec();
        let mut rng = Rng::seed_from(seed);
        let velocity = normals(&mut rng, ROWS * DIMS);
        let velocity_new = velocity
            .iter()
            .zip(normals(&mut rng, ROWS * DIMS))
            .map(|(v, e)| v + 0.05 * e)
            .collect();
        Self {
            sigma: sigmas[..ROWS].to_vec(),
            sigma_next: sigmas[1..=ROWS].to_vec(),
            x: normals(&mut rng, ROWS * DIMS),
            velocity,
            velocity_new,
            noise: normals(&mut rng, ROWS * DIMS),
        }
    }
}

/// Everything a kernel computes on a device, read back to the host.
struct Outputs {
    coefficients: Vec<StepCoefficients>,
    mean: Vec<f64>,
    std: Vec<f64>,
    sample: Vec<f64>,
    new_mean: Vec<f64>,
    /// Log-probabilities of the sample under the old and new transitions, and
    /// `KL(old ‖ new)`; `None` for a deterministic kernel, which has none.
    scores: Option<Scores>,
}

struct Scores {
    log_prob_old: Vec<f64>,
    log_prob_new: Vec<f64>,
    kl: Vec<f64>,
}

fn run(kernel: &dyn StepKernel, inputs: &Inputs, device: &Device) -> Outputs {
    let shape = [ROWS, DIMS];
    let x = matrix(&inputs.x, shape, device);
    let transition = |velocity: &[f32]| -> Transition {
        kernel
            .transition(
                x.clone(),
                matrix(velocity, shape, device),
                &inputs.sigma,
                &inputs.sigma_next,
            )
            .unwrap()
    };
    let old = transition(&inputs.velocity);
    let new = transition(&inputs.velocity_new);
    let sample = old.sample(matrix(&inputs.noise, shape, device)).unwrap();
    let deterministic = old.coefficients.iter().any(|c| c.std == 0.0);
    let scores = if deterministic {
        assert!(
            old.log_prob(sample.clone()).is_err(),
            "{}: a deterministic step has no log-probability",
            kernel.name()
        );
        None
    } else {
        Some(Scores {
            log_prob_old: host(old.log_prob(sample.clone()).unwrap()),
            log_prob_new: host(new.log_prob(sample.clone()).unwrap()),
            kl: host(gaussian_kl(old.mean.clone(), new.mean.clone(), old.std.clone()).unwrap()),
        })
    };
    Outputs {
        coefficients: old.coefficients.clone(),
        mean: host(old.mean),
        std: host(old.std),
        sample: host(sample),
        new_mean: host(new.mean),
        scores,
    }
}

/// Runs `case` on `device` and on flex, and compares both with each other and the device's
/// results with f64 host computations from the same f32 inputs.
pub fn check(case: KernelCase, device: &Device) {
    let kernel = case.kernel();
    let inputs = Inputs::new(17);
    let got = run(kernel.as_ref(), &inputs, device);
    let want = run(
        kernel.as_ref(),
        &inputs,
        &super::harness::reference_device(),
    );
    let check = format!("{} on {device:?}", kernel.name());
    let check = check.as_str();

    assert_eq!(
        got.coefficients, want.coefficients,
        "{check}: host coefficients"
    );
    for (what, got, want) in [
        ("mean", &got.mean, &want.mean),
        ("std", &got.std, &want.std),
        ("sample", &got.sample, &want.sample),
        ("new mean", &got.new_mean, &want.new_mean),
    ] {
        assert_matches(check, &format!("{what} vs flex"), got, want, ELEMENTWISE);
    }
    match (&got.scores, &want.scores) {
        (Some(got_scores), Some(want_scores)) => {
            for (what, got, want) in [
                (
                    "log π_old",
                    &got_scores.log_prob_old,
                    &want_scores.log_prob_old,
                ),
                (
                    "log π_new",
                    &got_scores.log_prob_new,
                    &want_scores.log_prob_new,
                ),
                ("KL", &got_scores.kl, &want_scores.kl),
            ] {
                assert_matches(check, &format!("{what} vs flex"), got, want, REDUCED);
            }
        }
        (None, None) => {}
        _ => panic!("{check}: one backend scored a step the other could not"),
    }

    let reference = host_reference(&got, &inputs);
    assert_matches(check, "mean vs host", &got.mean, &reference.mean, HOST);
    assert_matches(check, "std vs host", &got.std, &reference.std, HOST);
    assert_matches(
        check,
        "new mean vs host",
        &got.new_mean,
        &reference.new_mean,
        HOST,
    );
    assert_matches(
        check,
        "sample vs host",
        &got.sample,
        &reference.sample,
        HOST,
    );
    if let (Some(got_scores), Some(reference_scores)) = (&got.scores, &reference.scores) {
        assert_matches(
            check,
            "log π_old vs host",
            &got_scores.log_prob_old,
            &reference_scores.log_prob_old,
            HOST,
        );
        assert_matches(
            check,
            "log π_new vs host",
            &got_scores.log_prob_new,
            &reference_scores.log_prob_new,
            HOST,
        );
        assert_matches(
            check,
            "KL vs host",
            &got_scores.kl,
            &reference_scores.kl,
            HOST,
        );
    }
}

/// ALGORITHMS.md §2–3 in f64. The means are `a·x + b·v` from the host inputs; the
/// log-probabilities and KL are computed from the device's own sample and means, so each
/// comparison isolates one operation.
fn host_reference(device: &Outputs, inputs: &Inputs) -> Outputs {
    let affine = |velocity: &[f32]| -> Vec<f64> {
        (0..ROWS * DIMS)
            .map(|i| {
                let c = device.coefficients[i / DIMS];
                c.sample_scale * inputs.x[i] as f64 + c.velocity_scale * velocity[i] as f64
            })
            .collect()
    };
    let mean = affine(&inputs.velocity);
    let new_mean = affine(&inputs.velocity_new);
    let std: Vec<f64> = device.coefficients.iter().map(|c| c.std).collect();
    let sample = (0..ROWS * DIMS)
        .map(|i| device.mean[i] + device.std[i / DIMS] * inputs.noise[i] as f64)
        .collect();
    let row_mean = |f: &dyn Fn(usize) -> f64, row: usize| -> f64 {
        (row * DIMS..(row + 1) * DIMS).map(f).sum::<f64>() / DIMS as f64
    };
    let log_prob = |means: &[f64]| -> Vec<f64> {
        (0..ROWS)
            .map(|row| {
                let s = device.std[row];
                let squared = row_mean(&|i| (device.sample[i] - means[i]).powi(2), row);
                -squared / (2.0 * s * s) - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
            })
            .collect()
    };
    let scores = device.scores.as_ref().map(|_| Scores {
        log_prob_old: log_prob(&device.mean),
        log_prob_new: log_prob(&device.new_mean),
        kl: (0..ROWS)
            .map(|row| {
                let s = device.std[row];
                row_mean(&|i| (device.mean[i] - device.new_mean[i]).powi(2), row) / (2.0 * s * s)
            })
            .collect(),
    });
    Outputs {
        coefficients: device.coefficients.clone(),
        mean,
        std,
        sample,
        new_mean,
        scores,
    }
}
