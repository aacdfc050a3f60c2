//! The SD3-family MMDiT (SD3-medium, SD3.5-medium with MMDiT-X, SD3.5-large) as a
//! [`FlowPolicy`](crate::policy::FlowPolicy).

mod attention;
mod block;
mod config;
mod embed;
mod layers;
mod lora;
mod memory;
mod model;
mod prompts;
mod safetensors_io;
#[cfg(test)]
mod tests;
mod weights;

pub use attention::AttentionProjections;
pub use block::{JointBlock, StreamBlock};
pub use config::MmditConfig;
pub use embed::{FinalLayer, PatchEmbed};
pub use layers::{EmbedderMlp, Mlp};
pub use lora::{LoraTarget, MmditLoraConfig};
pub use memory::{LoraMemoryEstimate, LoraWorkload};
pub use model::{Mmdit, MmditCondition};
pub use prompts::PromptEmbeddings;
pub use weights::{MmditCheckpoint, WeightLayout};
