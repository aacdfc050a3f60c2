//! One full trainer step of an SD3.5-like MMDiT with LoRA, with rollout chunks and
//! micro-batches, split into rollout, reward and update time, against the policy's own
//! passes timed alone: what the trainer adds beyond the model is its overhead.
//!
//! ```sh
//! cargo run --release --example mmdit_trainer_step
//! cargo run --release --example mmdit_trainer_step -- --depth 6 --heads 6 --resolution 256 --micro-batch-rows 2 --rollout-batch-size 4
//! cargo run --release --example mmdit_trainer_step -- --help
//! ```
//!
//! The "policy passes" time runs exactly the passes a step makes, by hand: T no-grad forwards
//! over every rollout chunk, then one forward and backward per micro-batch. The rest of a
//! step (kernels, rewards, advantages, the objective, accumulation, clipping, AdamW and the
//! bookkeeping) is the overhead.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Parser;
use flow_rl::backend::Backend;
use flow_rl::models::mmdit::{Mmdit, MmditCondition, MmditConfig, MmditLoraConfig};
use flow_rl::policy::FlowPolicy;
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::schedule::SdeStepSelection;
use flow_rl::trainer::{Trainer, TrainerConfig};

/// Time a trainer step of an SD3.5-like MMDiT with LoRA against its policy passes.
#[derive(Parser, Debug)]
struct Args {
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in [default:
    /// $BURN_DEVICE, else the build's default: cuda, vulkan, wgpu, tch-cuda, tch, then flex]
    #[arg(long)]
    backend: Option<Backend>,
    /// Blocks (SD3.5-medium-like: qk-norm, dual attention in the first half).
    #[arg(long, default_value_t = 6)]
    depth: usize,
    /// Heads of 64 channels.
    #[arg(long, default_value_t = 6)]
    heads: usize,
    /// Image side in pixels; the latent is an eighth of it.
    #[arg(long, default_value_t = 256)]
    resolution: usize,
    /// Context tokens per prompt.
    #[arg(long, default_value_t = 333)]
    context_tokens: usize,
    /// Prompts (groups) per rollout.
    #[arg(long, default_value_t = 2)]
    groups: usize,
    /// Samples per prompt.
    #[arg(long, default_value_t = 2)]
    group_size: usize,
    /// Denoising steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Trained (SDE) steps per rollout.
    #[arg(long, default_value_t = 2)]
    sde_steps: usize,
    /// Rows per forward and backward pass in the updates.
    #[arg(long, default_value_t = 2)]
    micro_batch_rows: usize,
    /// Samples per forward pass in the rollout.
    #[arg(long, default_value_t = 4)]
    rollout_batch_size: usize,
    /// LoRA rank on the attention projections (alpha = 2·rank).
    #[arg(long, default_value_t = 32)]
    rank: usize,
}

fn main() -> flow_rl::Result<()> {
    let args = Args::parse();
    let device = Backend::from_flag(args.backend)?.open()?.autodiff();
    device.seed(0);
    let mmdit = MmditConfig::new(args.depth, args.heads)
        .with_qk_norm(true)
        .with_dual_attention_layers((0..args.depth / 2).collect());
    let latent = args.resolution / 8;
    let policy = MmditLoraConfig::new()
        .with_rank(args.rank)
        .with_alpha(2.0 * args.rank as f64)
        .apply(mmdit.init(&device)?.with_latent_size(latent, latent))?;
    let latent_dims = mmdit.in_channels * latent * latent;
    let config = TrainerConfig::new(latent_dims)
        .with_group_size(args.group_size)
        .with_groups_per_rollout(args.groups)
        .with_schedule(flow_rl::schedule::SigmaScheduleConfig::new().with_steps(args.steps))
        .with_sde_steps(SdeStepSelection::RandomSubset {
            window_start: 0.0,
            window_end: 0.5,
            count: args.sde_steps,
        })
        .with_minibatches_per_rollout(1)
        .with_weight_decay(0.0)
        .with_micro_batch_rows(Some(args.micro_batch_rows))
        .with_rollout_batch_size(Some(args.rollout_batch_size));
    let conditions = prompts(&mmdit, args.groups, args.context_tokens, &device);
    let reward = RewardSet::single(HostReward::new("mean", |sample: &[f32]| {
        sample.iter().sum::<f32>() / sample.len() as f32
    }));
    println!(
        "{} blocks × {} heads, {}², {} prompts × {} samples, {} steps ({} trained), \
         rollout chunks of {}, micro-batches of {} rows, device {device:?}",
        args.depth,
        args.heads,
        args.resolution,
        args.groups,
        args.group_size,
        args.steps,
        args.sde_steps,
        args.rollout_batch_size,
        args.micro_batch_rows
    );

    let mut trainer = Trainer::new(config.clone(), policy.clone(), &device)?;
    trainer.step(&conditions, &reward)?; // warm-up
    let started = Instant::now();
    let metrics = trainer.step(&conditions, &reward)?;
    let step_seconds = started.elapsed().as_secs_f64();
    let passes_seconds =
        policy_passes_seconds(&policy, &config, args.sde_steps, &conditions, &device)?;

    println!("{:<34} {:>10}", "phase", "seconds");
    for (phase, seconds) in [
        ("rollout", metrics.rollout_seconds),
        ("rewards and advantages", metrics.reward_seconds),
        ("updates", metrics.update_seconds),
        ("whole step", step_seconds),
        ("policy passes alone", passes_seconds),
    ] {
        println!("{phase:<34} {seconds:>10.2}");
    }
    println!(
        "trainer overhead beyond the policy passes: {:.1}%",
        100.0 * (step_seconds - passes_seconds) / passes_seconds
    );
    Ok(())
}

/// Random prompt embeddings: context `[P, L, 4096]` and pooled `[P, 2048]`.
fn prompts(config: &MmditConfig, count: usize, tokens: usize, device: &Device) -> MmditCondition {
    let normal = Distribution::Normal(0.0, 1.0);
    MmditCondition::new(
        Tensor::random([count, tokens, config.context_dim], normal, device),
        Tensor::random([count, config.pooled_dim], normal, device),
    )
}

/// The passes of one step done by hand: T no-grad forwards per rollout chunk, then a forward
/// and a backward per micro-batch of the `trained_steps × samples` rows.
fn policy_passes_seconds(
    policy: &Mmdit,
    config: &TrainerConfig,
    trained_steps: usize,
    conditions: &MmditCondition,
    device: &Device,
) -> flow_rl::Result<f64> {
    use flow_rl::policy::ConditionBatch;
    let samples = config.group_size * config.groups_per_rollout;
    let rows = samples * trained_steps;
    let sample_conditions = conditions.pick(
        &(0..samples)
            .map(|i| i / config.group_size)
            .collect::<Vec<_>>(),
    );
    let frozen = policy.valid();
    let plain = device.clone().without_autodiff();
    let frozen_conditions = MmditCondition::new(
        sample_conditions.context.clone().to_device(&plain),
        sample_conditions.pooled.clone().to_device(&plain),
    );
    let normal = Distribution::Normal(0.0, 1.0);
    let started = Instant::now();
    let chunk = config.rollout_batch_size.unwrap_or(samples);
    for _ in 0..config.schedule.steps {
        for start in (0..samples).step_by(chunk) {
            let indices: Vec<usize> = (start..(start + chunk).min(samples)).collect();
            let x = Tensor::<2>::random([indices.len(), config.latent_dims], normal, &plain);
            let sigma = Tensor::full([indices.len()], 0.5, &plain);
            let velocity = frozen.velocity(x, sigma, &frozen_conditions.pick(&indices));
            let _ = velocity.into_data();
        }
    }
    let micro = config.micro_batch_rows.unwrap_or(rows);
    for start in (0..rows).step_by(micro) {
        let indices: Vec<usize> = (start..(start + micro).min(rows))
            .map(|row| row % samples)
            .collect();
        let x = Tensor::<2>::random([indices.len(), config.latent_dims], normal, device);
        let sigma = Tensor::full([indices.len()], 0.5, device);
        let velocity = policy.velocity(x, sigma, &sample_conditions.pick(&indices));
        let grads =
            GradientsParams::from_grads(velocity.powf_scalar(2.0).mean().backward(), policy);
        drop(grads);
    }
    Ok(started.elapsed().as_secs_f64())
}
