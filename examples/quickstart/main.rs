//! Quickstart: fine-tune a 2-D flow model with each trust-region objective and compare them.
//!
//! 1. Pre-trains a small MLP velocity model on 8 Gaussians on a circle (flow matching).
//! 2. Fine-tunes copies of it with ratio clip, GRPO-Guard and Flow-DPPO against a reward that
//!    prefers the three upper modes, with the same seed and budget.
//! 3. Prints a table (final reward, drift from the pre-trained model, clip/mask fractions,
//!    wall time) and writes `<output>/<objective>.jsonl` metrics and `<output>/quickstart.png`.
//!
//! ```sh
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --help
//! cargo run --release --features wgpu --example quickstart -- --backend wgpu
//! ```

mod plot;
mod toy;

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use clap::Parser;
use flow_rl::backend::Backend;
use flow_rl::drift::trajectory_kl;
use flow_rl::kernel::FlowSdeConfig;
use flow_rl::models::mlp::{MlpPolicy, MlpPolicyConfig};
use flow_rl::models::ring::ring_samples;
use flow_rl::models::{FlowMatchingConfig, pretrain_flow_matching};
use flow_rl::objective::ObjectiveConfig;
use flow_rl::policy::Unconditional;
use flow_rl::schedule::SigmaScheduleConfig;
use flow_rl::trainer::{Trainer, TrainerConfig};
use flow_rl::{Result, Rng};
use indicatif::{ProgressBar, ProgressStyle};

/// Fine-tune a 2-D flow model with ratio clip, GRPO-Guard and Flow-DPPO, and compare them.
#[derive(Parser, Debug)]
struct Args {
    /// Which objective(s) to run: all, ratio-clip, grpo-guard or flow-dppo.
    #[arg(long, default_value = "all")]
    objective: String,
    /// Fine-tuning steps (rollouts) per objective.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Flow-matching pre-training steps.
    #[arg(long, default_value_t = 2000)]
    pretrain_steps: usize,
    /// Seed of pre-training, rollouts and evaluation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the metrics and the plot are written.
    #[arg(long, default_value = "out/quickstart")]
    output_dir: PathBuf,
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in [default:
    /// $BURN_DEVICE, else the build's default: cuda, vulkan, wgpu, tch-cuda, tch, then flex]
    #[arg(long)]
    backend: Option<Backend>,
}

/// Drift is measured every this many steps (it costs a 512-sample rollout of two models).
const DRIFT_EVERY: usize = 10;
const EVAL_SAMPLES: usize = 1024;

/// One objective's run: per-step rewards, (step, reward, drift) checkpoints, final samples.
pub struct Run {
    pub name: String,
    pub rewards: Vec<f64>,
    pub curve: Vec<(usize, f64, f64)>,
    pub samples: Vec<[f32; 2]>,
    pub final_reward: f64,
    pub final_drift: f64,
    pub clip_or_mask: f64,
    pub seconds: f64,
}

fn main() {
    if let Err(err) = run(Args::parse()) {
        eprintln!("quickstart failed: {err}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let objectives: Vec<&str> = match args.objective.as_str() {
        "all" => vec!["ratio-clip", "grpo-guard", "flow-dppo"],
        one => vec![one],
    };
    for name in &objectives {
        ObjectiveConfig::from_name(name)?;
    }
    std::fs::create_dir_all(&args.output_dir)
        .map_err(|err| flow_rl::Error::io(&args.output_dir, err))?;
    let device = Backend::from_flag(args.backend)?.open()?.autodiff();
    device.seed(args.seed);

    let base = pretrain(&args, &device)?;
    let base_samples = toy::ode_samples(&base, EVAL_SAMPLES, args.seed)?;
    println!(
        "pre-trained model: mean reward {:.3} on {EVAL_SAMPLES} ODE samples\n",
        toy::mean_reward(&base_samples)
    );

    let mut runs = Vec::new();
    for name in objectives {
        runs.push(fine_tune(&args, name, &base, &device)?);
    }

    println!(
        "\n{:<11} {:>12} {:>14} {:>14} {:>9}",
        "objective", "final reward", "drift (KL)", "clip/mask frac", "time (s)"
    );
    for run in &runs {
        println!(
            "{:<11} {:>12.3} {:>14.4} {:>14.4} {:>9.1}",
            run.name, run.final_reward, run.final_drift, run.clip_or_mask, run.seconds
        );
    }
    println!(
        "\nfinal reward: mean over {EVAL_SAMPLES} ODE samples. drift: exact per-step KL to the \
         pre-trained model (mean-reduced), summed over the 10 SDE steps, averaged over 512 samples."
    );
    let png = args.output_dir.join("quickstart.png");
    plot::draw(&png, &runs, &base_samples)
        .map_err(|err| flow_rl::Error::io(&png, std::io::Error::other(err.to_string())))?;
    println!(
        "wrote {} and the metrics in {}/*.jsonl",
        png.display(),
        args.output_dir.display()
    );
    Ok(())
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>11} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_owned());
    bar
}

fn pretrain(args: &Args, device: &Device) -> Result<MlpPolicy> {
    let bar = progress(args.pretrain_steps, "pre-train");
    let policy = MlpPolicyConfig::new().init(device)?;
    let config = FlowMatchingConfig::new()
        .with_steps(args.pretrain_steps)
        .with_seed(args.seed);
    let (policy, loss) = pretrain_flow_matching(
        policy,
        &config,
        |batch, rng| (ring_samples(batch, rng, device), Unconditional(batch)),
        |step, loss| {
            bar.inc(1);
            if step % 50 == 0 {
                bar.set_message(format!("loss {loss:.3}"));
            }
        },
    )?;
    bar.finish_with_message(format!("loss {loss:.3}"));
    Ok(policy)
}

fn fine_tune(args: &Args, name: &str, base: &MlpPolicy, device: &Device) -> Result<Run> {
    let metrics_path = args.output_dir.join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&metrics_path);
    let config = TrainerConfig::new(2)
        .with_group_size(16)
        .with_groups_per_rollout(4)
        .with_objective(ObjectiveConfig::from_name(name)?)
        .with_learning_rate(5e-4)
        .with_weight_decay(0.0)
        .with_seed(args.seed)
        .with_metrics_path(Some(metrics_path.display().to_string()));
    let schedule = SigmaScheduleConfig::new().init()?;
    let kernel = FlowSdeConfig::new().init()?;
    let drift = |policy: &MlpPolicy| {
        trajectory_kl(
            policy,
            base,
            &Unconditional(512),
            &schedule,
            &kernel,
            2,
            &mut Rng::seed_from(args.seed + 1),
        )
    };
    let mut trainer = Trainer::new(config, base.clone(), device)?;
    let bar = progress(args.steps, name);
    let started = Instant::now();
    let (mut rewards, mut curve, mut fractions) = (Vec::new(), vec![(0, 0.0, 0.0)], Vec::new());
    for step in 1..=args.steps {
        let metrics = trainer.step(&Unconditional(4), &toy::upper_modes())?;
        rewards.push(metrics.rewards[0].mean);
        let objective = &metrics.objective;
        fractions.push(match (objective.clip, objective.mask) {
            (Some(clip), _) => clip.fraction,
            (_, Some(mask)) => mask.dropped_fraction,
            _ => 0.0,
        });
        if step % DRIFT_EVERY == 0 || step == args.steps {
            curve.push((step, metrics.rewards[0].mean, drift(trainer.policy())?));
        }
        bar.inc(1);
        bar.set_message(format!("reward {:.3}", metrics.rewards[0].mean));
    }
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    curve[0].1 = rewards.first().copied().unwrap_or_default();
    let policy = trainer.into_policy();
    let samples = toy::ode_samples(&policy, EVAL_SAMPLES, args.seed)?;
    Ok(Run {
        name: name.to_owned(),
        final_reward: toy::mean_reward(&samples),
        final_drift: curve.last().map(|c| c.2).unwrap_or_default(),
        clip_or_mask: fractions.iter().sum::<f64>() / fractions.len().max(1) as f64,
        rewards,
        curve,
        samples,
        seconds,
    })
}
