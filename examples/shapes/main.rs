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
//! tables (report.rs) and figures (plots.rs).
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

use std::path::{Path, PathBuf};

use std::time::Instant;

use burn::prelude::*;
use clap::{Parser, Subcommand, ValueEnum};
use flow_rl::io::write_atomically;
use flow_rl::metrics::JsonLinesWriter;
use flow_rl::models::FlowMatchingConfig;
use flow_rl::{Error, Result, Rng};
use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{BaseInfo, load_base, save_base};
use crate::evaluate::{Evaluation, SamplingConfig};
use crate::experiments::{ExperimentsConfig, run_all};
use crate::pretrain::{TEXT_ENCODER_SEED, pretrain, prompt_split};
use crate::prompt::{Prompt, PromptFamily, PromptSplit};
use crate::scorer::{Corruption, Scorer, measure_accuracy};
use crate::text::TextEncoder;
use crate::world::{IMAGE_SIZE, Scene};

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
enum PromptSet {
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

/// Runs every experiment and writes the summary and figures.
fn run_experiments(
    config: &ExperimentsConfig,
    base: &Path,
    out: &Path,
    command: &str,
) -> Result<()> {
    if config.seeds == 0 || config.fine_tune.rollouts == 0 {
        return Err(Error::InvalidArgument {
            name: "--seeds / --rollouts".into(),
            value: format!("{} / {}", config.seeds, config.fine_tune.rollouts),
            expected: "both at least 1".into(),
        });
    }
    let results = run_all(config, base, out)?;
    report::write(&results, out, command)?;
    plots::draw_all(&results, out)?;
    println!(
        "{} runs in {:.0} s; wrote {}",
        results.runs.len(),
        results.seconds,
        out.join("summary.md").display()
    );
    Ok(())
}

/// Pre-trains with a progress bar and a loss log, and saves the checkpoint.
fn run_pretrain(out: &Path, config: &FlowMatchingConfig, init: Option<&Path>) -> Result<()> {
    let split = prompt_split()?;
    let device = Device::default().autodiff();
    let (initial, earlier) = match init {
        Some(path) => {
            let (model, info) = load_base(path, &device)?;
            if info.text_encoder_seed != TEXT_ENCODER_SEED {
                return Err(Error::InvalidArgument {
                    name: "--init text encoder seed".into(),
                    value: info.text_encoder_seed.to_string(),
                    expected: format!("{TEXT_ENCODER_SEED}, the seed pre-training encodes with"),
                });
            }
            (Some(model), format!("{}; then ", info.provenance))
        }
        None => (None, String::new()),
    };
    let encoder = TextEncoder::new(TEXT_ENCODER_SEED, &device)?;
    let log_path = out.with_extension("jsonl");
    write_atomically(&log_path, b"")?;
    let mut log = JsonLinesWriter::append(&log_path)?;
    let bar = ProgressBar::new(config.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("pre-train [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut log_error = None;
    let mut recent_loss = None::<f64>;
    let (model, tail_loss) = pretrain(
        config,
        &split.train,
        &encoder,
        &device,
        initial,
        |step, loss| {
            // An exponential moving average, as single-batch losses are noisy.
            let smoothed = recent_loss.map_or(loss, |average| 0.98 * average + 0.02 * loss);
            recent_loss = Some(smoothed);
            bar.inc(1);
            bar.set_message(format!("loss {smoothed:.4}"));
            let record = serde_json::json!({
                "step": step,
                "loss": loss,
                "seconds": started.elapsed().as_secs_f64(),
            });
            if let Err(err) = log.write(&record) {
                log_error.get_or_insert(err);
            }
        },
    )?;
    bar.finish();
    if let Some(err) = log_error {
        return Err(err);
    }
    let seconds = started.elapsed().as_secs_f64();
    let provenance = format!(
        "{earlier}shapes pretrain --steps {} --batch-size {} --learning-rate {}{} --seed {}; \
         {} training prompts; tail loss {tail_loss:.5}; {seconds:.0} s",
        config.steps,
        config.batch_size,
        config.learning_rate,
        config
            .final_learning_rate
            .map_or(String::new(), |rate| format!(
                " --final-learning-rate {rate}"
            )),
        config.seed,
        split.train.len()
    );
    save_base(
        &model,
        &BaseInfo {
            text_encoder_seed: TEXT_ENCODER_SEED,
            provenance,
        },
        out,
    )?;
    println!(
        "trained {} steps of {} scenes in {seconds:.0} s; loss of the last 10% of steps \
         {tail_loss:.5}; wrote {} and the loss log {}",
        config.steps,
        config.batch_size,
        out.display(),
        log_path.display()
    );
    Ok(())
}

/// Evaluates a checkpoint on a prompt set, printing the scores and writing the grid.
fn run_evaluate(
    checkpoint: &Path,
    set: PromptSet,
    limit: Option<usize>,
    config: &SamplingConfig,
    grid: &Path,
) -> Result<()> {
    let split = prompt_split()?;
    let mut prompts = match set {
        PromptSet::Train => split.train,
        PromptSet::Eval => split.eval,
    };
    if let Some(limit) = limit {
        prompts.truncate(limit.max(1));
    }
    let device = Device::default();
    let (model, info) = load_base(checkpoint, &device)?;
    let encoder = TextEncoder::new(info.text_encoder_seed, &device)?;
    let started = Instant::now();
    let evaluation = Evaluation::run(&model, &encoder, &prompts, config, &Scorer::default())?;
    evaluation.write_grid(grid, 2)?;
    println!("checkpoint: {} ({})", checkpoint.display(), info.provenance);
    println!(
        "{:?} prompts: {} × {} samples, {} ODE steps (shift {}), seed {}, {:.0} s",
        set,
        prompts.len(),
        config.samples_per_prompt,
        config.steps,
        config.shift,
        config.seed,
        started.elapsed().as_secs_f64()
    );
    println!(
        "accuracy {:.4}  count score {:.4}  colour score {:.4}",
        evaluation.accuracy(),
        evaluation.mean_count_score(),
        evaluation.mean_colour_score()
    );
    for (index, (correct, samples)) in evaluation.correct_by_object_count().iter().enumerate() {
        if *samples > 0 {
            println!("  {} object(s): {correct}/{samples} correct", index + 1);
        }
    }
    println!(
        "wrote {} and the prompts beside it ({})",
        grid.display(),
        grid.with_extension("txt").display()
    );
    Ok(())
}

/// Writes the grid PNG at `out` and the prompts at `out` with extension `.txt`.
fn render(
    out: &Path,
    seed: u64,
    count: usize,
    family: Option<PromptFamily>,
    corrupt: bool,
    scale: u32,
) -> Result<()> {
    if count == 0 || scale == 0 {
        return Err(Error::InvalidArgument {
            name: "--count / --scale".into(),
            value: format!("{count} / {scale}"),
            expected: "both at least 1".into(),
        });
    }
    let mut rng = Rng::seed_from(seed);
    let prompts = family.map(PromptFamily::prompts);
    let corruption = if corrupt {
        Corruption::MILD
    } else {
        Corruption::CLEAN
    };
    let columns = (count as f64).sqrt().ceil() as u32;
    let rows = (count as u32).div_ceil(columns);
    let (tile, gap) = (IMAGE_SIZE as u32 * scale, 2);
    let mut canvas = image::RgbImage::from_pixel(
        columns * (tile + gap) + gap,
        rows * (tile + gap) + gap,
        image::Rgb([128, 128, 128]),
    );
    let mut listing = String::new();
    for index in 0..count as u32 {
        let scene = match &prompts {
            Some(prompts) => prompts[rng.below(prompts.len())].sample_scene(&mut rng),
            None => Scene::sample(&mut rng),
        };
        let image = corruption.apply(&scene.render(), &mut rng);
        let (x, y) = (
            gap + (index % columns) * (tile + gap),
            gap + (index / columns) * (tile + gap),
        );
        image::imageops::replace(&mut canvas, &image.to_rgb8(scale), x.into(), y.into());
        listing.push_str(&format!("{}\n", Prompt::of_scene(&scene)));
    }
    let mut png = std::io::Cursor::new(Vec::new());
    canvas
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|err| Error::io(out, std::io::Error::other(err)))?;
    write_atomically(out, png.get_ref())?;
    let text_path = out.with_extension("txt");
    write_atomically(&text_path, listing.as_bytes())?;
    println!(
        "wrote {count} scenes to {} and their prompts to {}",
        out.display(),
        text_path.display()
    );
    Ok(())
}

/// Prints the scorer's accuracy, clean and mildly corrupted, with the first failures.
fn check_scorer(scenes: usize, seed: u64) {
    let scorer = Scorer::default();
    for (name, corruption) in [
        ("clean", Corruption::CLEAN),
        ("mild (tested)", Corruption::MILD),
        ("strong (for information)", Corruption::STRONG),
    ] {
        let accuracy = measure_accuracy(&scorer, scenes, seed, corruption);
        println!(
            "{name}: {}/{} correct ({:.2}%)",
            accuracy.correct,
            accuracy.scenes,
            100.0 * accuracy.fraction()
        );
        for (prompt, detections) in accuracy.failures.iter().take(5) {
            println!("  wrong on {prompt:?}: detected {detections:?}");
        }
    }
}
