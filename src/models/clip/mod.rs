//! CLIP text encoders (OpenAI CLIP ViT-L/14 and OpenCLIP ViT-bigG/14, SD3.5's
//! `text_encoder` and `text_encoder_2`) and their tokenizer.
//!
//! - [`ClipTextConfig`]: the architecture and its presets;
//! - [`ClipTextModel`]: token ids `[P, 77]` → hidden states, pooled and projected outputs;
//! - [`ClipEncoderLayer`]: the pre-LN layer, with a causal or bidirectional mask, reusable
//!   by a vision tower;
//! - [`ClipTextCheckpoint`]: transformers-named weights (diffusers folders, Stability AI's
//!   single files), every mismatch listed;
//! - [`ClipTokenizer`]: CLIP's BPE, padded and truncated as diffusers' SD3 pipeline does.
//!
//! ```
//! use burn::prelude::*;
//! use flow_rl::models::clip::{ClipActivation, ClipTextConfig};
//!
//! let device = Device::default();
//! let config = ClipTextConfig::new(64, 77, 16, 2, 2, 32, ClipActivation::Gelu, 8);
//! let model = config.init(&device)?; // vit_bigg14() with weights from ClipTextCheckpoint
//! let ids = Tensor::<2, Int>::zeros([2, 77], &device);
//! let output = model.forward(ids, config.layers - 1)?; // SD3.5 reads the penultimate layer
//! assert_eq!(output.hidden.dims(), [2, 77, 16]);
//! assert_eq!(output.projected.dims(), [2, 8]);
//! # Ok::<(), flow_rl::Error>(())
//! ```

mod attention;
mod block;
mod config;
mod mlp;
mod text;
mod tokenizer;
mod weights;

pub use attention::{AttentionMask, ClipAttention};
pub use block::{ClipEncoderLayer, ClipLayerShape};
pub use config::{ClipActivation, ClipTextConfig, EosPooling};
pub use mlp::ClipMlp;
pub use text::{ClipTextModel, ClipTextOutput};
pub use tokenizer::{
    BOS_TOKEN, CLIP_G_PAD_TOKEN, CONTEXT_LENGTH, ClipTokenIds, ClipTokenizer, EOS_TOKEN,
};
pub use weights::ClipTextCheckpoint;
