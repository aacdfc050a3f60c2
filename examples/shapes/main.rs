//! A GenEval in miniature: a world of coloured shapes with prompts, a text encoder and a
//! programmatic scorer, for training the crate's MMDiT from scratch and fine-tuning it with
//! the trust-region objectives.
//!
//! ```sh
//! # a grid of 16 random scenes (grid.png) and their prompts (grid.txt):
//! cargo run --release --example shapes -- render --out grid.png --seed 0 --count 16
//! # the scorer's accuracy on rendered scenes, clean and mildly blurred and noisy:
//! cargo run --release --example shapes -- check-scorer --scenes 1000
//! # the counting prompts, split into training and evaluation prompts:
//! cargo run --release --example shapes -- prompts --family counting --eval-fraction 0.25
//! # pre-train the base MMDiT (checkpoint, JSON-lines loss log beside it):
//! cargo run --release --example shapes -- pretrain --out base.bpk --steps 2000
//! # its prompt accuracy on the unseen evaluation prompts, with a grid of samples:
//! cargo run --release --example shapes -- evaluate --checkpoint base.bpk --prompts eval
//! # the five experiments of the Flow-DPPO paper on the committed base model (--quick: a
//! # smoke test of a minute or two whose numbers mean nothing):
//! cargo run --release --example shapes -- experiments --out docs/results/shapes
//! cargo run --release --example shapes -- --help
//! ```
//!
//! The world (world.rs): 32×32 images of 1 to 3 objects (circle, square, triangle; red,
//! green, blue) on black. Prompts (prompt.rs): `two red circles`, `a green triangle and a
//! red square`. The text encoder (text.rs): a word tokenizer and a tiny seeded CLIP. The
//! scorer (scorer.rs): colour masks, connected components and shape classes. Pre-training
//! (pretrain.rs), the base model's file (checkpoint.rs) and evaluation by deterministic
//! sampling (evaluate.rs). RL fine-tuning (rl.rs): the crate's trainer with LoRA, the
//! scorer as rewards (reward.rs), and every row the objective saw recorded for the mechanism
//! (mechanism.rs). The experiments (experiments.rs) run every objective over seeds and write
//! tables (report.rs) and figures (plots.rs). The subcommands' bodies are in commands.rs.
//!
//! The committed base model, `examples/shapes/base.bpk` (the RL part loads it with
//! `checkpoint::load_base`), was made on this 2-core CPU in two stages:
//!
//! ```sh
//! cargo run --release --example shapes -- pretrain --out base.bpk \
//!     --steps 4000 --batch-size 32 --learning-rate 2e-3 --seed 0          # 1348 s
//! cargo run --release --example shapes -- pretrain --init base.bpk --out examples/shapes/base.bpk \
//!     --steps 4000 --batch-size 32 --learning-rate 1e-3 --final-learning-rate 1e-5 --seed 1  # 1124 s
//! ```
//!
//! 41 minutes in all (tail loss 0.163, then 0.132). It is **still a weak base**: at the
//! experiments' 10 ODE steps, prompt accuracy 0.063 on the counting training prompts (count
//! score 0.297, colour score 0.688) and 0.023 on the held-out counting prompts: colours are
//! mostly right, but the samples hold fragmented blobs more often than clean shapes.
//! docs/results/shapes/summary.md has what RL fine-tuning does from it.

mod checkpoint;
mod commands;
mod evaluate;
mod experiments;
mod mechanism;
mod plots;
mod pretrain;
#[cfg(test)]
mod pretrain_tests;
mod prompt;
mod report;
mod reward;
mod rl;
#[cfg(test)]
mod rl_tests;
mod scorer;
#[cfg(test)]
mod tests;
mod text;
mod world;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use flow_rl::Result;
use flow_rl::models::FlowMatchingConfig;

use crate::commands::{check_scorer, render, run_evaluate, run_experiments, run_pretrain};
use crate::evaluate::SamplingConfig;
use crate::experiments::ExperimentsConfig;
use crate::prompt::{PromptFamily, PromptSplit};

/// The coloured-shapes world: render it, check its scorer.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Render a grid of random scenes to a PNG, their prompts beside it (same name, .txt,
    /// one line per scene, row by row).
    Render {
        /// The PNG to write.
        #[arg(long, default_value = "grid.png")]
        out: PathBuf,
        /// The seed of the scenes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How many scenes.
        #[arg(long, default_value_t = 16)]
        count: usize,
        /// Draw each scene for a uniformly chosen prompt of this family instead of with
        /// uniformly many objects of random kinds.
        #[arg(long, value_enum)]
        family: Option<PromptFamily>,
        /// Blur and noise the images as the scorer's mild test does.
        #[arg(long)]
        corrupt: bool,
        /// Pixels per image pixel in the PNG.
        #[arg(long, default_value_t = 4)]
        scale: u32,
    },
    /// List a prompt family split into its training and evaluation prompts.
    Prompts {
        /// The family.
        #[arg(long, value_enum, default_value_t = PromptFamily::All)]
        family: PromptFamily,
        /// The fraction of the prompts held out for evaluation.
        #[arg(long, default_value_t = 0.25)]
        eval_fraction: f64,
        /// The seed of the split.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Measure the scorer's accuracy on rendered scenes whose prompts are known: clean, with
    /// a slight blur and noise (the tested condition), and with a stronger blur and noise.
    CheckScorer {
        /// Scenes per condition.
        #[arg(long, default_value_t = 1000)]
        scenes: usize,
        /// The seed of the scenes and the noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Pre-train the base MMDiT from scratch by flow matching on scenes of the training
    /// prompts (the `prompts --family all` split at the default fraction and seed), and
    /// write its checkpoint and a JSON-lines loss log (`{"step", "loss", "seconds"}`,
    /// at the checkpoint's path with extension `.jsonl`).
    Pretrain {
        /// The checkpoint to write (a burnpack).
        #[arg(long)]
        out: PathBuf,
        /// AdamW steps.
        #[arg(long, default_value_t = 3000)]
        steps: usize,
        /// Scenes per step.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// AdamW learning rate (of the first step, with `--final-learning-rate`).
        #[arg(long, default_value_t = 1e-3)]
        learning_rate: f64,
        /// Decay the learning rate along a cosine to this value at the last step (constant
        /// when not given).
        #[arg(long)]
        final_learning_rate: Option<f64>,
        /// Train this base model further instead of fresh weights.
        #[arg(long)]
        init: Option<PathBuf>,
        /// The seed of the initial weights, scenes, σ and noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Sample a checkpoint's images for prompts by the deterministic ODE from fixed noise,
    /// print the scorer's prompt accuracy and mean count and colour scores, and write a grid
    /// of the samples (one row per prompt, framed green when correct) with the prompts.
    Evaluate {
        /// The checkpoint written by `pretrain`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Which prompts of the split.
        #[arg(long, value_enum, default_value_t = PromptSet::Eval)]
        prompts: PromptSet,
        /// Evaluate only the first this many prompts of the set.
        #[arg(long)]
        limit: Option<usize>,
        /// Samples per prompt.
        #[arg(long, default_value_t = 4)]
        samples_per_prompt: usize,
        /// Euler steps of the ODE.
        #[arg(long, default_value_t = 20)]
        sampling_steps: usize,
        /// The σ schedule's shift (1: uniform in σ).
        #[arg(long, default_value_t = 1.0)]
        shift: f64,
        /// The seed of the initial noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The grid PNG to write (the prompts go beside it, `.txt`).
        #[arg(long, default_value = "samples.png")]
        grid: PathBuf,
    },
    /// Fine-tune the base model with ratio clipping, GRPO-Guard and Flow-DPPO on the
    /// counting prompts, several seeds each, and write the five experiments' tables
    /// (`summary.md`), figures, per-rollout logs and image grids into `--out`.
    Experiments {
        /// The folder to write into (created if missing).
        #[arg(long, default_value = "docs/results/shapes")]
        out: PathBuf,
        /// The base model written by `pretrain`.
        #[arg(long, default_value = "examples/shapes/base.bpk")]
        base: PathBuf,
        /// A smoke test of every code path in about a minute, with numbers that mean
        /// nothing: 2 seeds of 2 tiny rollouts.
        #[arg(long)]
        quick: bool,
        /// Seeds per arm (default: 3, or 2 with `--quick`).
        #[arg(long)]
        seeds: Option<usize>,
        /// Rollouts per run (default: 24, or 2 with `--quick`).
        #[arg(long)]
        rollouts: Option<usize>,
    },
}

/// The prompts of the split to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PromptSet {
    /// The training prompts.
    Train,
    /// The held-out prompts, never trained on.
    Eval,
}

fn main() {
    if let Err(err) = run(Args::parse()) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Render {
            out,
            seed,
            count,
            family,
            corrupt,
            scale,
        } => render(&out, seed, count, family, corrupt, scale),
        Command::Prompts {
            family,
            eval_fraction,
            seed,
        } => {
            let split = PromptSplit::new(&family.prompts(), eval_fraction, seed)?;
            for (name, prompts) in [("train", &split.train), ("eval", &split.eval)] {
                println!("{name} ({}):", prompts.len());
                for prompt in prompts {
                    println!("  {prompt}");
                }
            }
            Ok(())
        }
        Command::CheckScorer { scenes, seed } => {
            check_scorer(scenes, seed);
            Ok(())
        }
        Command::Pretrain {
            out,
            steps,
            batch_size,
            learning_rate,
            final_learning_rate,
            init,
            seed,
        } => {
            let config = FlowMatchingConfig::new()
                .with_steps(steps)
                .with_batch_size(batch_size)
                .with_learning_rate(learning_rate)
                .with_final_learning_rate(final_learning_rate)
                .with_seed(seed);
            run_pretrain(&out, &config, init.as_deref())
        }
        Command::Evaluate {
            checkpoint,
            prompts,
            limit,
            samples_per_prompt,
            sampling_steps,
            shift,
            seed,
            grid,
        } => {
            let config = SamplingConfig::new()
                .with_steps(sampling_steps)
                .with_shift(shift)
                .with_samples_per_prompt(samples_per_prompt)
                .with_seed(seed);
            run_evaluate(&checkpoint, prompts, limit, &config, &grid)
        }
        Command::Experiments {
            out,
            base,
            quick,
            seeds,
            rollouts,
        } => {
            let mut config = if quick {
                ExperimentsConfig::quick()
            } else {
                ExperimentsConfig::full()
            };
            if let Some(seeds) = seeds {
                config.seeds = seeds;
            }
            if let Some(rollouts) = rollouts {
                config.fine_tune.rollouts = rollouts;
            }
            let command = format!(
                "cargo run --release --example shapes -- {}",
                std::env::args().skip(1).collect::<Vec<_>>().join(" ")
            );
            run_experiments(&config, &base, &out, &command)
        }
    }
}
