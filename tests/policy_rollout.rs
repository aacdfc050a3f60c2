//! The MLP policy, flow-matching pre-training, guidance and rollouts.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use flow_rl::Rng;
use flow_rl::kernel::{FlowSdeConfig, Ode};
use flow_rl::models::mlp::MlpPolicyConfig;
use flow_rl::models::{FlowMatchingConfig, pretrain_flow_matching};
use flow_rl::policy::{ConditionBatch, FlowPolicy, Guided, Unconditional};
use flow_rl::rollout::{RolloutConfig, RolloutPlan, rollout};
use flow_rl::schedule::SigmaScheduleConfig;

mod common;
use common::toy::distance_to_ring;
use flow_rl::models::ring::ring_samples;

#[test]
fn pretraining_moves_ode_samples_onto_the_modes() {
    let device = Device::default().autodiff();
    device.seed(0);
    let policy = MlpPolicyConfig::new()
        .with_hidden(64)
        .init(&device)
        .unwrap();
    let schedule = SigmaScheduleConfig::new()
        .with_steps(20)
        .with_shift(1.0)
        .init()
        .unwrap();
    let config = RolloutConfig::new().with_group_size(256);
    let before = rollout(
        &policy,
        &Unconditional(1),
        &config,
        &RolloutPlan {
            schedule: &schedule,
            kernel: &Ode,
            sde_steps: &[],
            latent_dims: 2,
        },
        &mut Rng::seed_from(1),
    )
    .unwrap();
    let pretrain = FlowMatchingConfig::new().with_steps(1500);
    let (policy, loss) = pretrain_flow_matching(
        policy,
        &pretrain,
        |batch, rng| (ring_samples(batch, rng, &device), Unconditional(batch)),
        |_, _| {},
    )
    .unwrap();
    let after = rollout(
        &policy,
        &Unconditional(1),
        &config,
        &RolloutPlan {
            schedule: &schedule,
            kernel: &Ode,
            sde_steps: &[],
            latent_dims: 2,
        },
        &mut Rng::seed_from(1),
    )
    .unwrap();
    let (d_before, d_after) = (
        distance_to_ring(before.samples),
        distance_to_ring(after.samples),
    );
    // Untrained samples sit far from the modes (≈ 1); trained ones measured 0.32 (20 Euler
    // steps blur the 0.1-wide modes).
    assert!(d_before > 0.5, "untrained distance {d_before}");
    assert!(
        d_after < 0.4 && d_after < d_before / 2.0,
        "trained distance {d_after} (loss {loss})"
    );
    eprintln!("distance to the modes: {d_before:.3} before, {d_after:.3} after");
}

#[test]
fn rollout_records_every_sde_step_of_every_sample() {
    let device = Device::default();
    device.seed(3);
    let policy = MlpPolicyConfig::new()
        .with_hidden(16)
        .init(&device)
        .unwrap();
    let schedule = SigmaScheduleConfig::new().init().unwrap();
    let kernel = FlowSdeConfig::new().init().unwrap();
    let config = RolloutConfig::new().with_group_size(4);
    let out = rollout(
        &policy,
        &Unconditional(3),
        &config,
        &RolloutPlan {
            schedule: &schedule,
            kernel: &kernel,
            sde_steps: &[1, 3],
            latent_dims: 2,
        },
        &mut Rng::seed_from(0),
    )
    .unwrap();
    assert_eq!(out.samples.dims(), [12, 2]);
    assert_eq!(out.rows.len(), 24);
    assert_eq!(out.rows.latents.dims(), [24, 2]);
    assert_eq!(&out.rows.step[..12], &[1; 12]);
    assert_eq!(&out.rows.step[12..], &[3; 12]);
    assert_eq!(&out.rows.group[..12], &[0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    assert_eq!(out.rows.sample[13], 1);
    assert!((out.rows.std[0] - 0.7384).abs() < 1e-4);
    // Reproducible from the seed.
    let again = rollout(
        &policy,
        &Unconditional(3),
        &config,
        &RolloutPlan {
            schedule: &schedule,
            kernel: &kernel,
            sde_steps: &[1, 3],
            latent_dims: 2,
        },
        &mut Rng::seed_from(0),
    )
    .unwrap();
    let a = common::values(out.samples);
    let b = common::values(again.samples);
    assert_eq!(a, b);
}

#[test]
fn shared_initial_noise_is_shared_within_groups_only() {
    let device = Device::default();
    let policy = MlpPolicyConfig::new()
        .with_hidden(16)
        .init(&device)
        .unwrap();
    let schedule = SigmaScheduleConfig::new().with_steps(2).init().unwrap();
    let config = RolloutConfig::new()
        .with_group_size(3)
        .with_shared_initial_noise(true);
    // With only ODE steps, equal starting noise gives equal samples.
    let out = rollout(
        &policy,
        &Unconditional(2),
        &config,
        &RolloutPlan {
            schedule: &schedule,
            kernel: &Ode,
            sde_steps: &[],
            latent_dims: 2,
        },
        &mut Rng::seed_from(0),
    )
    .unwrap();
    let v = common::values(out.samples);
    assert_eq!(&v[0..2], &v[2..4]);
    assert_eq!(&v[0..2], &v[4..6]);
    assert_ne!(&v[0..2], &v[6..8]);
}

/// A conditional toy policy: v = W·[x, c].
#[derive(Module, Debug)]
struct Conditional {
    linear: Linear,
}

impl FlowPolicy for Conditional {
    type Condition = Tensor<2>;
    fn velocity(&self, latents: Tensor<2>, _sigma: Tensor<1>, condition: &Tensor<2>) -> Tensor<2> {
        self.linear
            .forward(Tensor::cat(vec![latents, condition.clone()], 1))
    }
}

#[test]
fn guidance_combines_both_branches() {
    let device = Device::default();
    let policy = Conditional {
        linear: LinearConfig::new(3, 2).init(&device),
    };
    let x = Tensor::<2>::from_floats([[0.5, -1.0], [1.0, 2.0]], &device);
    let sigma = Tensor::<1>::from_floats([0.3, 0.7], &device);
    let condition = Tensor::<2>::from_floats([[1.0], [2.0]], &device);
    let empty = Tensor::<2>::from_floats([[0.0]], &device);
    let conditional = policy.velocity(x.clone(), sigma.clone(), &condition);
    let unconditional = policy.velocity(x.clone(), sigma.clone(), &empty.pick(&[0, 0]));
    let guided = Guided::new(policy, 4.5, empty)
        .unwrap()
        .velocity(x, sigma, &condition);
    let want = unconditional.clone() + (conditional - unconditional).mul_scalar(4.5);
    let (g, w) = (common::values(guided), common::values(want));
    for (g, w) in g.iter().zip(&w) {
        assert!((g - w).abs() < 1e-5);
    }
}

/// A policy whose velocity has the wrong width.
#[derive(Module, Debug)]
struct WrongShape {
    linear: Linear,
}

impl FlowPolicy for WrongShape {
    type Condition = Unconditional;
    fn velocity(&self, latents: Tensor<2>, _sigma: Tensor<1>, _: &Unconditional) -> Tensor<2> {
        self.linear.forward(latents)
    }
}

#[test]
fn bad_rollout_inputs_are_errors() {
    let device = Device::default();
    let schedule = SigmaScheduleConfig::new().init().unwrap();
    let wrong = WrongShape {
        linear: LinearConfig::new(2, 3).init(&device),
    };
    let err = rollout(
        &wrong,
        &Unconditional(1),
        &RolloutConfig::new(),
        &RolloutPlan {
            schedule: &schedule,
            kernel: &Ode,
            sde_steps: &[],
            latent_dims: 2,
        },
        &mut Rng::seed_from(0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("policy velocity"), "{err}");
    let policy = MlpPolicyConfig::new().with_hidden(8).init(&device).unwrap();
    let cps = flow_rl::kernel::CpsConfig::new().init().unwrap();
    let err = rollout(
        &policy,
        &Unconditional(1),
        &RolloutConfig::new(),
        &RolloutPlan {
            schedule: &schedule,
            kernel: &cps,
            sde_steps: &[9],
            latent_dims: 2,
        },
        &mut Rng::seed_from(0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("s = 0"), "{err}");
    assert!(
        rollout(
            &policy,
            &Unconditional(1),
            &RolloutConfig::new(),
            &RolloutPlan {
                schedule: &schedule,
                kernel: &Ode,
                sde_steps: &[10],
                latent_dims: 2
            },
            &mut Rng::seed_from(0)
        )
        .is_err()
    );
    assert!(Guided::new(policy, 2.0, Unconditional(2)).is_err());
}

/// Each sample's noise is keyed by its global index: two workers sampling groups 0..4 and
/// 4..8 (`first_group` 0 and 4) draw exactly the samples of one worker sampling all 8, with
/// per-sample and with per-group (shared) initial noise.
#[test]
fn two_workers_with_four_groups_each_sample_what_one_worker_with_eight_does() {
    let device = Device::default();
    device.seed(0);
    let policy = MlpPolicyConfig::new()
        .with_hidden(16)
        .init(&device)
        .unwrap();
    let schedule = SigmaScheduleConfig::new().init().unwrap();
    let kernel = FlowSdeConfig::new().init().unwrap();
    let plan = RolloutPlan {
        schedule: &schedule,
        kernel: &kernel,
        sde_steps: &[1, 3],
        latent_dims: 2,
    };
    for shared in [false, true] {
        let config = RolloutConfig::new()
            .with_group_size(4)
            .with_shared_initial_noise(shared);
        let whole = rollout(
            &policy,
            &Unconditional(8),
            &config,
            &plan,
            &mut Rng::seed_from(7),
        )
        .unwrap();
        let whole_samples = common::values(whole.samples);
        let whole_next = common::values(whole.rows.next);
        for worker in 0..2 {
            let part = rollout(
                &policy,
                &Unconditional(4),
                &config.clone().with_first_group(4 * worker),
                &plan,
                &mut Rng::seed_from(7),
            )
            .unwrap();
            let samples = common::values(part.samples);
            // 16 samples of 2 values per worker; rows: 32 samples per SDE step in the whole.
            let share = &whole_samples[32 * worker..32 * (worker + 1)];
            assert_close_slices(
                &samples,
                share,
                &format!("worker {worker}, shared {shared}"),
            );
            let next = common::values(part.rows.next);
            for step in 0..2 {
                let whole_step = &whole_next[64 * step + 32 * worker..][..32];
                let part_step = &next[32 * step..][..32];
                assert_close_slices(part_step, whole_step, &format!("step {step} x'"));
            }
        }
        // And another worker's groups are other samples.
        assert_ne!(&whole_samples[..32], &whole_samples[32..64]);
    }
}

/// The same up to the last bits of a forward pass over another number of rows.
fn assert_close_slices(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "{what}: value {i}: {g} vs {w}"
        );
    }
}
