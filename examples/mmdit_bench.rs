//! Throughput of the SD3-family MMDiT: forward, and forward + backward with LoRA, for a
//! configuration given on the command line, with random weights; and the estimated memory
//! of LoRA training at SD3.5 scale.
//!
//! ```sh
//! cargo run --release --example mmdit_bench -- --config tiny
//! cargo run --release --example mmdit_bench -- --config custom --depth 6 --heads 6 --resolution 256 --batch 2
//! cargo run --release --example mmdit_bench -- --config custom --depth 6 --heads 6 --resolution 256 --checkpointing
//! cargo run --release --example mmdit_bench -- --estimate   # the SD3.5 memory table
//! cargo run --release --example mmdit_bench -- --plan --preset sd35-medium --resolution 512 --gpu-memory 80
//! cargo run --release --example mmdit_bench -- --help
//! ```
//!
//! Peak memory is `flow_rl::memory::PeakMemory`'s: what the backend reports (its pool's
//! reserved bytes and bytes in use, sampled after each forward and backward) where it reports
//! one; burn's CPU backend does not, so on `flex` the process's peak resident set size (Linux
//! `VmHWM`) is printed instead, labelled as such.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{Distribution, FloatDType};
use clap::{Parser, ValueEnum};
use flow_rl::backend::Backend;
use flow_rl::memory::PeakMemory;
use flow_rl::models::mmdit::{
    LoraMemoryEstimate, LoraTarget, LoraWorkload, Mmdit, MmditConfig, MmditLoraConfig, plan_batches,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// 2 blocks, width 64 (the test model).
    Tiny,
    /// SD3-medium (24 blocks, width 1536).
    Sd3Medium,
    /// SD3.5-medium (24 blocks, width 1536, MMDiT-X in blocks 0-12).
    Sd35Medium,
    /// SD3.5-large (38 blocks, width 2432).
    Sd35Large,
    /// `--depth` blocks of `--heads` × `--head-dim`, SD3.5-medium-like (qk-norm, 4096/2048
    /// text widths, dual attention in the first half).
    Custom,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Precision {
    F32,
    Bf16,
}

/// MMDiT forward and LoRA forward+backward throughput with random weights.
#[derive(Parser, Debug)]
struct Args {
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in [default:
    /// $BURN_DEVICE, else the build's default: cuda, vulkan, wgpu, tch-cuda, tch, then flex]
    #[arg(long)]
    backend: Option<Backend>,
    /// The architecture.
    #[arg(long, alias = "preset", value_enum, default_value = "tiny")]
    config: Preset,
    /// Blocks of the custom configuration.
    #[arg(long, default_value_t = 6)]
    depth: usize,
    /// Heads of the custom configuration.
    #[arg(long, default_value_t = 6)]
    heads: usize,
    /// Head width of the custom configuration.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Image side in pixels; the latent is a eighth of it (the SD3 VAE).
    #[arg(long, default_value_t = 256)]
    resolution: usize,
    /// Samples per pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Context (text) tokens per sample; SD3 uses 77 + 256.
    #[arg(long, default_value_t = 333)]
    context_tokens: usize,
    /// Weight and activation precision.
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// LoRA rank on the attention projections (alpha = 2·rank, f32 factors).
    #[arg(long, default_value_t = 32)]
    rank: usize,
    /// Timed iterations of each pass (after one warm-up).
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Print the estimated memory of SD3.5 LoRA training at 512² and exit.
    #[arg(long)]
    estimate: bool,
    /// Run the LoRA pass on burn's op-level gradient checkpointing
    /// (`Device::autodiff().gradient_checkpointing()`).
    #[arg(long)]
    checkpointing: bool,
    /// Print the largest LoRA micro-batch and rollout chunk of `--config` at `--resolution`
    /// that fit in `--gpu-memory` GiB (bf16 base, the default LoRA) and exit.
    #[arg(long)]
    plan: bool,
    /// Device memory in GiB for `--plan`.
    #[arg(long, default_value_t = 80.0)]
    gpu_memory: f64,
}

fn main() -> flow_rl::Result<()> {
    let args = Args::parse();
    if args.estimate {
        print_estimates();
        return Ok(());
    }
    let config = architecture(&args);
    if args.plan {
        return print_plan(&args, &config);
    }
    let device = Backend::from_flag(args.backend)?.open()?;
    let dtype = match args.precision {
        Precision::F32 => FloatDType::F32,
        Precision::Bf16 => FloatDType::BF16,
    };
    if !device.supports_dtype(dtype) {
        return Err(flow_rl::Error::InvalidArgument {
            name: "--precision".into(),
            value: format!("{dtype:?}"),
            expected: format!("a dtype {device:?} supports"),
        });
    }
    let latent = args.resolution / 8;
    let tokens = (latent / config.patch_size).pow(2);
    println!(
        "{:?}: {} blocks, width {}, {:.1} M parameters; {}² px (latent {latent}², {tokens} image \
         + {} context tokens), batch {}, {dtype:?}, device {device:?}",
        args.config,
        config.depth,
        config.hidden(),
        config.num_params() as f64 / 1e6,
        args.resolution,
        args.context_tokens,
        args.batch
    );

    device.seed(0);
    let model = config.init(&device)?.with_dtype(dtype);
    let inputs = Inputs::random(&config, latent, args.context_tokens, args.batch, &device);
    let mut memory = PeakMemory::new(&device);
    let forward = time(args.iterations, || {
        let velocity = inputs.run(&model)?;
        memory.sample();
        let _ = velocity.sum().into_scalar::<f32>();
        Ok(())
    })?;
    let forward_peak = memory.report();

    let autodiff = if args.checkpointing {
        device.clone().autodiff().gradient_checkpointing()
    } else {
        device.clone().autodiff()
    };
    let lora = MmditLoraConfig::new()
        .with_rank(args.rank)
        .with_alpha(2.0 * args.rank as f64)
        .with_targets(vec![LoraTarget::Attention]);
    drop(model);
    let trainable = lora.apply(config.init(&autodiff)?.with_dtype(dtype))?;
    let inputs = inputs.to(&autodiff);
    let mut memory = PeakMemory::new(&autodiff);
    let backward = time(args.iterations, || {
        let velocity = inputs.run(&trainable)?;
        memory.sample();
        let grads = velocity.powf_scalar(2.0).mean().backward();
        memory.sample();
        drop(grads);
        Ok(())
    })?;
    let backward_peak = memory.report();

    let samples = args.batch as f64;
    println!(
        "{:<28} {:>12} {:>12} {:>24}",
        "pass", "ms / pass", "samples / s", "peak memory"
    );
    println!(
        "{:<28} {:>12.1} {:>12.2} {:>24}",
        "forward",
        forward * 1e3,
        samples / forward,
        forward_peak
    );
    println!(
        "{:<28} {:>12.1} {:>12.2} {:>24}",
        format!(
            "forward + backward (LoRA {}{})",
            args.rank,
            if args.checkpointing { ", ckpt" } else { "" }
        ),
        backward * 1e3,
        samples / backward,
        backward_peak
    );
    let workload = LoraWorkload {
        latent_size: [latent, latent],
        context_tokens: args.context_tokens,
        batch: args.batch,
        weight_dtype: dtype,
    };
    let estimate = config.estimate_lora_memory(&lora, &workload);
    println!(
        "estimated LoRA training memory for this workload: {} (weights {}, activations {}); \
         no-grad forward: {}",
        gib(estimate.total()),
        gib(estimate.base_weights),
        gib(estimate.activations),
        gib(config.estimate_forward_memory(&lora, &workload))
    );
    Ok(())
}

/// Random inputs of one pass.
struct Inputs {
    latents: Tensor<4>,
    timestep: Tensor<1>,
    context: Tensor<3>,
    pooled: Tensor<2>,
}

impl Inputs {
    fn random(
        config: &MmditConfig,
        latent: usize,
        context_tokens: usize,
        batch: usize,
        device: &Device,
    ) -> Self {
        let normal = Distribution::Normal(0.0, 1.0);
        Self {
            latents: Tensor::random([batch, config.in_channels, latent, latent], normal, device),
            timestep: Tensor::random([batch], Distribution::Uniform(0.0, 1000.0), device),
            context: Tensor::random([batch, context_tokens, config.context_dim], normal, device),
            pooled: Tensor::random([batch, config.pooled_dim], normal, device),
        }
    }

    /// The model's velocity for these inputs.
    fn run(&self, model: &Mmdit) -> flow_rl::Result<Tensor<4>> {
        model.forward(
            self.latents.clone(),
            self.timestep.clone(),
            self.context.clone(),
            self.pooled.clone(),
        )
    }

    fn to(&self, device: &Device) -> Self {
        Self {
            latents: self.latents.clone().to_device(device),
            timestep: self.timestep.clone().to_device(device),
            context: self.context.clone().to_device(device),
            pooled: self.pooled.clone().to_device(device),
        }
    }
}

/// Mean seconds of `iterations` runs of `pass`, after one warm-up run.
fn time(iterations: usize, mut pass: impl FnMut() -> flow_rl::Result<()>) -> flow_rl::Result<f64> {
    pass()?;
    let started = Instant::now();
    for _ in 0..iterations.max(1) {
        pass()?;
    }
    Ok(started.elapsed().as_secs_f64() / iterations.max(1) as f64)
}

fn gibibytes(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", gibibytes(bytes))
}

fn print_estimates() {
    println!(
        "Estimated memory of LoRA training (rank 32, alpha 64, attention projections, f32 \
         factors, bf16 base and activations), 512² (64² latent, 1024 image + 333 context \
         tokens):"
    );
    println!(
        "{:<14} {:>6} {:>9} {:>9} {:>9} {:>10} {:>11} {:>9}",
        "model", "batch", "weights", "adapters", "grads", "optimizer", "activations", "total"
    );
    let lora = MmditLoraConfig::new();
    for (name, config) in [
        ("SD3.5-medium", MmditConfig::sd35_medium()),
        ("SD3.5-large", MmditConfig::sd35_large()),
    ] {
        for batch in [1, 8, 16] {
            let estimate = config.estimate_lora_memory(&lora, &LoraWorkload::sd35(512, batch));
            print_row(name, batch, &estimate);
        }
    }
}

fn print_row(name: &str, batch: usize, estimate: &LoraMemoryEstimate) {
    let g = |bytes: u64| format!("{:.2}", gibibytes(bytes));
    println!(
        "{name:<14} {batch:>6} {:>9} {:>9} {:>9} {:>10} {:>11} {:>9}   (GiB)",
        g(estimate.base_weights),
        g(estimate.adapters),
        g(estimate.adapter_gradients),
        g(estimate.optimizer_state),
        g(estimate.activations),
        g(estimate.total())
    );
}

/// The architecture `--config` names.
fn architecture(args: &Args) -> MmditConfig {
    match args.config {
        Preset::Tiny => MmditConfig::tiny(),
        Preset::Sd3Medium => MmditConfig::sd3_medium(),
        Preset::Sd35Medium => MmditConfig::sd35_medium(),
        Preset::Sd35Large => MmditConfig::sd35_large(),
        Preset::Custom => MmditConfig::new(args.depth, args.heads)
            .with_head_dim(args.head_dim)
            .with_qk_norm(true)
            .with_dual_attention_layers((0..args.depth / 2).collect()),
    }
}

fn print_plan(args: &Args, config: &MmditConfig) -> flow_rl::Result<()> {
    let workload = LoraWorkload {
        context_tokens: args.context_tokens,
        ..LoraWorkload::sd35(args.resolution, 1)
    };
    let lora = MmditLoraConfig::new();
    let budget = (args.gpu_memory * (1u64 << 30) as f64) as u64;
    let plan = plan_batches(config, &lora, &workload, budget)?;
    let training = config.estimate_lora_memory(&lora, &workload.with_batch(plan.micro_batch_rows));
    let rollout =
        config.estimate_forward_memory(&lora, &workload.with_batch(plan.rollout_batch_size));
    println!(
        "{:?} at {}² ({} context tokens), bf16 base, LoRA rank {} (f32 factors, attention), {} GiB:",
        args.config, args.resolution, args.context_tokens, lora.rank, args.gpu_memory
    );
    println!(
        "  micro-batch rows (LoRA forward + backward): {} (estimated {})",
        plan.micro_batch_rows,
        gib(training.total())
    );
    println!(
        "  rollout batch size (no-grad forward):       {} (estimated {})",
        plan.rollout_batch_size,
        gib(rollout)
    );
    Ok(())
}
