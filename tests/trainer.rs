//! The trainer end to end on the 2-D toy.

mod common;

use burn::prelude::*;
use common::toy::pretrained_mlp;
use flow_rl::Rng;
use flow_rl::drift::trajectory_kl;
use flow_rl::kernel::FlowSdeConfig;
use flow_rl::models::mlp::MlpPolicy;
use flow_rl::objective::ObjectiveConfig;
use flow_rl::policy::Unconditional;
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::schedule::SigmaScheduleConfig;
use flow_rl::trainer::{Trainer, TrainerConfig};

/// Rewards samples near the three upper modes of the ring (angles 45°, 90°, 135°).
fn upper_modes() -> RewardSet<Unconditional> {
    RewardSet::single(HostReward::new("upper-modes", |p: &[f32]| {
        (1..=3)
            .map(|m| {
                let angle = m as f32 * std::f32::consts::TAU / 8.0;
                let d2 = (p[0] - 2.0 * angle.cos()).powi(2) + (p[1] - 2.0 * angle.sin()).powi(2);
                (-d2 / 0.5).exp()
            })
            .sum()
    }))
}

fn config(objective: &str) -> TrainerConfig {
    TrainerConfig::new(2)
        .with_group_size(16)
        .with_groups_per_rollout(4)
        .with_objective(ObjectiveConfig::from_name(objective).unwrap())
        .with_learning_rate(3e-3)
        .with_weight_decay(0.0)
}

/// Fine-tunes for `steps` steps; returns the policy and the mean reward of each step.
fn fine_tune(
    base: &MlpPolicy,
    objective: &str,
    steps: usize,
    device: &Device,
) -> (MlpPolicy, Vec<f64>) {
    let mut trainer = Trainer::new(config(objective), base.clone(), device).unwrap();
    let rewards = (0..steps)
        .map(|_| {
            trainer
                .step(&Unconditional(4), &upper_modes())
                .unwrap()
                .rewards[0]
                .mean
        })
        .collect();
    (trainer.into_policy(), rewards)
}

fn drift(policy: &MlpPolicy, base: &MlpPolicy) -> f64 {
    let schedule = SigmaScheduleConfig::new().init().unwrap();
    let kernel = FlowSdeConfig::new().init().unwrap();
    trajectory_kl(
        policy,
        base,
        &Unconditional(512),
        &schedule,
        &kernel,
        2,
        &mut Rng::seed_from(7),
    )
    .unwrap()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn drift_is_zero_against_itself_and_grows_with_training() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(200, &device);
    assert_eq!(drift(&base, &base), 0.0);
    let (short, _) = fine_tune(&base, "ratio-clip", 3, &device);
    let (long, _) = fine_tune(&base, "ratio-clip", 15, &device);
    let (d_short, d_long) = (drift(&short, &base), drift(&long, &base));
    assert!(d_short > 0.0 && d_long > d_short, "{d_short} then {d_long}");
}

#[test]
fn each_objective_raises_the_reward_on_the_toy() {
    // With these seeds every objective gains roughly 0.3 in 30 steps; the margin asks for
    // two thirds of that.
    let device = Device::default().autodiff();
    let base = pretrained_mlp(800, &device);
    for name in ["ratio-clip", "grpo-guard", "flow-dppo"] {
        let (_, rewards) = fine_tune(&base, name, 30, &device);
        let (first, last) = (mean(&rewards[..5]), mean(&rewards[25..]));
        assert!(last - first > 0.2, "{name}: reward {first:.3} → {last:.3}");
    }
}

#[test]
fn replay_of_the_first_mini_batch_is_on_policy() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(200, &device);
    let mut trainer = Trainer::new(config("flow-dppo"), base, &device).unwrap();
    for _ in 0..4 {
        let metrics = trainer.step(&Unconditional(4), &upper_modes()).unwrap();
        let first = metrics.first_update.unwrap();
        assert!(
            (first.ratio.min - 1.0).abs() < 1e-5 && (first.ratio.max - 1.0).abs() < 1e-5,
            "{first:?}"
        );
        assert!(first.kl_max < 1e-5, "{first:?}");
        // The second update sees parameters that moved.
        assert_eq!(metrics.updates, 2);
        assert!(metrics.objective.kl_max > first.kl_max);
    }
}

#[test]
fn metrics_are_written_as_json_lines() {
    let device = Device::default().autodiff();
    let path = common::scratch("metrics.jsonl");
    let config = config("ratio-clip").with_metrics_path(Some(path.display().to_string()));
    let mut trainer = Trainer::new(config, pretrained_mlp(50, &device), &device).unwrap();
    for _ in 0..3 {
        trainer.step(&Unconditional(4), &upper_modes()).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["step"], 2);
    assert!(lines[0]["objective"]["clip"]["fraction"].is_number());
    assert!(lines[0]["rollout_seconds"].as_f64().unwrap() > 0.0);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bad_step_inputs_are_errors() {
    let device = Device::default().autodiff();
    // A policy whose parameters are not tracked would never learn: `fork` onto the autodiff
    // device keeps them untracked, `train()` does not.
    let plain = pretrained_mlp(10, &device).valid();
    let err = Trainer::new(config("flow-dppo"), plain.clone().fork(&device), &device)
        .err()
        .expect("untracked policy refused");
    assert!(err.to_string().contains("policy.train()"), "{err}");
    assert!(Trainer::new(config("flow-dppo"), plain.train(), &device).is_ok());
    let mut trainer =
        Trainer::new(config("flow-dppo"), pretrained_mlp(10, &device), &device).unwrap();
    let err = trainer.step(&Unconditional(3), &upper_modes()).unwrap_err();
    assert!(err.to_string().contains("groups_per_rollout"), "{err}");

    let short = RewardSet::single(ShortReward);
    let err = trainer.step(&Unconditional(4), &short).unwrap_err();
    assert!(err.to_string().contains("one per sample"), "{err}");

    let nan_at_5 = RewardSet::single(HostReward::new("nan", {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        move |_: &[f32]| {
            let call = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if call % 64 == 5 { f32::NAN } else { 1.0 }
        }
    }));
    let err = trainer.step(&Unconditional(4), &nan_at_5).unwrap_err();
    assert!(
        matches!(err, flow_rl::Error::NonFinite { index: 5, .. }),
        "{err}"
    );

    assert!(
        Trainer::new(
            config("flow-dppo"),
            pretrained_mlp(10, &device),
            &Device::default()
        )
        .is_err()
    );
    assert!(
        Trainer::new(
            config("flow-dppo").with_learning_rate(-1.0),
            pretrained_mlp(10, &device),
            &device
        )
        .is_err()
    );
    let needs_reference = config("flow-dppo").with_reference_beta(0.1);
    let mut trainer = Trainer::new(needs_reference, pretrained_mlp(10, &device), &device).unwrap();
    assert!(trainer.step(&Unconditional(4), &upper_modes()).is_err());
}

struct ShortReward;

impl flow_rl::reward::Reward<Unconditional> for ShortReward {
    fn name(&self) -> &str {
        "short"
    }
    fn score(&self, _: &Tensor<2>, _: &Unconditional) -> flow_rl::Result<Vec<f32>> {
        Ok(vec![0.0; 3])
    }
}

/// An objective whose gradient is NaN.
#[derive(Debug)]
struct NanGradient;

impl flow_rl::objective::TrustRegionObjective for NanGradient {
    fn name(&self) -> &'static str {
        "nan-gradient"
    }
    fn loss(
        &self,
        batch: &flow_rl::objective::RowBatch,
    ) -> flow_rl::Result<flow_rl::objective::ObjectiveOutput> {
        Ok(flow_rl::objective::ObjectiveOutput {
            loss: batch.new_mean.clone().sqrt().sum().mul_scalar(f32::NAN),
            metrics: Default::default(),
            rows: Default::default(),
        })
    }
}

#[test]
fn a_non_finite_gradient_skips_the_update() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(10, &device);
    let mut trainer = Trainer::new(config("flow-dppo"), base.clone(), &device)
        .unwrap()
        .with_objective(Box::new(NanGradient));
    let metrics = trainer.step(&Unconditional(4), &upper_modes()).unwrap();
    assert_eq!((metrics.updates, metrics.skipped_updates), (0, 2));
    let before = common::module_values(&base);
    let after = common::module_values(trainer.policy());
    assert_eq!(
        before, after,
        "a skipped update must not touch the parameters"
    );
}

#[test]
fn reference_kl_is_reported_with_a_reference() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(50, &device);
    let mut trainer = Trainer::new(
        config("flow-dppo").with_reference_beta(0.5),
        base.clone(),
        &device,
    )
    .unwrap()
    .with_reference(base);
    trainer.step(&Unconditional(4), &upper_modes()).unwrap();
    let metrics = trainer.step(&Unconditional(4), &upper_modes()).unwrap();
    assert!(metrics.objective.reference_kl.unwrap() > 0.0);
}

/// Asserts that two runs ended with the same parameters (up to float reassociation).
fn assert_same_parameters(a: &MlpPolicy, b: &MlpPolicy) {
    let (a, b) = (common::module_values(a), common::module_values(b));
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "parameters differ by up to {worst}");
}

#[test]
fn resuming_from_a_checkpoint_gives_the_same_run() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(50, &device);
    let config = || config("flow-dppo").with_seed(11);
    let mut straight = Trainer::new(config(), base.clone(), &device).unwrap();
    for _ in 0..4 {
        straight.step(&Unconditional(4), &upper_modes()).unwrap();
    }

    let path = common::scratch("resume.ckpt");
    let mut first = Trainer::new(config(), base.clone(), &device).unwrap();
    for _ in 0..2 {
        first.step(&Unconditional(4), &upper_modes()).unwrap();
    }
    first.save_checkpoint(&path).unwrap();
    drop(first);
    // A fresh trainer (different starting parameters, even) restored from the file.
    let fresh = pretrained_mlp(5, &device);
    let mut resumed = Trainer::new(config(), fresh, &device)
        .unwrap()
        .load_checkpoint(&path)
        .unwrap();
    assert_eq!(resumed.steps_done(), 2);
    for _ in 0..2 {
        resumed.step(&Unconditional(4), &upper_modes()).unwrap();
    }
    assert_same_parameters(straight.policy(), resumed.policy());
    let trained = common::module_values(straight.policy());
    assert_ne!(
        trained,
        common::module_values(&base),
        "training changed the parameters"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bad_checkpoints_are_errors_and_leave_the_good_one_intact() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(5, &device);
    let path = common::scratch("good.ckpt");
    let mut trainer = Trainer::new(config("flow-dppo"), base.clone(), &device).unwrap();
    trainer.step(&Unconditional(4), &upper_modes()).unwrap();
    trainer.save_checkpoint(&path).unwrap();
    let good = std::fs::read(&path).unwrap();

    let fresh = || Trainer::new(config("flow-dppo"), base.clone(), &device).unwrap();
    let err = fresh()
        .load_checkpoint(common::scratch("missing.ckpt"))
        .err()
        .unwrap();
    assert!(matches!(err, flow_rl::Error::Io { .. }), "{err}");

    let truncated = common::scratch("truncated.ckpt");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let err = fresh().load_checkpoint(&truncated).err().unwrap();
    assert!(err.to_string().contains("truncated"), "{err}");
    std::fs::remove_file(&truncated).unwrap();

    let other = Trainer::new(config("ratio-clip"), base.clone(), &device).unwrap();
    let err = other.load_checkpoint(&path).err().unwrap();
    assert!(err.to_string().contains("another configuration"), "{err}");

    // A failed save (into a missing directory) leaves no trace and no damage.
    let err = trainer
        .save_checkpoint(common::scratch("no-such-dir").join("x.ckpt"))
        .unwrap_err();
    assert!(matches!(err, flow_rl::Error::Io { .. }), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "the good checkpoint is untouched"
    );
    assert!(fresh().load_checkpoint(&path).is_ok());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_prompt_tracker_is_used_and_restored_from_checkpoints() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(50, &device);
    let tracked = || {
        config("flow-dppo").with_seed(5).with_prompt_tracker(Some(
            flow_rl::advantage::PromptStatTrackerConfig::new().with_history(3),
        ))
    };
    let prompts = ["a", "b", "a", "c"];
    let mut straight = Trainer::new(tracked(), base.clone(), &device).unwrap();
    assert!(
        straight.step(&Unconditional(4), &upper_modes()).is_err(),
        "prompts are required"
    );
    assert!(
        straight
            .step_with_prompts(&Unconditional(4), &prompts[..3], &upper_modes())
            .is_err()
    );
    for _ in 0..4 {
        straight
            .step_with_prompts(&Unconditional(4), &prompts, &upper_modes())
            .unwrap();
    }

    let path = common::scratch("tracker.ckpt");
    let mut first = Trainer::new(tracked(), base.clone(), &device).unwrap();
    for _ in 0..2 {
        first
            .step_with_prompts(&Unconditional(4), &prompts, &upper_modes())
            .unwrap();
    }
    first.save_checkpoint(&path).unwrap();
    let mut resumed = Trainer::new(tracked(), base.clone(), &device)
        .unwrap()
        .load_checkpoint(&path)
        .unwrap();
    for _ in 0..2 {
        resumed
            .step_with_prompts(&Unconditional(4), &prompts, &upper_modes())
            .unwrap();
    }
    assert_same_parameters(straight.policy(), resumed.policy());
    let b = common::module_values(resumed.policy());

    // The tracker's history changes the advantages: without it the run differs.
    let mut forgetful = Trainer::new(tracked(), base.clone(), &device)
        .unwrap()
        .load_checkpoint(&path)
        .unwrap();
    let mut untracked = Trainer::new(config("flow-dppo").with_seed(5), base, &device).unwrap();
    assert!(
        untracked
            .step_with_prompts(&Unconditional(4), &prompts, &upper_modes())
            .is_err()
    );
    forgetful
        .step_with_prompts(&Unconditional(4), &["w", "x", "y", "z"], &upper_modes())
        .unwrap();
    forgetful
        .step_with_prompts(&Unconditional(4), &["w", "x", "y", "z"], &upper_modes())
        .unwrap();
    assert_ne!(common::module_values(forgetful.policy()), b);
    std::fs::remove_file(&path).unwrap();
}
