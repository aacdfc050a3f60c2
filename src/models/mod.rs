//! Ready-made policies.

pub mod aesthetic;
pub mod clip;
pub mod mlp;
pub mod mmdit;
mod pretrain;
pub mod prompt_encoder;
pub mod ring;
mod safetensors_files;
pub mod t5;
pub mod vae;

pub use pretrain::{FlowMatchingConfig, pretrain_flow_matching};
