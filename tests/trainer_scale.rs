//! The trainer at scale: chunked rollouts, micro-batches with gradient accumulation, a
//! user's own kernel, and the tiny LoRA MMDiT trained with both.

mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use common::toy::pretrained_mlp;
use common::workers::distance_reward;
use common::{HostBatch, module_values};
use flow_rl::Rng;
use flow_rl::kernel::{DanceSdeConfig, FlowSdeConfig, KernelConfig};
use flow_rl::metrics::StepMetrics;
use flow_rl::models::mlp::{MlpPolicy, MlpPolicyConfig};
use flow_rl::models::mmdit::{MmditCondition, MmditConfig, MmditLoraConfig};
use flow_rl::objective::{ObjectiveConfig, ObjectiveMetrics, TrustRegionObjective};
use flow_rl::policy::Unconditional;
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::rollout::{RolloutConfig, RolloutPlan, rollout};
use flow_rl::schedule::{SdeStepSelection, SigmaScheduleConfig};
use flow_rl::trainer::{Trainer, TrainerConfig};

fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

/// `|got − want| ≤ rel·|want| + 1e-12`: the absolute floor covers values that are 0 in exact
/// arithmetic (the ratio's std on-policy), which merging leaves at rounding level.
fn assert_close(got: f64, want: f64, rel: f64, what: &str) {
    let tolerance = rel * want.abs() + 1e-12;
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: {got} vs {want} (rel {rel})"
    );
}

fn assert_metrics_close(got: &ObjectiveMetrics, want: &ObjectiveMetrics, rel: f64, what: &str) {
    assert_eq!(got.rows, want.rows, "{what}: rows");
    for (name, g, w) in [
        ("loss", got.loss, want.loss),
        ("ratio mean", got.ratio.mean, want.ratio.mean),
        ("ratio std", got.ratio.std, want.ratio.std),
        ("ratio min", got.ratio.min, want.ratio.min),
        ("ratio max", got.ratio.max, want.ratio.max),
        ("approx kl", got.approx_kl, want.approx_kl),
        ("kl mean", got.kl_mean, want.kl_mean),
        ("kl max", got.kl_max, want.kl_max),
    ] {
        assert_close(g, w, rel, &format!("{what}: {name}"));
    }
    assert_eq!(got.clip.is_some(), want.clip.is_some(), "{what}: clip");
    if let (Some(g), Some(w)) = (got.clip, want.clip) {
        assert_close(
            g.fraction,
            w.fraction,
            rel,
            &format!("{what}: clip fraction"),
        );
        assert_close(
            g.high_fraction,
            w.high_fraction,
            rel,
            &format!("{what}: high"),
        );
    }
    assert_eq!(got.mask.is_some(), want.mask.is_some(), "{what}: mask");
    if let (Some(g), Some(w)) = (got.mask, want.mask) {
        for (name, g, w) in [
            ("divergence mean", g.divergence_mean, w.divergence_mean),
            ("divergence max", g.divergence_max, w.divergence_max),
            (
                "over threshold",
                g.over_threshold_fraction,
                w.over_threshold_fraction,
            ),
            ("dropped", g.dropped_fraction, w.dropped_fraction),
            (
                "dropped +",
                g.dropped_positive_fraction,
                w.dropped_positive_fraction,
            ),
            (
                "dropped -",
                g.dropped_negative_fraction,
                w.dropped_negative_fraction,
            ),
        ] {
            assert_close(g, w, rel, &format!("{what}: {name}"));
        }
    }
}

#[test]
fn chunked_rollouts_give_bit_identical_rows_and_samples() {
    let device = Device::default();
    let policy = MlpPolicyConfig::new()
        .with_hidden(16)
        .init(&device)
        .unwrap();
    let schedule = SigmaScheduleConfig::new().init().unwrap();
    let kernel = FlowSdeConfig::new().init().unwrap();
    let plan = RolloutPlan {
        schedule: &schedule,
        kernel: &kernel,
        sde_steps: &[0, 2, 4],
        latent_dims: 2,
    };
    let run = |batch_size: Option<usize>| {
        let config = RolloutConfig::new()
            .with_group_size(4)
            .with_batch_size(batch_size);
        let out = rollout(
            &policy,
            &Unconditional(3),
            &config,
            &plan,
            &mut Rng::seed_from(11),
        )
        .unwrap();
        let rows = &out.rows;
        (
            common::values(out.samples.clone()),
            common::values(rows.latents.clone()),
            common::values(rows.next.clone()),
            common::values(rows.old_mean.clone()),
            (rows.sigma.clone(), rows.std.clone(), rows.sample.clone()),
        )
    };
    let whole = run(None);
    for chunk in [1, 3, 5, 12, 100] {
        assert_eq!(run(Some(chunk)), whole, "chunks of {chunk}");
    }
    let bad = RolloutConfig::new().with_batch_size(Some(0));
    let err = rollout(
        &policy,
        &Unconditional(3),
        &bad,
        &plan,
        &mut Rng::seed_from(0),
    )
    .unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}

/// 4 groups × 8 samples × 3 trained steps = 96 rows in one mini-batch, so that one step is
/// one update from the same state whatever the micro-batch size. Adam's ε is 1 so that the
/// update is a smooth function of the gradient: at ε = 1e-8 the first Adam step is
/// `lr·sign(g)`, and an element whose row terms cancel to rounding error would flip a
/// whole step whichever way the sum is ordered.
fn one_update_config(objective: &str, micro_batch_rows: Option<usize>) -> TrainerConfig {
    TrainerConfig::new(2)
        .with_group_size(8)
        .with_groups_per_rollout(4)
        .with_minibatches_per_rollout(1)
        .with_sde_steps(SdeStepSelection::RandomSubset {
            window_start: 0.0,
            window_end: 0.5,
            count: 3,
        })
        .with_objective(ObjectiveConfig::from_name(objective).unwrap())
        .with_learning_rate(0.5)
        .with_adam_epsilon(1.0)
        .with_weight_decay(0.0)
        .with_micro_batch_rows(micro_batch_rows)
}

fn train(config: TrainerConfig, base: &MlpPolicy, steps: usize) -> (Vec<f32>, Vec<StepMetrics>) {
    let device = Device::default().autodiff();
    let mut trainer = Trainer::new(config, base.clone(), &device).unwrap();
    let metrics = (0..steps)
        .map(|_| trainer.step(&Unconditional(4), &distance_reward()).unwrap())
        .collect();
    (module_values(trainer.policy()), metrics)
}

#[test]
fn micro_batches_give_the_one_pass_update_and_metrics() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(100, &device);
    for objective in ["ratio-clip", "flow-dppo"] {
        // A clip norm far below the gradient norm: clipping is active, and clipping each
        // micro-batch instead of the sum would change the update.
        for clip in [None, Some(1e-3)] {
            let config = |rows| one_update_config(objective, rows).with_grad_clip_norm(clip);
            let (one_pass, one_pass_metrics) = train(config(None), &base, 1);
            let moved = relative_difference(&one_pass, &module_values(&base));
            assert!(
                moved > 1e-4,
                "{objective}: the update moved the policy ({moved})"
            );
            for rows in [1, 2, 5, 96, 500] {
                let what = format!("{objective}, clip {clip:?}, micro-batches of {rows}");
                let (params, metrics) = train(config(Some(rows)), &base, 1);
                let difference = relative_difference(&params, &one_pass);
                assert!(
                    difference < 1e-6,
                    "{what}: parameters differ by {difference}"
                );
                let (got, want) = (&metrics[0], &one_pass_metrics[0]);
                assert_eq!(got.updates, 1, "{what}");
                assert_close(
                    got.grad_norm,
                    want.grad_norm,
                    1e-6,
                    &format!("{what}: grad norm"),
                );
                assert_metrics_close(&got.objective, &want.objective, 1e-6, &what);
            }
        }
    }
}

#[test]
fn merged_micro_batch_metrics_equal_one_pass_metrics_off_policy() {
    let device = Device::default().autodiff();
    let host = HostBatch::random(5, 23, 16, 0.05);
    let objectives: Vec<Box<dyn TrustRegionObjective>> = ["ratio-clip", "grpo-guard", "flow-dppo"]
        .iter()
        .map(|name| ObjectiveConfig::from_name(name).unwrap().init().unwrap())
        .collect();
    for objective in &objectives {
        let whole = objective.loss(&host.to_device(&device)).unwrap().metrics;
        // Uneven parts: 10 + 7 + 5 + 1 rows.
        let mut parts = Vec::new();
        let mut start = 0;
        for len in [10, 7, 5, 1] {
            let order: Vec<usize> = (start..start + len).collect();
            let part = host.permuted(&order);
            parts.push(objective.loss(&part.to_device(&device)).unwrap().metrics);
            start += len;
        }
        let merged = ObjectiveMetrics::merge(&parts).unwrap();
        assert_metrics_close(&merged, &whole, 1e-6, objective.name());
    }
    assert!(ObjectiveMetrics::merge(&[]).is_none());
}

#[test]
fn zero_micro_batch_or_rollout_chunk_is_an_error() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(5, &device);
    for (config, name) in [
        (one_update_config("flow-dppo", Some(0)), "micro_batch_rows"),
        (
            one_update_config("flow-dppo", None).with_rollout_batch_size(Some(0)),
            "rollout_batch_size",
        ),
    ] {
        let err = Trainer::new(config, base.clone(), &device)
            .err()
            .expect("refused");
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn rollout_chunks_do_not_change_training() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(50, &device);
    let config = |chunk| {
        TrainerConfig::new(2)
            .with_group_size(4)
            .with_groups_per_rollout(4)
            .with_weight_decay(0.0)
            .with_rollout_batch_size(chunk)
    };
    let (whole, whole_metrics) = train(config(None), &base, 2);
    let (chunked, chunked_metrics) = train(config(Some(3)), &base, 2);
    assert_eq!(chunked, whole);
    for (a, b) in chunked_metrics.iter().zip(&whole_metrics) {
        assert_eq!(a.objective, b.objective);
        assert_eq!(a.rewards, b.rewards);
    }
}

#[test]
fn a_kernel_given_to_the_trainer_is_used_for_rollout_and_replay() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(50, &device);
    let config = TrainerConfig::new(2)
        .with_group_size(4)
        .with_groups_per_rollout(4)
        .with_weight_decay(0.0);
    let dance = DanceSdeConfig::new().with_eta(0.5);
    let run = |trainer: Trainer<MlpPolicy>| {
        let mut trainer = trainer;
        let metrics = trainer.step(&Unconditional(4), &distance_reward()).unwrap();
        (module_values(trainer.policy()), metrics)
    };
    let (given, given_metrics) = run(Trainer::new(config.clone(), base.clone(), &device)
        .unwrap()
        .with_kernel(Box::new(dance.init().unwrap())));
    let (configured, _) = run(Trainer::new(
        config.clone().with_kernel(KernelConfig::DanceSde(dance)),
        base.clone(),
        &device,
    )
    .unwrap());
    let (default, _) = run(Trainer::new(config, base.clone(), &device).unwrap());
    assert_eq!(
        given, configured,
        "the given kernel trains as the configured one"
    );
    assert_ne!(given, default, "and unlike the default Flow-SDE");
    let replay = given_metrics.first_update.unwrap();
    assert!(
        (replay.ratio.max - 1.0).abs() < 1e-5,
        "replay scores with the given kernel: {replay:?}"
    );
}

/// The done-when check: a Flow-DPPO step of the tiny LoRA MMDiT with micro-batches of
/// 2 rows and rollout chunks of 4 samples, against the same step in one pass.
#[test]
fn tiny_lora_mmdit_trains_with_micro_batches_and_rollout_chunks() {
    let device = Device::default().autodiff();
    device.seed(3);
    let base = MmditLoraConfig::new()
        .with_rank(4)
        .apply(MmditConfig::tiny().init(&device).unwrap())
        .unwrap();
    let normal = Distribution::Normal(0.0, 1.0);
    let conditions = MmditCondition::new(
        Tensor::<3>::random([2, 3, 64], normal, &device),
        Tensor::<2>::random([2, 32], normal, &device),
    );
    let reward = RewardSet::single(HostReward::new("mean", |sample: &[f32]| {
        sample.iter().sum::<f32>() / sample.len() as f32
    }));
    let config = |micro: Option<usize>, chunk: Option<usize>| {
        TrainerConfig::new(16 * 4 * 4)
            .with_group_size(4)
            .with_groups_per_rollout(2)
            .with_minibatches_per_rollout(1)
            .with_learning_rate(1e-3)
            .with_adam_epsilon(1.0)
            .with_weight_decay(0.0)
            .with_micro_batch_rows(micro)
            .with_rollout_batch_size(chunk)
    };
    let run = |micro, chunk| {
        let mut trainer = Trainer::new(config(micro, chunk), base.clone(), &device).unwrap();
        let metrics = trainer.step(&conditions, &reward).unwrap();
        (module_values(trainer.policy()), metrics)
    };
    let (one_pass, one_pass_metrics) = run(None, None);
    let (chunked, metrics) = run(Some(2), Some(4));
    assert_eq!(metrics.updates, 1);
    assert_eq!(metrics.skipped_updates, 0);
    assert!(relative_difference(&one_pass, &module_values(&base)) > 0.0);
    let difference = relative_difference(&chunked, &one_pass);
    assert!(difference < 1e-5, "parameters differ by {difference}");
    assert_metrics_close(
        &metrics.objective,
        &one_pass_metrics.objective,
        1e-5,
        "tiny MMDiT",
    );
}

#[test]
fn a_checkpoint_resumes_with_other_micro_batch_and_chunk_sizes() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(20, &device);
    let config = one_update_config("flow-dppo", None);
    let mut trainer = Trainer::new(config.clone(), base.clone(), &device).unwrap();
    trainer.step(&Unconditional(4), &distance_reward()).unwrap();
    let scratch = common::scratch("resume.ckpt");
    trainer.save_checkpoint(&scratch).unwrap();
    let smaller = config
        .clone()
        .with_micro_batch_rows(Some(7))
        .with_rollout_batch_size(Some(5));
    let mut resumed = Trainer::new(smaller, base.clone(), &device)
        .unwrap()
        .load_checkpoint(&scratch)
        .unwrap();
    assert_eq!(
        module_values(resumed.policy()),
        module_values(trainer.policy())
    );
    let a = resumed.step(&Unconditional(4), &distance_reward()).unwrap();
    let b = trainer.step(&Unconditional(4), &distance_reward()).unwrap();
    assert_eq!(a.sde_steps, b.sde_steps);
    let difference = relative_difference(
        &module_values(resumed.policy()),
        &module_values(trainer.policy()),
    );
    assert!(difference < 1e-6, "{difference}");
    let other = config.with_group_size(4);
    assert!(
        Trainer::new(other, base, &device)
            .unwrap()
            .load_checkpoint(&scratch)
            .is_err(),
        "another group size is another run"
    );
}

#[test]
fn a_lora_checkpoint_holds_the_adapters_alone_and_refuses_a_policy_it_does_not_cover() {
    let device = Device::default().autodiff();
    device.seed(4);
    let frozen = MmditConfig::tiny().init(&device).unwrap();
    let base_bytes: usize = module_values(&frozen).len() * 4;
    let attention = MmditLoraConfig::new()
        .with_rank(2)
        .apply(frozen.clone())
        .unwrap();
    let normal = Distribution::Normal(0.0, 1.0);
    let conditions = MmditCondition::new(
        Tensor::<3>::random([1, 3, 64], normal, &device),
        Tensor::<2>::random([1, 32], normal, &device),
    );
    let reward = RewardSet::single(HostReward::new("mean", |sample: &[f32]| {
        sample.iter().sum::<f32>() / sample.len() as f32
    }));
    let config = TrainerConfig::new(16 * 4 * 4)
        .with_group_size(2)
        .with_groups_per_rollout(1)
        .with_minibatches_per_rollout(1);
    let mut trainer = Trainer::new(config.clone(), attention.clone(), &device).unwrap();
    trainer.step(&conditions, &reward).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("lora.ckpt");
    trainer.save_checkpoint(&path).unwrap();

    // The frozen base (f32, the model's bulk) is not in the file.
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    assert!(
        size < base_bytes / 4,
        "{size} bytes for a {base_bytes}-byte base"
    );
    let resumed = Trainer::new(config.clone(), attention.clone(), &device)
        .unwrap()
        .load_checkpoint(&path)
        .unwrap();
    assert_eq!(
        module_values(resumed.policy()),
        module_values(trainer.policy())
    );

    // A policy with more trainable parameters than the checkpoint holds is refused.
    let wider = MmditLoraConfig::new()
        .with_rank(2)
        .with_targets(vec![
            flow_rl::models::mmdit::LoraTarget::Attention,
            flow_rl::models::mmdit::LoraTarget::Mlp,
        ])
        .apply(frozen)
        .unwrap();
    let Err(error) = Trainer::new(config, wider, &device)
        .unwrap()
        .load_checkpoint(&path)
    else {
        panic!("a checkpoint without the MLP adapters loaded into a policy that trains them");
    };
    assert!(
        error.to_string().contains("trainable parameters"),
        "{error}"
    );
}
