//! The SD3-family MMDiT (SD3-medium, SD3.5-medium with MMDiT-X, SD3.5-large) as a
//! [`FlowPolicy`](crate::policy::FlowPolicy).
//!
//! - [`MmditConfig`]: the architecture, its presets, its parameter count and memory
//!   estimates for LoRA training and rollouts; [`plan_batches`] sizes both for a device;
//! - [`Mmdit`]: the network; its policy condition is `(context [B, L, 4096], pooled
//!   [B, 2048])`, its timestep `1000·σ`;
//! - [`MmditCheckpoint`]: Stability AI's single files and diffusers' layout, with every
//!   mismatch listed;
//! - [`MmditLoraConfig`]: LoRA through burn's built-in adapters, computed unmerged, saved and
//!   loaded alone under PEFT names, mergeable;
//! - [`PromptEmbeddings`]: the file format of precomputed text conditions.
//!
//! `docs/sd35.md` is the guide: loading, conditions, LoRA, memory.
//!
//! ```
//! use burn::prelude::*;
//! use burn::tensor::Distribution;
//! use flow_rl::models::mmdit::{MmditConfig, MmditLoraConfig};
//!
//! let device = Device::default().autodiff();
//! let config = MmditConfig::tiny(); // sd35_medium() with weights from MmditCheckpoint
//! let model = MmditLoraConfig::new().with_rank(4).apply(config.init(&device)?)?;
//! let normal = Distribution::Normal(0.0, 1.0);
//! let velocity = model.forward(
//!     Tensor::random([2, 16, 8, 8], normal, &device), // latents [B, C, H, W]
//!     Tensor::from_floats([900.0, 300.0], &device),   // timesteps 1000·σ
//!     Tensor::random([2, 5, 64], normal, &device),    // context [B, L, context_dim]
//!     Tensor::random([2, 32], normal, &device),       // pooled [B, pooled_dim]
//! )?;
//! assert_eq!(velocity.dims(), [2, 16, 8, 8]);
//! # Ok::<(), flow_rl::Error>(())
//! ```

mod attention;
mod block;
mod condition;
mod config;
mod embed;
pub(crate) mod layers;
mod lora;
mod memory;
pub(crate) mod mixed_dtypes;
mod model;
mod prompt_encoding;
mod prompts;
mod safetensors_io;
pub(crate) mod surrogate;
#[cfg(test)]
mod tests;
mod weights;

pub use attention::AttentionProjections;
pub use block::{JointBlock, StreamBlock};
pub use condition::MmditCondition;
pub use config::MmditConfig;
pub use embed::{FinalLayer, PatchEmbed};
pub use layers::{EmbedderMlp, Mlp};
pub use lora::{
    DIFFUSERS_LORA_METADATA, LoraTarget, MAX_LORA_SCALE, MmditLoraConfig, PEFT_CONFIG_FILE,
    PEFT_WEIGHTS_FILE,
};
pub use memory::{BatchPlan, LoraMemoryEstimate, LoraWorkload, plan_batches};
pub use model::Mmdit;
pub use prompt_encoding::{EncoderRecord, PromptEncoding};
pub use prompts::PromptEmbeddings;
pub use weights::{MmditCheckpoint, WeightLayout};
