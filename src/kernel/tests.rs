use approx::assert_abs_diff_eq;
use burn::prelude::*;
use burn::tensor::FloatDType;

use super::*;
use crate::schedule::SigmaScheduleConfig;
use crate::tensor_util::host_values;

fn sd3_sigmas() -> Vec<f64> {
    SigmaScheduleConfig::new().init().unwrap().sigmas().to_vec()
}

fn matrix(values: &[f32], rows: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [rows, values.len() / rows]),
        device,
    )
}

/// x = [1, −2], v = [0.5, 3] through one kernel step; returns (mean, std).
fn one_row_step(kernel: &dyn StepKernel, step: usize) -> (Vec<f32>, f64) {
    let device = Device::default();
    let sigmas = sd3_sigmas();
    let x = matrix(&[1.0, -2.0], 1, &device);
    let v = matrix(&[0.5, 3.0], 1, &device);
    let transition = kernel
        .transition(x, v, &[sigmas[step]], &[sigmas[step + 1]])
        .unwrap();
    (
        host_values(transition.mean).unwrap(),
        transition.coefficients[0].std,
    )
}

// Golden values below come from this independent Python computation of ALGORITHMS.md §2
// (T = 10, shift 3, x = [1, -2], v = [0.5, 3]):
//
//   sig = [3*(1-i/10)/(1+2*(1-i/10)) for i in range(11)]
//   # Flow-SDE, eta 0.7
//   st = eta*sqrt(s/(1-(sig[1] if s == 1 else s)))
//   A = 1+st**2*dt/(2*s); B = (1+st**2*(1-s)/(2*s))*dt; S = st*sqrt(-dt)
//   # Dance-SDE, eta 0.3: the same A, B with st = eta; S = eta*sqrt(-dt)
//   # CPS, eta 0.8: S = sn*sin(eta*pi/2); x0 = x-s*v; x1 = x+(1-s)*v
//   #               mu = x0*(1-sn) + x1*sqrt(sn**2-S**2)
//
// flow step 0: S = 0.6999999999999998, mean [0.7371428571428572, -1.6171428571428568]
// flow step 1: S = 0.7383713887281323, mean [0.6916552197802182, -1.588530219780217]
// flow step 4: S = 0.3877381965848974, mean [0.8656818181818186, -2.070909090909091]
// dance step 2: S = 0.0657793514480273, mean [0.9735276442307692, -2.1400841346153854]
// cps step 2:  S = 0.8321744517582592, mean [0.34809717277338975, -1.0745359239842942]

#[test]
fn flow_sde_matches_reference_values() {
    let kernel = FlowSdeConfig::new().init().unwrap();
    let cases = [
        (
            0,
            0.6999999999999998,
            [0.7371428571428572, -1.6171428571428568],
        ),
        (
            1,
            0.7383713887281323,
            [0.6916552197802182, -1.588530219780217],
        ),
        (
            4,
            0.3877381965848974,
            [0.8656818181818186, -2.070909090909091],
        ),
    ];
    for (step, std, mean) in cases {
        let (got_mean, got_std) = one_row_step(&kernel, step);
        assert_abs_diff_eq!(got_std, std, epsilon = 1e-9);
        for (got, want) in got_mean.iter().zip(mean) {
            assert_abs_diff_eq!(*got as f64, want, epsilon = 1e-5);
        }
    }
    // The figures ALGORITHMS.md quotes: s = 0.7000 and 0.7384 at steps 0 and 1.
    assert_abs_diff_eq!(one_row_step(&kernel, 0).1, 0.7000, epsilon = 5e-5);
    assert_abs_diff_eq!(one_row_step(&kernel, 1).1, 0.7384, epsilon = 5e-5);
}

#[test]
fn dance_sde_matches_reference_values() {
    let kernel = DanceSdeConfig::new().init().unwrap();
    let (mean, std) = one_row_step(&kernel, 2);
    assert_abs_diff_eq!(std, 0.0657793514480273, epsilon = 1e-9);
    assert_abs_diff_eq!(mean[0] as f64, 0.9735276442307692, epsilon = 1e-5);
    assert_abs_diff_eq!(mean[1] as f64, -2.1400841346153854, epsilon = 1e-5);
}

#[test]
fn cps_matches_reference_values() {
    let kernel = CpsConfig::new().init().unwrap();
    let (mean, std) = one_row_step(&kernel, 2);
    assert_abs_diff_eq!(std, 0.8321744517582592, epsilon = 1e-9);
    assert_abs_diff_eq!(mean[0] as f64, 0.34809717277338975, epsilon = 1e-5);
    assert_abs_diff_eq!(mean[1] as f64, -1.0745359239842942, epsilon = 1e-5);
}

#[test]
fn cps_preserves_the_flow_coefficients() {
    // For x = (1 − σ)·x0 + σ·n and the exact velocity v = n − x0, CPS must give
    // μ = (1 − σ')·x0 + sqrt(σ'² − s²)·n, and s² + (that noise weight)² = σ'².
    let kernel = CpsConfig::new().init().unwrap();
    let (sigma, sigma_next) = (0.8, 0.6);
    let c = kernel.coefficients(sigma, sigma_next).unwrap();
    let (x0, noise) = (0.3, -1.1);
    let x = (1.0 - sigma) * x0 + sigma * noise;
    let mean = c.sample_scale * x + c.velocity_scale * (noise - x0);
    let noise_weight = (sigma_next * sigma_next - c.std * c.std).sqrt();
    assert_abs_diff_eq!(
        mean,
        (1.0 - sigma_next) * x0 + noise_weight * noise,
        epsilon = 1e-12
    );
}

#[test]
fn ode_is_euler_and_deterministic() {
    let (mean, std) = one_row_step(&Ode, 3);
    let sigmas = sd3_sigmas();
    let dt = sigmas[4] - sigmas[3];
    assert_eq!(std, 0.0);
    assert_abs_diff_eq!(mean[0] as f64, 1.0 + 0.5 * dt, epsilon = 1e-6);
    assert_abs_diff_eq!(mean[1] as f64, -2.0 + 3.0 * dt, epsilon = 1e-6);
}

#[test]
fn eta_outside_unit_interval_is_an_error() {
    for eta in [-0.1, 1.0, 1.5, f64::NAN] {
        assert!(FlowSdeConfig::new().with_eta(eta).init().is_err(), "{eta}");
        assert!(DanceSdeConfig::new().with_eta(eta).init().is_err(), "{eta}");
        assert!(CpsConfig::new().with_eta(eta).init().is_err(), "{eta}");
    }
    let err = FlowSdeConfig::new().with_eta(1.2).init().unwrap_err();
    assert!(err.to_string().contains("eta") && err.to_string().contains("[0, 1)"));
    assert!(FlowSdeConfig::new().with_eta(0.0).init().is_ok());
}

#[test]
fn sigmas_out_of_order_or_range_are_errors() {
    let kernel = FlowSdeConfig::new().init().unwrap();
    assert!(kernel.coefficients(0.5, 0.6).is_err(), "σ' > σ");
    assert!(kernel.coefficients(0.5, 0.5).is_err(), "dt = 0");
    assert!(kernel.coefficients(1.2, 0.5).is_err(), "σ > 1");
    assert!(kernel.coefficients(0.5, -0.1).is_err(), "σ' < 0");
    let device = Device::default();
    let x = matrix(&[1.0, 2.0, 3.0, 4.0], 2, &device);
    let err = kernel
        .transition(x.clone(), x.clone(), &[0.5], &[0.4])
        .unwrap_err();
    assert!(matches!(err, crate::Error::ShapeMismatch { .. }), "{err}");
    let wrong_velocity = matrix(&[1.0, 2.0, 3.0], 1, &device);
    assert!(
        kernel
            .transition(x, wrong_velocity, &[0.5; 2], &[0.4; 2])
            .is_err()
    );
}

#[test]
fn kernel_math_is_f32_for_bf16_input() {
    let device = Device::default();
    if !device.supports_dtype(FloatDType::BF16) {
        return;
    }
    let kernel = FlowSdeConfig::new().init().unwrap();
    let x = matrix(&[1.0, -2.0], 1, &device).cast(FloatDType::BF16);
    let v = matrix(&[0.5, 3.0], 1, &device).cast(FloatDType::BF16);
    let sigmas = sd3_sigmas();
    let transition = kernel.transition(x, v, &[sigmas[1]], &[sigmas[2]]).unwrap();
    assert_eq!(transition.mean.dtype(), FloatDType::F32.into());
    let mean = host_values(transition.mean).unwrap();
    assert_abs_diff_eq!(mean[0] as f64, 0.6916552197802182, epsilon = 1e-5);
}

#[test]
fn gaussian_log_prob_matches_the_closed_form() {
    let device = Device::default();
    let mean = matrix(&[0.0, 1.0, 2.0, 3.0], 2, &device);
    let x = matrix(&[0.5, 1.0, 1.0, 3.0], 2, &device);
    let std = Tensor::<1>::from_floats([0.5, 2.0], &device);
    let got = host_values(gaussian_log_prob(x, mean, std).unwrap()).unwrap();
    let half_ln_two_pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    // Row 0: mean_N[(x − μ)²] = (0.25 + 0)/2; row 1: (1 + 0)/2.
    let want = [
        -(0.125 / (2.0 * 0.25)) - 0.5f64.ln() - half_ln_two_pi,
        -(0.5 / (2.0 * 4.0)) - 2.0f64.ln() - half_ln_two_pi,
    ];
    for (g, w) in got.iter().zip(want) {
        assert_abs_diff_eq!(*g as f64, w, epsilon = 1e-6);
    }
}

#[test]
fn sampling_and_scoring_agree() {
    let device = Device::default();
    let kernel = FlowSdeConfig::new().init().unwrap();
    let sigmas = sd3_sigmas();
    let x = matrix(&[0.1, -0.4, 0.9, 0.3, 0.2, -0.7], 2, &device);
    let v = matrix(&[1.0, 0.5, -0.5, 0.0, 2.0, -1.0], 2, &device);
    let step = kernel
        .transition(x, v, &[sigmas[1]; 2], &[sigmas[2]; 2])
        .unwrap();
    let noise = matrix(&[1.0, -1.0, 0.5, 0.0, 2.0, -2.0], 2, &device);
    let next = step.sample(noise).unwrap();
    let log_prob = host_values(step.log_prob(next).unwrap()).unwrap();
    // x' − μ = s·ε, so mean_N[−ε²/2] − ln s − ½ln2π.
    let s = step.coefficients[0].std;
    let half_ln_two_pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let want = [(1.0 + 1.0 + 0.25) / 3.0, (0.0 + 4.0 + 4.0) / 3.0]
        .map(|mean_sq: f64| -mean_sq / 2.0 - s.ln() - half_ln_two_pi);
    for (g, w) in log_prob.iter().zip(want) {
        assert_abs_diff_eq!(*g as f64, w, epsilon = 1e-5);
    }
}

#[test]
fn ode_step_has_no_log_prob() {
    let device = Device::default();
    let x = matrix(&[1.0, 2.0], 1, &device);
    let step = Ode
        .transition(x.clone(), x.clone(), &[0.5], &[0.4])
        .unwrap();
    let err = step.log_prob(x).unwrap_err();
    assert!(err.to_string().contains("deterministic"), "{err}");
}

#[test]
fn gaussian_kl_is_symmetric_and_zero_on_equal_means() {
    let device = Device::default();
    let p = matrix(&[0.0, 1.0, 2.0, 3.0], 2, &device);
    let q = matrix(&[0.5, 1.0, 1.0, 3.5], 2, &device);
    let std = Tensor::<1>::from_floats([0.5, 2.0], &device);
    let pq = host_values(gaussian_kl(p.clone(), q.clone(), std.clone()).unwrap()).unwrap();
    let qp = host_values(gaussian_kl(q, p.clone(), std.clone()).unwrap()).unwrap();
    let pp = host_values(gaussian_kl(p.clone(), p, std).unwrap()).unwrap();
    assert_eq!(pq, qp);
    assert_eq!(pp, vec![0.0, 0.0]);
    assert_abs_diff_eq!(pq[0] as f64, 0.125 / (2.0 * 0.25), epsilon = 1e-7);
    assert_abs_diff_eq!(pq[1] as f64, 0.625 / (2.0 * 4.0), epsilon = 1e-7);
}

#[test]
fn kernel_config_round_trips_and_builds_each_kernel() {
    let configs = [
        KernelConfig::FlowSde(FlowSdeConfig::new()),
        KernelConfig::DanceSde(DanceSdeConfig::new()),
        KernelConfig::Cps(CpsConfig::new()),
        KernelConfig::Ode,
    ];
    let names: Vec<&str> = configs.iter().map(|c| c.init().unwrap().name()).collect();
    assert_eq!(names, ["flow-sde", "dance-sde", "cps", "ode"]);
    for config in configs {
        let json = burn::config::config_to_json(&config);
        let back: KernelConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }
}

#[test]
fn stochastic_log_prob_scores_only_the_stochastic_rows_of_a_mixed_batch() {
    // Rows 0 and 2 take CPS middle steps, rows 1 and 3 its last step (σ' = 0, s = 0).
    let device = Device::default();
    let kernel = CpsConfig::new().init().unwrap();
    let (sigma, sigma_next) = ([0.8, 0.25, 0.5, 0.25], [0.6, 0.0, 0.25, 0.0]);
    let x = [0.1, -0.4, 0.9, 0.3, 0.2, -0.7, 1.5, -1.0];
    let v = [1.0, 0.5, -0.5, 0.0, 2.0, -1.0, 0.3, 0.7];
    let next_values = [0.4, -0.2, 0.0, 0.0, -0.3, 0.6, 0.0, 0.0];
    let next = matrix(&next_values, 4, &device);
    let step = kernel
        .transition(
            matrix(&x, 4, &device),
            matrix(&v, 4, &device),
            &sigma,
            &sigma_next,
        )
        .unwrap();
    assert_eq!(step.stochastic_rows(), vec![0, 2]);
    let err = step.log_prob(next.clone()).unwrap_err();
    assert!(err.to_string().contains("std of row 1"), "{err}");

    let (rows, log_prob) = step.stochastic_log_prob(next).unwrap();
    assert_eq!(rows, vec![0, 2]);
    let log_prob = host_values(log_prob).unwrap();
    assert_eq!(log_prob.len(), 2);
    // The Gaussian formula of ALGORITHMS.md §3 in f64, from the host coefficients:
    // log π = mean_N[−(x' − μ)²/(2s²)] − ln s − ½·ln 2π with μ = a·x + b·v.
    for (k, &row) in rows.iter().enumerate() {
        let c = step.coefficients[row];
        let s = c.std;
        let mean_sq = (0..2)
            .map(|j| {
                let i = 2 * row + j;
                let mu = c.sample_scale * f64::from(x[i]) + c.velocity_scale * f64::from(v[i]);
                (f64::from(next_values[i]) - mu).powi(2)
            })
            .sum::<f64>()
            / 2.0;
        let want = -mean_sq / (2.0 * s * s) - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
        assert_abs_diff_eq!(log_prob[k] as f64, want, epsilon = 1e-5);
    }
}

#[test]
fn stochastic_log_prob_of_deterministic_or_malformed_steps() {
    let device = Device::default();
    let x = matrix(&[1.0, 2.0, 3.0, 4.0], 2, &device);
    let ode = Ode
        .transition(x.clone(), x.clone(), &[0.5; 2], &[0.4; 2])
        .unwrap();
    let (rows, log_prob) = ode.stochastic_log_prob(x.clone()).unwrap();
    assert!(rows.is_empty());
    assert_eq!(log_prob.dims(), [0]);
    let wrong = matrix(&[1.0, 2.0], 1, &device);
    let err = ode.stochastic_log_prob(wrong).unwrap_err();
    assert!(matches!(err, crate::Error::ShapeMismatch { .. }), "{err}");

    // A user kernel's NaN std is neither deterministic nor stochastic.
    let mut broken = FlowSdeConfig::new()
        .init()
        .unwrap()
        .transition(x.clone(), x.clone(), &[0.5; 2], &[0.4; 2])
        .unwrap();
    broken.coefficients[1].std = f64::NAN;
    for err in [
        broken.log_prob(x.clone()).unwrap_err(),
        broken.stochastic_log_prob(x).unwrap_err(),
    ] {
        assert!(err.to_string().contains("std of row 1"), "{err}");
    }
}
