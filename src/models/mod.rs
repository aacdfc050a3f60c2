//! Ready-made policies.

pub mod mlp;
mod pretrain;

pub use pretrain::{FlowMatchingConfig, pretrain_flow_matching};
