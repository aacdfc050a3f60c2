//! The paper's five claims, tested: which runs, running them, and what each writes.
//!
//! One set of runs serves several experiments:
//! - **main**: every objective with the weighted count + colour reward, 1 inner epoch, on
//!   every seed. Experiments 1 (reward and drift), 2 (mechanism) and 3 (forgetting) read it,
//!   and it is the weighted-sum arm of experiment 4;
//! - **gdpo**: the same with the rewards combined by GDPO (experiment 4);
//! - **epochs**: ratio clip and Flow-DPPO at 2 and 4 inner epochs, the same rollouts
//!   (experiment 5, whose 1-epoch arm is the main runs').
//!
//! Every run writes `runs/<id>.jsonl` (one [`StepRecord`] per rollout, as it goes) and
//! `runs/<id>.json` (its final scores and mechanism summary) under the output folder;
//! [`crate::report`] then writes the tables and plots.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::config::Config;
use burn::prelude::*;
use flow_rl::io::write_atomically;
use flow_rl::metrics::JsonLinesWriter;
use flow_rl::models::mmdit::Mmdit;
use flow_rl::objective::{FlowDppoConfig, RatioClipConfig};
use flow_rl::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::checkpoint::load_base;
use crate::mechanism::{Mechanism, RecordedRow};
use crate::pretrain::IMAGE_DIMS;
use crate::rl::{
    Combination, Evaluations, FineTuneConfig, ObjectiveName, PromptSets, RunSpec, Scores,
    StepRecord, fine_tune,
};
use crate::text::TextEncoder;

/// Bins of `log10(KL)` in the mechanism summaries.
const NOISE_BINS: usize = 8;

/// An experiment's size: the shared run settings and how many seeds.
#[derive(Config, Debug, PartialEq)]
pub struct ExperimentsConfig {
    /// The settings of every run.
    pub fine_tune: FineTuneConfig,
    /// Seeds per arm (0, 1, ..).
    #[config(default = 3)]
    pub seeds: usize,
}

impl ExperimentsConfig {
    /// The full experiment: 3 seeds of the default [`FineTuneConfig`].
    pub fn full() -> ExperimentsConfig {
        ExperimentsConfig::new(FineTuneConfig::new())
    }

    /// A smoke test of every code path in about a minute: 2 seeds of 2 rollouts of 2 small
    /// groups, with 6 sampling steps. Its numbers mean nothing.
    pub fn quick() -> ExperimentsConfig {
        ExperimentsConfig::new(
            FineTuneConfig::new()
                .with_rollouts(2)
                .with_groups_per_rollout(2)
                .with_group_size(4)
                .with_sampling_steps(6)
                .with_drift_every(1)
                .with_drift_samples(4)
                .with_eval_samples_per_prompt(1),
        )
        .with_seeds(2)
    }
}

/// Which part of the experiments a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Arm {
    /// All objectives, weighted sum, 1 epoch.
    Main,
    /// All objectives, GDPO, 1 epoch.
    Gdpo,
    /// Ratio clip and Flow-DPPO at more epochs.
    Epochs,
}

/// Every run of the experiments, seed by seed (so that an interrupted run has whole seeds).
pub fn plan(seeds: usize) -> Vec<(Arm, RunSpec)> {
    let mut runs = Vec::new();
    for seed in 0..seeds as u64 {
        for (arm, combination) in [
            (Arm::Main, Combination::WeightedSum),
            (Arm::Gdpo, Combination::Gdpo),
        ] {
            for objective in ObjectiveName::ALL {
                runs.push((
                    arm,
                    RunSpec {
                        objective,
                        combination,
                        inner_epochs: 1,
                        seed,
                    },
                ));
            }
        }
        for objective in [ObjectiveName::RatioClip, ObjectiveName::FlowDppo] {
            for inner_epochs in [2, 4] {
                runs.push((
                    Arm::Epochs,
                    RunSpec {
                        objective,
                        combination: Combination::WeightedSum,
                        inner_epochs,
                        seed,
                    },
                ));
            }
        }
    }
    runs
}

/// What one run left, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Its experiment.
    pub arm: Arm,
    /// What it ran.
    pub spec: RunSpec,
    /// Its scores after training.
    pub after: Scores,
    /// Its drift from the base model after the last rollout.
    pub final_drift: f64,
    /// The mechanism, against the objective's own threshold where it has one (ratio clip
    /// and GRPO-Guard are measured against Flow-DPPO's τ).
    pub mechanism: Mechanism,
    /// Wall time, seconds.
    pub seconds: f64,
    /// One record per rollout.
    #[serde(skip)]
    pub steps: Vec<StepRecord>,
    /// Every updated row (main runs only: the mechanism scatter).
    #[serde(skip)]
    pub rows: Vec<RecordedRow>,
}

/// The base model's evaluation and every run.
pub struct Results {
    /// The configuration.
    pub config: ExperimentsConfig,
    /// The base model's scores.
    pub base: Scores,
    /// The base model's drift-measurement provenance line.
    pub base_provenance: String,
    /// Every run, in plan order.
    pub runs: Vec<RunResult>,
    /// Wall time of everything, seconds.
    pub seconds: f64,
}

/// The KL threshold τ of the mechanism's errors: Flow-DPPO's reference value.
pub fn threshold() -> f64 {
    FlowDppoConfig::new().threshold
}

/// The ratio-clip width ε at its reference value.
pub fn clip_width() -> f64 {
    RatioClipConfig::new().epsilon_high
}

/// Runs every run of [`plan`] from the base model at `base_path`, writing into `out` as
/// it goes (module docs), and returns the results. Image grids of the base model and of
/// seed 0's main runs go to `out/grids/`.
pub fn run_all(config: &ExperimentsConfig, base_path: &Path, out: &Path) -> Result<Results> {
    let started = Instant::now();
    let runs_dir = out.join("runs");
    let grids_dir = out.join("grids");
    for dir in [&runs_dir, &grids_dir] {
        std::fs::create_dir_all(dir).map_err(|err| Error::io(dir, err))?;
    }
    let device = Device::default().autodiff();
    let (base, info) = load_base(base_path, &device)?;
    let encoder = TextEncoder::new(info.text_encoder_seed, &device)?;
    let sets = PromptSets::new()?;
    write_atomically(
        &out.join("config.json"),
        burn::config::config_to_json(config).as_bytes(),
    )?;

    let base_evaluations = Evaluations::run(&base, &encoder, &sets, &config.fine_tune)?;
    write_grids(&base_evaluations, &grids_dir, "base")?;
    let base_scores = base_evaluations.scores();
    println!("base model: {base_scores:?}");

    let plan = plan(config.seeds);
    let bar = ProgressBar::new((plan.len() * config.fine_tune.rollouts) as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut runs = Vec::with_capacity(plan.len());
    for (arm, spec) in plan {
        bar.set_prefix(spec.id());
        let run = run_one(
            arm, &spec, config, &base, &encoder, &sets, &device, &runs_dir, &grids_dir, &bar,
        )?;
        runs.push(run);
    }
    bar.finish();
    Ok(Results {
        config: config.clone(),
        base: base_scores,
        base_provenance: info.provenance,
        runs,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    arm: Arm,
    spec: &RunSpec,
    config: &ExperimentsConfig,
    base: &Mmdit,
    encoder: &TextEncoder,
    sets: &PromptSets,
    device: &Device,
    runs_dir: &Path,
    grids_dir: &Path,
    bar: &ProgressBar,
) -> Result<RunResult> {
    let id = spec.id();
    let log_path = runs_dir.join(format!("{id}.jsonl"));
    write_atomically(&log_path, b"")?;
    let mut log = JsonLinesWriter::append(&log_path)?;
    let mut log_error = None;
    let outcome = fine_tune(
        spec,
        &config.fine_tune,
        base,
        encoder,
        sets,
        device,
        |record| {
            bar.inc(1);
            bar.set_message(format!("reward {:.3}", record.reward));
            if let Err(err) = log.write(record) {
                log_error.get_or_insert(err);
            }
        },
    )?;
    if let Some(err) = log_error {
        return Err(err);
    }
    if arm == Arm::Main && spec.seed == 0 {
        write_grids(&outcome.after, grids_dir, &id)?;
    }
    let final_drift = outcome
        .steps
        .iter()
        .rev()
        .find_map(|step| step.drift)
        .expect("the last rollout measures the drift");
    let result = RunResult {
        arm,
        spec: *spec,
        after: outcome.after.scores(),
        final_drift,
        mechanism: Mechanism::measure(&outcome.rows, IMAGE_DIMS, threshold(), NOISE_BINS),
        seconds: outcome.seconds,
        steps: outcome.steps,
        rows: if arm == Arm::Main {
            outcome.rows
        } else {
            Vec::new()
        },
    };
    let summary = serde_json::to_string_pretty(&result).map_err(|err| Error::InvalidArgument {
        name: "run summary".into(),
        value: err.to_string(),
        expected: "a value with a JSON form".into(),
    })?;
    write_atomically(&runs_dir.join(format!("{id}.json")), summary.as_bytes())?;
    bar.println(format!(
        "{id}: held-out accuracy {:.3}, train accuracy {:.3}, drift {:.4}, {:.0} s",
        result.after.held_out_accuracy,
        result.after.train_accuracy,
        result.final_drift,
        result.seconds
    ));
    Ok(result)
}

/// Writes the held-out and colour-binding grids of one model as `<name>_held_out.png` and
/// `<name>_binding.png`.
fn write_grids(evaluations: &Evaluations, dir: &Path, name: &str) -> Result<()> {
    let path = |set: &str| -> PathBuf { dir.join(format!("{name}_{set}.png")) };
    evaluations.held_out.write_grid(&path("held_out"), 2)?;
    evaluations.binding.write_grid(&path("binding"), 2)
}
