//! How much of a trainer step is the trainer itself, beyond the policy's own forward and
//! backward passes. Prints a table for a small and a larger MLP policy.
//!
//! ```sh
//! cargo run --release --example trainer_overhead
//! cargo run --release --example trainer_overhead -- --help
//! ```
//!
//! The "policy work" column times exactly the passes a step needs, done by hand: T no-grad
//! forwards over the rollout's samples, then per mini-batch one forward and one backward over
//! its rows. The rest of a step — kernels, rewards, advantages, the objective, gradient
//! clipping, the optimiser and the bookkeeping — is the overhead.

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Parser;
use flow_rl::backend::Backend;
use flow_rl::models::mlp::{MlpPolicy, MlpPolicyConfig};
use flow_rl::policy::{FlowPolicy, Unconditional};
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::trainer::{Trainer, TrainerConfig};

const STEPS: usize = 10;

/// Time a trainer step against the policy's own passes, for two MLP sizes.
#[derive(Parser, Debug)]
struct Args {
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in [default:
    /// $BURN_DEVICE, else the build's default: cuda, vulkan, wgpu, tch-cuda, tch, then flex]
    #[arg(long)]
    backend: Option<Backend>,
}

fn main() -> flow_rl::Result<()> {
    let args = Args::parse();
    let device = Backend::from_flag(args.backend)?.open()?.autodiff();
    println!(
        "{:<20} {:>10} {:>12} {:>11} {:>10} {:>16}",
        "policy", "step (ms)", "policy (ms)", "AdamW (ms)", "overhead", "excluding AdamW"
    );
    for (name, hidden, depth) in [("MLP 128x3 (75k)", 128, 3), ("MLP 1024x4 (3.2M)", 1024, 4)] {
        device.seed(0);
        let policy = MlpPolicyConfig::new()
            .with_hidden(hidden)
            .with_depth(depth)
            .init(&device)?;
        let config = TrainerConfig::new(2)
            .with_group_size(16)
            .with_groups_per_rollout(16);
        let reward = RewardSet::single(HostReward::new("x", |p: &[f32]| p[0]));
        let mut trainer = Trainer::new(config.clone(), policy.clone(), &device)?;
        trainer.step(&Unconditional(16), &reward)?; // warm-up
        let started = Instant::now();
        for _ in 0..STEPS {
            trainer.step(&Unconditional(16), &reward)?;
        }
        let step_ms = started.elapsed().as_secs_f64() * 1e3 / STEPS as f64;
        let (work_ms, adamw_ms) = policy_work_ms(&policy, &config, &device);
        println!(
            "{name:<20} {step_ms:>10.2} {work_ms:>12.2} {adamw_ms:>11.2} {:>9.1}% {:>15.1}%",
            100.0 * (step_ms - work_ms) / step_ms,
            100.0 * (step_ms - work_ms - adamw_ms) / step_ms
        );
    }
    Ok(())
}

/// The policy passes of one step, timed alone: T forwards over B samples without gradient,
/// then for each mini-batch a forward and a backward over its rows. Also returns the time of
/// the step's AdamW updates alone.
fn policy_work_ms(policy: &MlpPolicy, config: &TrainerConfig, device: &Device) -> (f64, f64) {
    let samples = config.group_size * config.groups_per_rollout;
    let rows_per_batch = samples * 3 / config.minibatches_per_rollout;
    let frozen = policy.valid();
    let plain = device.clone().without_autodiff();
    let run = || {
        let x = Tensor::<2>::random([samples, 2], Distribution::Normal(0.0, 1.0), &plain);
        for _ in 0..config.schedule.steps {
            let v = frozen.velocity(
                x.clone(),
                Tensor::full([samples], 0.5, &plain),
                &Unconditional(samples),
            );
            let _ = v.into_data();
        }
        for _ in 0..config.minibatches_per_rollout {
            let x =
                Tensor::<2>::random([rows_per_batch, 2], Distribution::Normal(0.0, 1.0), device);
            let v = policy.velocity(
                x,
                Tensor::full([rows_per_batch], 0.5, device),
                &Unconditional(rows_per_batch),
            );
            let grads = GradientsParams::from_grads(v.sum().backward(), policy);
            drop(grads);
        }
    };
    run();
    let started = Instant::now();
    for _ in 0..STEPS {
        run();
    }
    let work_ms = started.elapsed().as_secs_f64() * 1e3 / STEPS as f64;

    let mut optimizer = AdamWConfig::new().init();
    let mut policy = policy.clone();
    let mut adamw = std::time::Duration::ZERO;
    for _ in 0..STEPS * config.minibatches_per_rollout {
        let x = Tensor::<2>::random([rows_per_batch, 2], Distribution::Normal(0.0, 1.0), device);
        let rows = Unconditional(rows_per_batch);
        let velocity = policy.velocity(x, Tensor::full([rows_per_batch], 0.5, device), &rows);
        let grads = GradientsParams::from_grads(velocity.sum().backward(), &policy);
        let started = Instant::now();
        policy = optimizer.step(1e-4, policy, grads);
        let _ = policy.valid().devices();
        adamw += started.elapsed();
    }
    let adamw_ms = adamw.as_secs_f64() * 1e3 / STEPS as f64;
    (work_ms, adamw_ms)
}
