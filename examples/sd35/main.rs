//! Fine-tunes SD3.5 (medium or large, or a tiny model of the same architecture) with online
//! RL: LoRA on the MMDiT, the Flow-DPPO recipe of ALGORITHMS.md §9 by default, rewards on the
//! VAE-decoded images (JPEG size, or a reward server) or on the latents.
//!
//! ```sh
//! # a tiny MMDiT and VAE with random weights, on the CPU, in a minute:
//! cargo run --release --example sd35 -- --preset tiny --random-init --train-steps 4
//! # SD3.5-medium from its diffusers folder, scored by a UniRL PickScore server:
//! cargo run --release --features vulkan --example sd35 -- --backend vulkan \
//!     --weights stable-diffusion-3.5-medium --embeddings prompts.safetensors \
//!     --reward unirl:http://127.0.0.1:8000:pickscore
//! cargo run --release --example sd35 -- --help
//! ```
//!
//! Everything it writes is under `--out`: `metrics.jsonl` (one line per step),
//! `eval.jsonl` and `eval/step_NNNNNN.png` (the evaluation prompts' ODE samples with fixed
//! noise, every `--eval-every` steps), `rewards.png`, the adapters as a PEFT folder
//! `adapter/`, and `checkpoint.flowrl`, from which `--resume` continues exactly.
//! docs/sd35.md is the runbook.

mod eval;
mod prompts;
mod report;
mod rewards;
mod setup;
#[cfg(test)]
mod tests;
#[cfg(test)]
#[path = "../../tests/support/text_encoder_folder.rs"]
mod text_encoder_folder;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use flow_rl::backend::Backend;
use flow_rl::metrics::{JsonLinesWriter, StepMetrics};
use flow_rl::models::mmdit::{Mmdit, PromptEmbeddings};
use flow_rl::reward::RewardSet;
use flow_rl::trainer::Trainer;
use flow_rl::{Error, Result, Rng};

use crate::rewards::RewardSpec;
use crate::setup::{Precision, Preset};

/// Fine-tune SD3.5 with online RL and a trust-region objective.
#[derive(Parser, Debug, Clone)]
#[command(version)]
pub struct Args {
    /// The model size: tiny (random weights only, for tests), medium or large.
    #[arg(long, value_enum, default_value_t = Preset::Medium)]
    pub preset: Preset,
    /// The weights: an SD3.5 single file or a diffusers folder (the VAE comes from the same
    /// place unless --vae is given).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The VAE: a diffusers `vae/` folder or a single file with `first_stage_model.` keys.
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// Random weights at the preset's size (benchmarks; nothing to download).
    #[arg(long)]
    pub random_init: bool,
    /// The base weights' dtype: as stored, bf16 or f32 [default: stored; f32 with
    /// --random-init].
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// The prompt-embedding file (examples/encode_prompts.rs, or docs/sd35.md's script).
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// A prompt list (one per line, or a JSON array) to encode with the text encoders of
    /// the --weights diffusers folder, instead of --embeddings. The embeddings are cached
    /// beside the list (`LIST.L-DTYPE.embeddings.safetensors`) and reused while the list,
    /// the encoders and the length are the same.
    #[arg(long, conflicts_with = "embeddings")]
    pub prompts: Option<PathBuf>,
    /// T5 tokens per prompt when encoding --prompts (diffusers: 256; flow_grpo: 128)
    /// [default: 256]. With --embeddings, the file must have been encoded at this length.
    #[arg(long)]
    pub max_sequence_length: Option<usize>,
    /// The trust-region objective: flow-dppo, grpo-guard or ratio-clip.
    #[arg(long, default_value = "flow-dppo")]
    pub objective: String,
    /// LoRA rank (attention projections of every block).
    #[arg(long, default_value_t = 32)]
    pub lora_rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 64.0)]
    pub lora_alpha: f64,
    /// Image side in pixels [default: 512; tiny: 32].
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Denoising steps T.
    #[arg(long, default_value_t = 10)]
    pub denoising_steps: usize,
    /// Stochastic (trained) steps per rollout, drawn in the first half of the chain.
    #[arg(long, default_value_t = 3)]
    pub sde_steps: usize,
    /// η of the Flow-SDE steps.
    #[arg(long, default_value_t = 0.7)]
    pub eta: f64,
    /// Samples per prompt (G).
    #[arg(long, default_value_t = 16)]
    pub group_size: usize,
    /// Prompts (groups) per rollout.
    #[arg(long, default_value_t = 48)]
    pub prompts_per_rollout: usize,
    /// Optimiser steps per rollout.
    #[arg(long, default_value_t = 2)]
    pub minibatches: usize,
    /// AdamW learning rate (weight decay 0).
    #[arg(long, default_value_t = 3e-4)]
    pub learning_rate: f64,
    /// Rows per forward and backward pass in the updates [default: a whole mini-batch].
    #[arg(long)]
    pub micro_batch_rows: Option<usize>,
    /// Samples per MMDiT pass in the rollout [default: all].
    #[arg(long)]
    pub rollout_batch_size: Option<usize>,
    /// Images per VAE pass.
    #[arg(long, default_value_t = flow_rl::reward::DEFAULT_DECODE_CHUNK)]
    pub decode_batch_size: usize,
    /// A reward and its weight, repeatable: jpeg, jpeg-incompressibility,
    /// unirl:URL:REWARD, geneval:URL, latent:URL, and in process pickscore:PATH,
    /// clipscore:PATH, hpsv2:PATH (whole-CLIP weights) and aesthetic:PATH (the predictor's
    /// .pth, with --aesthetic-clip), each optionally `=WEIGHT` [default: jpeg].
    #[arg(long = "reward", value_name = "NAME[=WEIGHT]")]
    pub rewards: Vec<RewardSpec>,
    /// OpenAI's CLIP ViT-L/14 (transformers folder), for an aesthetic: reward.
    #[arg(long)]
    pub aesthetic_clip: Option<PathBuf>,
    /// The CLIP tokenizer folder of pickscore:, clipscore: and hpsv2: rewards [default: the
    /// reward's folder, else the --weights folder's tokenizer/].
    #[arg(long)]
    pub clip_tokenizer: Option<PathBuf>,
    /// GenEval's `evaluation_metadata.jsonl`, for a geneval: reward.
    #[arg(long)]
    pub geneval_metadata: Option<PathBuf>,
    /// Seconds a reward server may take to answer one batch.
    #[arg(long, default_value_t = 300.0)]
    pub reward_timeout: f64,
    /// Retries of a reward request that failed transiently (unreachable, timed out, 5xx).
    #[arg(long, default_value_t = 2)]
    pub reward_retries: usize,
    /// Training steps (rollouts) in all, counting those done before a --resume.
    #[arg(long, default_value_t = 100)]
    pub train_steps: usize,
    /// Evaluate, save the adapters and checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 10)]
    pub eval_every: usize,
    /// Evaluation prompts (the first of the prompt list), sampled with the ODE.
    #[arg(long, default_value_t = 8)]
    pub eval_prompts: usize,
    /// Seed of the LoRA initialisation, the rollouts and the prompt draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in [default:
    /// $BURN_DEVICE, else the build's default: cuda, vulkan, wgpu, tch-cuda, tch, then flex]
    #[arg(long)]
    pub backend: Option<Backend>,
    /// The output folder.
    #[arg(long, default_value = "out/sd35")]
    pub out: PathBuf,
    /// Continue from `<out>/checkpoint.flowrl`.
    #[arg(long)]
    pub resume: bool,
}

/// The trainer's checkpoint, under `--out`.
pub const CHECKPOINT_FILE: &str = "checkpoint.flowrl";
/// The per-step metrics, under `--out`.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The PEFT adapter folder, under `--out`.
pub const ADAPTER_FOLDER: &str = "adapter";

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(err) = run(Args::parse()) {
        eprintln!("sd35 failed: {err}");
        std::process::exit(1);
    }
}

/// Trains as `args` say; returns the last step's metrics (`None` when nothing was left to do).
pub fn run(args: Args) -> Result<Option<StepMetrics>> {
    setup::check_sources(&args)?;
    let checkpoint = args.out.join(CHECKPOINT_FILE);
    check_output_folder(&args, &checkpoint)?;
    let device = Backend::from_flag(args.backend)?.open()?.autodiff();
    let run = setup::Run::new(&args, &device)?;
    let rewards = rewards::reward_set(&args, &run, &device.clone().without_autodiff())?;

    let mut trainer = Trainer::new(run.trainer_config(&args)?, run.policy.clone(), &device)?;
    if args.resume {
        trainer = trainer.load_checkpoint(&checkpoint)?;
        report::truncate_logs(&args.out, trainer.steps_done())?;
    }
    // Opened after the logs are trimmed (the trim replaces the file), and written here rather
    // than by the trainer for that reason.
    let mut metrics_log = JsonLinesWriter::append(args.out.join(METRICS_FILE))?;
    println!("{}", run.describe(&args, &trainer));
    let mut last = None;
    let mut progress = report::Progress::new(&args, trainer.steps_done(), &device);
    while trainer.steps_done() < args.train_steps {
        let step = trainer.steps_done();
        let conditions = step_prompts(&run.embeddings, &args, step)?;
        let started = Instant::now();
        let metrics = trainer.step(&conditions.condition(), &rewards)?;
        metrics_log.write(&metrics)?;
        progress.step_done(&metrics, started.elapsed().as_secs_f64());
        let done = trainer.steps_done();
        if done % args.eval_every == 0 || done == args.train_steps {
            save(&args, &run, &trainer, &rewards, &checkpoint)?;
            progress.saved(done);
        }
        last = Some(metrics);
    }
    progress.finish();
    Ok(last)
}

/// Refuses to overwrite a run without `--resume`, and to resume one that is not there.
fn check_output_folder(args: &Args, checkpoint: &Path) -> Result<()> {
    match (checkpoint.exists(), args.resume) {
        (true, false) => Err(Error::io(
            checkpoint,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a run is already there: pass --resume to continue it, or choose another --out",
            ),
        )),
        (false, true) => Err(Error::io(
            checkpoint,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "--resume needs the checkpoint of an earlier run with this --out",
            ),
        )),
        _ => std::fs::create_dir_all(&args.out).map_err(|err| Error::io(&args.out, err)),
    }
}

/// The prompts of training step `step`: `prompts_per_rollout` distinct prompts (or drawn
/// with repetition from a shorter list), keyed by the seed and the step alone, so a resumed
/// run draws what the uninterrupted one would.
pub fn step_prompts(
    embeddings: &PromptEmbeddings,
    args: &Args,
    step: usize,
) -> Result<PromptEmbeddings> {
    let mut rng = Rng::seed_from(args.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let available = embeddings.len();
    let wanted = args.prompts_per_rollout;
    let indices = if available >= wanted {
        rng.distinct_below(available, wanted)
    } else {
        (0..wanted).map(|_| rng.below(available)).collect()
    };
    embeddings.select(&indices)
}

/// The evaluation grid and its scores, the PEFT adapter folder, the plot, then the
/// checkpoint: the checkpoint last, so a run killed while saving resumes from the previous
/// save and redoes these files.
fn save(
    args: &Args,
    run: &setup::Run,
    trainer: &Trainer<Mmdit>,
    rewards: &RewardSet<flow_rl::models::mmdit::MmditCondition>,
    checkpoint: &Path,
) -> Result<()> {
    eval::evaluate(args, run, trainer, rewards)?;
    trainer
        .policy()
        .save_peft_adapter(args.out.join(ADAPTER_FOLDER))?;
    report::plot_rewards(&args.out)?;
    trainer.save_checkpoint(checkpoint)
}
