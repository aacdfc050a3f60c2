//! Ready-made policies.

pub mod mlp;
pub mod mmdit;
mod pretrain;
pub mod ring;

pub use pretrain::{FlowMatchingConfig, pretrain_flow_matching};
