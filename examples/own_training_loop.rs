//! A hand-written training loop that uses only a kernel and an objective from flow-rl.
//!
//! The policy is a single learnable velocity per step (a tiny linear model); the reward prefers
//! samples with a large first coordinate. Everything else — rollout, advantages, the update —
//! is written out here, so you can see what a trainer does and swap the objective with one flag:
//!
//! ```sh
//! cargo run --release --example own_training_loop -- --objective ratio-clip
//! cargo run --release --example own_training_loop -- --objective flow-dppo
//! ```

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Parser;
use flow_rl::prelude::*;

/// A hand-written RL loop around flow-rl's kernel and objective.
#[derive(Parser, Debug)]
struct Args {
    /// ratio-clip, grpo-guard or flow-dppo.
    #[arg(long, default_value = "flow-dppo")]
    objective: String,
    /// Optimiser steps.
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in [default:
    /// $BURN_DEVICE, else the build's default: cuda, vulkan, wgpu, tch-cuda, tch, then flex]
    #[arg(long)]
    backend: Option<Backend>,
}

#[derive(Module, Debug)]
struct Velocity {
    linear: Linear,
}

impl Velocity {
    fn forward(&self, x: Tensor<2>, sigma: Tensor<1>) -> Tensor<2> {
        self.linear
            .forward(Tensor::cat(vec![x, sigma.unsqueeze_dim(1)], 1))
    }
}

fn main() -> flow_rl::Result<()> {
    let args = Args::parse();
    let device = Backend::from_flag(args.backend)?.open()?.autodiff();
    device.seed(0);
    let (samples, dims, group) = (64, 4, 8);
    let schedule = SigmaScheduleConfig::new().init()?;
    let kernel = FlowSdeConfig::new().init()?;
    // The one line that changes with the flag:
    let objective = ObjectiveConfig::from_name(&args.objective)?.init()?;
    let advantage = AdvantageConfig::new();
    let mut policy = Velocity {
        linear: LinearConfig::new(dims + 1, dims).init(&device),
    };
    let mut optimizer = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init();

    for step in 0..args.steps {
        // Rollout under no-grad: SDE at step 1, ODE elsewhere; keep the trained step's rows.
        let frozen = policy.valid();
        let plain = device.clone().without_autodiff();
        let mut x = Tensor::<2>::random([samples, dims], Distribution::Normal(0.0, 1.0), &plain);
        let mut trained = None;
        for i in 0..schedule.steps() {
            let (sigma, sigma_next) = schedule.step(i)?;
            let (s, s_next) = (vec![sigma; samples], vec![sigma_next; samples]);
            let v = frozen.forward(x.clone(), Tensor::full([samples], sigma, &plain));
            if i == 1 {
                let old = kernel.transition(x.clone(), v, &s, &s_next)?;
                let noise = Tensor::random([samples, dims], Distribution::Normal(0.0, 1.0), &plain);
                let next = old.sample(noise)?;
                trained = Some((x.clone(), next.clone(), old, s, s_next));
                x = next;
            } else {
                x = Ode.transition(x, v, &s, &s_next)?.mean;
            }
        }
        // Reward: the first coordinate of the final sample.
        let rewards: Vec<f32> = x
            .into_data()
            .convert::<f32>()
            .iter::<f32>()
            .step_by(dims)
            .collect();
        let advantages = advantage.compute(&rewards, group)?;

        // Update twice on the rollout: the first replay is on-policy (r = 1, KL = 0), the
        // second sees moved parameters, which is where the objectives differ.
        let (x_t, next, old, s, s_next) = trained.expect("step 1 is stochastic");
        let x_t = x_t.to_device(&device);
        let mut metrics = None;
        for _ in 0..2 {
            let v = policy.forward(x_t.clone(), Tensor::full([samples], s[0], &device));
            let new = kernel.transition(x_t.clone(), v, &s, &s_next)?;
            let batch = RowBatch::new(
                new.mean,
                old.mean.clone().to_device(&device),
                next.clone().to_device(&device),
                new.std,
                Tensor::full([samples], s_next[0] - s[0], &device),
                Tensor::from_floats(advantages.values.as_slice(), &device),
            );
            let output = objective.loss(&batch)?;
            let grads = GradientsParams::from_grads(output.loss.backward(), &policy);
            policy = optimizer.step(1e-2, policy, grads);
            metrics = Some(output.metrics);
        }
        let metrics = metrics.expect("two updates");
        if step % 10 == 0 || step + 1 == args.steps {
            let mean = rewards.iter().sum::<f32>() / rewards.len() as f32;
            let limited = match (metrics.clip, metrics.mask) {
                (Some(clip), _) => clip.fraction,
                (_, Some(mask)) => mask.dropped_fraction,
                _ => 0.0,
            };
            println!(
                "step {step:>3}  reward {mean:+.3}  KL {:.2e}  clipped/dropped {:.0}%",
                metrics.kl_mean,
                100.0 * limited
            );
        }
    }
    Ok(())
}
