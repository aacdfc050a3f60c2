//! What a run is made of: the MMDiT with LoRA, the VAE, the prompt embeddings, and the
//! trainer's configuration.

use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use clap::ValueEnum;
use flow_rl::kernel::{FlowSdeConfig, KernelConfig};
use flow_rl::models::mmdit::{
    Mmdit, MmditCheckpoint, MmditConfig, MmditLoraConfig, PromptEmbeddings,
};
use flow_rl::models::vae::{VaeDecoder, VaeDecoderConfig, VaeWeights};
use flow_rl::objective::ObjectiveConfig;
use flow_rl::reward::LatentDecoder;
use flow_rl::schedule::{SdeStepSelection, SigmaScheduleConfig};
use flow_rl::trainer::{Trainer, TrainerConfig};
use flow_rl::{Error, Result};

use crate::{Args, prompts};

/// The model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// A 2-block MMDiT and a 2-block VAE of SD3.5's layout, random weights only: tests.
    Tiny,
    /// SD3.5-medium (2.5 B parameters, dual attention in the first 13 blocks).
    Medium,
    /// SD3.5-large (8 B parameters).
    Large,
}

/// The base weights' dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// As stored in the file.
    Stored,
    /// bf16.
    Bf16,
    /// f32.
    F32,
}

/// The tiny preset's latent side.
const TINY_LATENT_SIDE: usize = 8;
/// SD3.5's default image side.
const DEFAULT_RESOLUTION: usize = 512;

impl Preset {
    fn mmdit(self) -> MmditConfig {
        match self {
            Preset::Tiny => MmditConfig::tiny(),
            Preset::Medium => MmditConfig::sd35_medium(),
            Preset::Large => MmditConfig::sd35_large(),
        }
    }

    fn vae(self) -> VaeDecoderConfig {
        match self {
            Preset::Tiny => VaeDecoderConfig::tiny(),
            Preset::Medium | Preset::Large => VaeDecoderConfig::sd3(),
        }
    }
}

/// Offsets of the seeds each random initialisation starts from.
const MMDIT_SEED_OFFSET: u64 = 1;
const VAE_SEED_OFFSET: u64 = 2;
const LORA_SEED_OFFSET: u64 = 3;
pub(crate) const PROMPT_SEED_OFFSET: u64 = 4;

/// Draws a module's random parameters now. burn initialises parameters lazily, at first use,
/// so without this the draws of the VAE (whose weights no checkpoint holds) would interleave
/// with the MMDiT's in an order that differs between a fresh run and a resumed one.
struct DrawNow;

impl ModuleVisitor for DrawNow {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// The parts of a run.
pub struct Run {
    /// The MMDiT with LoRA adapters, as the trainer starts from it.
    pub policy: Mmdit,
    /// The prompts and their embeddings.
    pub embeddings: PromptEmbeddings,
    /// The VAE, shared by the image rewards and the evaluation grid.
    pub decoder: Arc<LatentDecoder>,
    /// The latent's `[channels, height, width]`.
    pub latent: [usize; 3],
    /// The image side in pixels.
    pub resolution: usize,
}

impl Run {
    /// Builds the parts from the command line; `device` is the training (autodiff) device.
    pub fn new(args: &Args, device: &Device) -> Result<Self> {
        let inference = device.clone().without_autodiff();
        let vae = load_vae(args, &inference)?;
        let factor = vae.config().upsampling_factor();
        let resolution = args.resolution.unwrap_or(match args.preset {
            Preset::Tiny => TINY_LATENT_SIDE * factor,
            Preset::Medium | Preset::Large => DEFAULT_RESOLUTION,
        });
        let mmdit = load_mmdit(args, device)?;
        let latent_side = latent_side(resolution, factor, mmdit.config())?;
        let channels = mmdit.config().in_channels;
        if vae.config().latent_channels != channels {
            return Err(Error::InvalidArgument {
                name: "VAE latent channels".into(),
                value: vae.config().latent_channels.to_string(),
                expected: format!("the MMDiT's {channels} latent channels"),
            });
        }
        let embeddings = prompts::load_embeddings(args, mmdit.config(), &inference)?;
        let decoder = LatentDecoder::new(vae, latent_side, latent_side)?
            .with_chunk_size(args.decode_batch_size)?;
        let policy = MmditLoraConfig::new()
            .with_rank(args.lora_rank)
            .with_alpha(args.lora_alpha)
            .with_seed(Some(args.seed.wrapping_add(LORA_SEED_OFFSET)))
            .apply(mmdit.with_latent_size(latent_side, latent_side))?;
        policy.visit(&mut DrawNow);
        Ok(Self {
            policy,
            embeddings,
            decoder: Arc::new(decoder),
            latent: [channels, latent_side, latent_side],
            resolution,
        })
    }

    /// The flattened latent size N.
    pub fn latent_dims(&self) -> usize {
        self.latent.iter().product()
    }

    /// The Flow-DPPO recipe of ALGORITHMS.md §9 with the command line's choices.
    pub fn trainer_config(&self, args: &Args) -> Result<TrainerConfig> {
        Ok(TrainerConfig::new(self.latent_dims())
            .with_group_size(args.group_size)
            .with_groups_per_rollout(args.prompts_per_rollout)
            .with_schedule(SigmaScheduleConfig::new().with_steps(args.denoising_steps))
            .with_kernel(KernelConfig::FlowSde(
                FlowSdeConfig::new().with_eta(args.eta),
            ))
            .with_sde_steps(SdeStepSelection::RandomSubset {
                window_start: 0.0,
                window_end: 0.5,
                count: args.sde_steps,
            })
            .with_objective(ObjectiveConfig::from_name(&args.objective)?)
            .with_learning_rate(args.learning_rate)
            .with_weight_decay(0.0)
            .with_minibatches_per_rollout(args.minibatches)
            .with_micro_batch_rows(args.micro_batch_rows)
            .with_rollout_batch_size(args.rollout_batch_size)
            .with_seed(args.seed))
    }

    /// One line on what runs.
    pub fn describe(&self, args: &Args, trainer: &Trainer<Mmdit>) -> String {
        let config = self.policy.config();
        let [channels, height, width] = self.latent;
        format!(
            "{:?}: {} blocks × {} heads, {}² images ({channels}×{height}×{width} latents), \
             {} prompts, {} × {} samples per rollout, T = {}, {} SDE steps, {}, LoRA rank {} \
             alpha {}, steps {}..{}",
            args.preset,
            config.depth,
            config.heads,
            self.resolution,
            self.embeddings.len(),
            args.prompts_per_rollout,
            args.group_size,
            args.denoising_steps,
            args.sde_steps,
            args.objective,
            args.lora_rank,
            args.lora_alpha,
            trainer.steps_done(),
            args.train_steps,
        )
    }
}

/// Weights or `--random-init`, not both; the tiny preset exists only with random weights.
pub fn check_sources(args: &Args) -> Result<()> {
    if args.random_init && (args.weights.is_some() || args.vae.is_some()) {
        return Err(Error::InvalidArgument {
            name: "--random-init".into(),
            value: "given with --weights or --vae".into(),
            expected: "either random weights or weights files, not both".into(),
        });
    }
    if !args.random_init && args.weights.is_none() {
        return Err(Error::InvalidArgument {
            name: "--weights".into(),
            value: "none".into(),
            expected: "an SD3.5 single file or diffusers folder, or --random-init".into(),
        });
    }
    if args.preset == Preset::Tiny && !args.random_init {
        return Err(Error::InvalidArgument {
            name: "--preset".into(),
            value: "tiny".into(),
            expected: "--random-init (no released weights have the tiny size)".into(),
        });
    }
    if args.eval_every == 0 {
        return Err(Error::InvalidArgument {
            name: "--eval-every".into(),
            value: "0".into(),
            expected: "at least 1 step".into(),
        });
    }
    Ok(())
}

/// The latent side of `resolution`-pixel images: the VAE's factor must divide it, and the
/// MMDiT's patch size the latent.
fn latent_side(resolution: usize, factor: usize, config: &MmditConfig) -> Result<usize> {
    let patch = config.patch_size;
    if resolution == 0 || !resolution.is_multiple_of(factor * patch) {
        return Err(Error::InvalidArgument {
            name: "--resolution".into(),
            value: resolution.to_string(),
            expected: format!(
                "a positive multiple of {} (the VAE's factor {factor} × the patch size {patch})",
                factor * patch
            ),
        });
    }
    Ok(resolution / factor)
}

fn dtype(args: &Args) -> Option<FloatDType> {
    match args.precision {
        Some(Precision::Bf16) => Some(FloatDType::BF16),
        Some(Precision::F32) => Some(FloatDType::F32),
        Some(Precision::Stored) | None => None,
    }
}

fn load_mmdit(args: &Args, device: &Device) -> Result<Mmdit> {
    let Some(weights) = &args.weights else {
        device.seed(args.seed.wrapping_add(MMDIT_SEED_OFFSET));
        let model = args.preset.mmdit().init(device)?;
        model.visit(&mut DrawNow);
        return Ok(match dtype(args) {
            Some(dtype) => model.with_dtype(dtype),
            None => model,
        });
    };
    let checkpoint = MmditCheckpoint::open(weights)?;
    let config = checkpoint.infer_config()?;
    let preset = args.preset.mmdit();
    if (config.depth, config.heads) != (preset.depth, preset.heads) {
        log::warn!(
            "{} holds a {}-block, {}-head MMDiT, not --preset {:?}'s {} × {}: using the file's",
            weights.display(),
            config.depth,
            config.heads,
            args.preset,
            preset.depth,
            preset.heads
        );
    }
    checkpoint.load_into(config.init(device)?, dtype(args))
}

fn load_vae(args: &Args, device: &Device) -> Result<VaeDecoder> {
    let source = args.vae.as_ref().or(args.weights.as_ref());
    match source {
        Some(path) => VaeWeights::open(path)?.load(dtype(args), device),
        None => {
            device.seed(args.seed.wrapping_add(VAE_SEED_OFFSET));
            let vae = args.preset.vae().init(device)?;
            vae.visit(&mut DrawNow);
            Ok(match dtype(args) {
                Some(dtype) => vae.with_dtype(dtype),
                None => vae,
            })
        }
    }
}
