//! The RL part's tests: the reward, the mechanism's statistics, the report's comparisons,
//! and the quick experiments end to end.

use burn::prelude::*;
use burn::tensor::Distribution;
use flow_rl::objective::RowStatus;
use flow_rl::reward::Reward;
use flow_rl::{Error, Rng};

use crate::checkpoint::load_base;
use crate::experiments::{ExperimentsConfig, plan, run_all};
use crate::mechanism::{Mechanism, RecordedRow};
use crate::prompt::Prompt;
use crate::report::Spread;
use crate::reward::{RewardKind, ShapesReward};
use crate::rl::{ObjectiveName, PromptSets, fine_tune};
use crate::text::TextEncoder;
use crate::world::{IMAGE_SIZE, Image};

const N: usize = 3 * IMAGE_SIZE * IMAGE_SIZE;

/// `[B, 3·32·32]` samples of scenes drawn for `prompts`, as the trainer hands them over.
fn samples_of(prompts: &[&str], device: &Device) -> Tensor<2> {
    let mut rng = Rng::seed_from(3);
    let images: Vec<Image> = prompts
        .iter()
        .map(|text| Prompt::parse(text).unwrap().sample_scene(&mut rng).render())
        .collect();
    Image::batch_to_tensor(&images, device)
        .unwrap()
        .reshape([prompts.len(), N])
}

#[test]
fn the_reward_pays_each_part_of_the_verdict_for_each_prompt() {
    let device = Device::default();
    let encoder = TextEncoder::new(0, &device).unwrap();
    let drawn = ["two red circles", "a blue square"];
    let samples = samples_of(&drawn, &device);
    // The same images judged against the prompts drawn, then against swapped ones.
    let right = encoder
        .encode(&drawn.map(String::from))
        .unwrap()
        .condition();
    let swapped = encoder
        .encode(&["a blue square".into(), "two red circles".into()])
        .unwrap()
        .condition();
    let score = |kind, conditions| ShapesReward::new(kind).score(&samples, conditions).unwrap();
    for kind in [RewardKind::Accuracy, RewardKind::Count, RewardKind::Colour] {
        assert_eq!(score(kind, &right), vec![1.0, 1.0], "{kind:?}");
        let wrong = score(kind, &swapped);
        assert!(
            wrong.iter().all(|&value| value < 1.0),
            "{kind:?}: {wrong:?}"
        );
    }
    assert_eq!(score(RewardKind::Accuracy, &swapped), vec![0.0, 0.0]);
}

#[test]
fn the_reward_rejects_samples_of_another_size_and_conditions_without_prompts() {
    let device = Device::default();
    let encoder = TextEncoder::new(0, &device).unwrap();
    let conditions = encoder
        .encode(&["a red circle".into()])
        .unwrap()
        .condition();
    let reward = ShapesReward::new(RewardKind::Count);
    let narrow = Tensor::<2>::zeros([1, N - 1], &device);
    assert!(matches!(
        reward.score(&narrow, &conditions),
        Err(Error::ShapeMismatch { .. })
    ));
    let two = Tensor::<2>::zeros([2, N], &device);
    assert!(matches!(
        reward.score(&two, &conditions),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// Rows of KL `kl` whose `log r` is drawn as ALGORITHMS.md §3 says it is distributed:
/// `−KL + sqrt(2·KL/N)·z`.
fn gaussian_rows(kl: f32, count: usize, rng: &mut Rng) -> Vec<RecordedRow> {
    let std = (2.0 * kl / N as f32).sqrt();
    (0..count)
        .map(|_| RecordedRow {
            kl,
            log_ratio: -kl + std * rng.normal() as f32,
            advantage: 1.0,
            status: RowStatus::Kept,
        })
        .collect()
}

#[test]
fn the_mechanism_recovers_the_predicted_noise_of_log_ratios() {
    let mut rng = Rng::seed_from(0);
    let mut rows = gaussian_rows(1e-6, 4000, &mut rng);
    rows.extend(gaussian_rows(1e-4, 4000, &mut rng));
    // On-policy rows carry no information and must be left out.
    rows.extend((0..100).map(|_| RecordedRow {
        kl: 0.0,
        log_ratio: 0.0,
        advantage: 1.0,
        status: RowStatus::Kept,
    }));
    let mechanism = Mechanism::measure(&rows, N, 1e-5, 2);
    assert_eq!(mechanism.rows, 8000);
    assert!(
        (mechanism.mean_normalised_noise - (2.0 / std::f64::consts::PI).sqrt()).abs() < 0.02,
        "{}",
        mechanism.mean_normalised_noise
    );
    assert_eq!(mechanism.bins.len(), 2);
    for bin in &mechanism.bins {
        assert_eq!(bin.rows, 4000);
        let ratio = bin.log_ratio_std / bin.predicted_std;
        assert!((ratio - 1.0).abs() < 0.05, "{bin:?}");
    }
    // A std the prediction misses by 2× is seen as such.
    for row in &mut rows {
        row.log_ratio = -row.kl + 2.0 * (row.log_ratio + row.kl);
    }
    let doubled = Mechanism::measure(&rows, N, 1e-5, 2);
    assert!((doubled.mean_normalised_noise / mechanism.mean_normalised_noise - 2.0).abs() < 1e-3);
}

#[test]
fn constraint_errors_count_stops_below_and_passes_above_the_threshold() {
    let row = |kl: f32, log_ratio: f32, advantage: f32, status| RecordedRow {
        kl,
        log_ratio,
        advantage,
        status,
    };
    let rows = [
        // stopped, below τ: over-constraint
        row(1e-6, 0.01, 1.0, RowStatus::ClippedHigh),
        // stopped, above τ: right
        row(1e-4, -0.01, -1.0, RowStatus::ClippedLow),
        row(1e-4, 0.01, 1.0, RowStatus::Dropped),
        // kept, above τ and along A: under-constraint
        row(1e-4, 0.01, 1.0, RowStatus::Kept),
        // kept, above τ against A: above τ but not along it
        row(1e-4, -0.01, 1.0, RowStatus::Kept),
        // kept, below τ: right
        row(1e-6, 0.01, 1.0, RowStatus::Kept),
        row(1e-6, -0.01, 1.0, RowStatus::Kept),
        row(1e-6, 0.0, -1.0, RowStatus::Kept),
    ];
    let errors = Mechanism::measure(&rows, N, 1e-5, 1).errors;
    assert_eq!(errors.stopped_rows, 3);
    assert!((errors.over_constraint - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(errors.kept_rows, 5);
    assert!((errors.kept_above_threshold - 2.0 / 5.0).abs() < 1e-12);
    assert!((errors.under_constraint - 1.0 / 5.0).abs() < 1e-12);
}

#[test]
fn spreads_call_a_gap_within_the_seeds_spread_no_difference() {
    let low = Spread::of([1.0, 2.0, 3.0]);
    assert_eq!((low.mean, low.std, low.count), (2.0, 1.0, 3));
    assert_eq!(
        Spread::of([2.5, 3.0, 3.5]).compared_with(&low),
        "no difference"
    );
    assert_eq!(Spread::of([3.5, 4.0, 4.5]).compared_with(&low), "higher");
    assert_eq!(low.compared_with(&Spread::of([3.5, 4.0, 4.5])), "lower");
    assert_eq!(Spread::of([5.0]).to_string(), "5.000");
    assert_eq!(low.to_string(), "2.000 ± 1.000");
}

#[test]
fn the_plan_gives_every_seed_the_same_runs_and_ids_are_unique() {
    let runs = plan(3);
    assert_eq!(runs.len(), 30);
    let ids: std::collections::HashSet<String> = runs.iter().map(|(_, spec)| spec.id()).collect();
    assert_eq!(ids.len(), 30);
    for seed in 0..3 {
        let of_seed: Vec<_> = runs.iter().filter(|(_, spec)| spec.seed == seed).collect();
        assert_eq!(of_seed.len(), 10);
    }
}

/// A run is a function of its spec: its LoRA factors, prompts and noise come from its seed,
/// not from the device's generator, whatever drew from that before.
#[test]
fn a_fine_tuning_run_is_reproducible_from_its_seed() {
    let device = Device::default().autodiff();
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shapes/base.bpk");
    let (base, info) = load_base(&base, &device).unwrap();
    let encoder = TextEncoder::new(info.text_encoder_seed, &device).unwrap();
    let sets = PromptSets::new().unwrap();
    let config = ExperimentsConfig::quick().fine_tune.with_rollouts(1);
    let (_, spec) = plan(1)[0];
    let run = |generator_seed: u64| {
        device.seed(generator_seed);
        let _ = Tensor::<1>::random([5], Distribution::Default, &device);
        let outcome = fine_tune(&spec, &config, &base, &encoder, &sets, &device, |_| {}).unwrap();
        let step = &outcome.steps[0];
        let summary = (
            step.reward,
            step.kl_mean,
            step.drift,
            outcome.after.scores(),
        );
        (summary, outcome.rows)
    };
    let (first, again) = (run(1), run(2));
    assert!(!first.1.is_empty());
    assert_eq!(first, again);
}

/// The quick experiments from the committed base model: every file is written, and Flow-DPPO
/// makes no constraint errors by construction while its rows are real.
#[test]
fn quick_experiments_write_every_table_and_figure() {
    let out = tempfile::tempdir().unwrap();
    let config = ExperimentsConfig::quick().with_seeds(1);
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shapes/base.bpk");
    let results = run_all(&config, &base, out.path()).unwrap();
    crate::report::write(&results, out.path(), "test").unwrap();
    crate::plots::draw_all(&results, out.path()).unwrap();

    assert_eq!(results.runs.len(), 10);
    for name in [
        "summary.md",
        "results.json",
        "config.json",
        "curves.png",
        "mechanism.png",
        "multi_reward.png",
        "epochs.png",
        "grids/base_held_out.png",
        "grids/flow-dppo_sum_e1_s0_binding.png",
    ] {
        let path = out.path().join(name);
        assert!(path.metadata().is_ok_and(|meta| meta.len() > 0), "{name}");
    }
    for run in &results.runs {
        let log = std::fs::read_to_string(out.path().join(format!("runs/{}.jsonl", run.spec.id())))
            .unwrap();
        assert_eq!(log.lines().count(), config.fine_tune.rollouts);
        assert!(run.final_drift.is_finite() && run.final_drift >= 0.0);
        assert!(
            run.mechanism.rows > 0,
            "{}: no off-policy rows",
            run.spec.id()
        );
        if run.spec.objective == ObjectiveName::FlowDppo {
            assert_eq!(run.mechanism.errors.over_constraint, 0.0);
            assert_eq!(run.mechanism.errors.under_constraint, 0.0);
        }
    }
    // The mask's zero errors mean something only where it dropped rows: at 4 epochs it does.
    let dppo_four = results
        .runs
        .iter()
        .find(|run| run.spec.objective == ObjectiveName::FlowDppo && run.spec.inner_epochs == 4)
        .unwrap();
    assert!(dppo_four.mechanism.errors.stopped_rows > 0);
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    for heading in [
        "## The claims",
        "## 1. Reward and drift",
        "## 2. Mechanism",
        "## 3. Forgetting",
        "## 4. Multi-reward",
        "## 5. Multi-epoch",
    ] {
        assert!(summary.contains(heading), "{heading}");
    }
}
