//! Make your own burn module a `FlowPolicy` and train it with flow-rl's trainer.
//!
//! ```sh
//! cargo run --release --example custom_policy
//! cargo run --release --example custom_policy -- --help
//! ```

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use clap::Parser;
use flow_rl::backend::Backend;
use flow_rl::policy::{FlowPolicy, Unconditional};
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::trainer::{Trainer, TrainerConfig};

/// Train your own burn module as a FlowPolicy with flow-rl's trainer.
#[derive(Parser, Debug)]
struct Args {
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in [default:
    /// $BURN_DEVICE, else the build's default: cuda, vulkan, wgpu, tch-cuda, tch, then flex]
    #[arg(long)]
    backend: Option<Backend>,
}

/// Any burn module: here a two-layer network that sees the latent and the noise level.
#[derive(Module, Debug)]
struct TinyVelocity {
    hidden: Linear,
    out: Linear,
}

impl TinyVelocity {
    fn new(dims: usize, width: usize, device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(dims + 1, width).init(device),
            out: LinearConfig::new(width, dims).init(device),
        }
    }
}

/// The one trait to implement: latents `[B, N]` and σ `[B]` to a velocity `[B, N]`.
impl FlowPolicy for TinyVelocity {
    type Condition = Unconditional;

    fn velocity(&self, latents: Tensor<2>, sigma: Tensor<1>, _: &Unconditional) -> Tensor<2> {
        let input = Tensor::cat(vec![latents, sigma.unsqueeze_dim(1)], 1);
        self.out.forward(gelu(self.hidden.forward(input)))
    }
}

fn main() -> flow_rl::Result<()> {
    let args = Args::parse();
    let device = Backend::from_flag(args.backend)?.open()?.autodiff();
    device.seed(0);
    let dims = 3;
    let policy = TinyVelocity::new(dims, 32, &device);
    // Reward: samples whose coordinates sum to 1.
    let reward = RewardSet::single(HostReward::new("sum-to-one", |x: &[f32]| {
        -(x.iter().sum::<f32>() - 1.0).abs()
    }));
    let config = TrainerConfig::new(dims)
        .with_group_size(8)
        .with_groups_per_rollout(4)
        .with_learning_rate(3e-3)
        .with_weight_decay(0.0);
    let mut trainer = Trainer::new(config, policy, &device)?;
    for step in 0..40 {
        let metrics = trainer.step(&Unconditional(4), &reward)?;
        if step % 10 == 0 || step == 39 {
            let mask = metrics.objective.mask.unwrap_or_default();
            println!(
                "step {step:>2}  reward {:+.3}  KL {:.2e}  dropped {:.0}%",
                metrics.rewards[0].mean,
                metrics.objective.kl_mean,
                100.0 * mask.dropped_fraction
            );
        }
    }
    Ok(())
}
