//! Five steps of the crate's trainer on the MLP toy, from identical initial weights.

use burn::prelude::*;
use flow_rl::metrics::StepMetrics;
use flow_rl::models::mlp::{MlpPolicy, MlpPolicyConfig};
use flow_rl::policy::Unconditional;
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::trainer::{Trainer, TrainerConfig};

use super::common::module_values;
use super::harness::{TRAINER, assert_matches, reference_device};

const STEPS: usize = 5;
const GROUPS: usize = 4;

/// Rewards samples near the point (1, 1).
fn reward() -> RewardSet<Unconditional> {
    RewardSet::single(HostReward::new("near (1, 1)", |p: &[f32]| {
        -((p[0] - 1.0).powi(2) + (p[1] - 1.0).powi(2))
    }))
}

/// The Flow-DPPO recipe at toy size: 4 groups of 8, 3 SDE steps of 10, 2 updates per step.
fn config() -> TrainerConfig {
    TrainerConfig::new(2)
        .with_group_size(8)
        .with_groups_per_rollout(GROUPS)
        .with_learning_rate(3e-3)
        .with_weight_decay(0.0)
        .with_seed(3)
}

/// A small MLP with weights drawn on flex, so every backend starts from the same values.
fn initial_policy() -> MlpPolicy {
    let device = reference_device().autodiff();
    MlpPolicyConfig::new()
        .with_hidden(32)
        .with_depth(2)
        .init(&device)
        .unwrap()
}

/// Trains a copy of `policy` on `device` (autodiff); returns each step's metrics and the
/// final parameters.
fn train(policy: &MlpPolicy, device: &Device) -> (Vec<StepMetrics>, Vec<f64>) {
    let device = device.clone().autodiff();
    // A fork is a new leaf on the device, so the trainers on flex and on the device under test
    // do not share an autodiff graph.
    let policy = policy.clone().fork(&device);
    let mut trainer = Trainer::new(config(), policy, &device).unwrap();
    let metrics = (0..STEPS)
        .map(|_| trainer.step(&Unconditional(GROUPS), &reward()).unwrap())
        .collect();
    let parameters = module_values(trainer.policy())
        .into_iter()
        .map(f64::from)
        .collect();
    (metrics, parameters)
}

/// The per-step values compared: reward statistics, the objective's averaged metrics, the
/// first (on-policy) update's ratio and KL, and the gradient norm.
fn step_values(metrics: &StepMetrics) -> Vec<(&'static str, f64)> {
    let objective = &metrics.objective;
    let first = metrics.first_update.as_ref().expect("every step updates");
    let mask = objective.mask.expect("Flow-DPPO reports its mask");
    vec![
        ("reward mean", metrics.rewards[0].mean),
        ("reward std", metrics.rewards[0].std),
        ("loss", objective.loss),
        ("ratio mean", objective.ratio.mean),
        ("ratio min", objective.ratio.min),
        ("ratio max", objective.ratio.max),
        ("KL mean", objective.kl_mean),
        ("KL max", objective.kl_max),
        ("dropped fraction", mask.dropped_fraction),
        ("first update ratio max", first.ratio.max),
        ("first update KL max", first.kl_max),
        ("gradient norm", metrics.grad_norm),
    ]
}

/// Five trainer steps on `device` against the same five on flex.
pub fn check(device: &Device) {
    let policy = initial_policy();
    let (got, got_parameters) = train(&policy, device);
    let (want, want_parameters) = train(&policy, &reference_device());
    let check = format!("trainer on {device:?}");
    let check = check.as_str();
    for (step, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            got.sde_steps, want.sde_steps,
            "{check}: step {step}'s SDE steps"
        );
        assert_eq!(got.updates, want.updates, "{check}: step {step}'s updates");
        assert_eq!(
            got.skipped_updates, 0,
            "{check}: step {step} skipped an update"
        );
        for ((name, got_value), (_, want_value)) in
            step_values(got).into_iter().zip(step_values(want))
        {
            assert_matches(
                check,
                &format!("step {step} {name}"),
                &[got_value],
                &[want_value],
                TRAINER,
            );
        }
    }
    let moved = got_parameters
        .iter()
        .zip(module_values(&policy))
        .fold(0.0f64, |m, (after, before)| {
            m.max((after - before as f64).abs())
        });
    assert!(
        moved > 1e-3,
        "{check}: training did not move the parameters ({moved})"
    );
    assert_matches(
        check,
        "final parameters",
        &got_parameters,
        &want_parameters,
        TRAINER,
    );
}
