//! CLIP text encoders as SD3 uses them: OpenAI CLIP-L/14 (`text_encoder`) and OpenCLIP
//! bigG/14 (`text_encoder_2`).
//!
//! - [`ClipTextConfig`]: the architecture and its presets [`vit_l14`](ClipTextConfig::vit_l14),
//!   [`vit_bigg14`](ClipTextConfig::vit_bigg14);
//! - [`ClipTextModel`]: the text transformer; [`ClipTextOutput`] holds a chosen hidden state,
//!   the last one, the pooled and the projected pooled output;
//! - [`ClipEncoderLayer`]: the pre-LayerNorm layer with an [`AttentionMask`], shared with a
//!   future vision tower;
//! - [`ClipTextWeights`]: diffusers folders and Stability AI's single files;
//! - [`ClipTokenizer`]: CLIP's BPE, padded to 77 as diffusers' SD3 pipeline pads.
//!
//! `docs/text_encoders.md` is the guide.

mod attention;
mod block;
mod config;
mod mlp;
mod text;
mod tokenizer;
mod weights;

pub use attention::{AttentionMask, ClipAttention};
pub use block::ClipEncoderLayer;
pub use config::{ClipPooling, ClipTextConfig};
pub use mlp::{ClipActivation, ClipMlp};
pub use text::{ClipTextModel, ClipTextOutput};
pub use tokenizer::{
    BOS_TOKEN, CLIP_G_PAD_TOKEN, CONTEXT_LENGTH, ClipTokenIds, ClipTokenizer, EOS_TOKEN,
};
pub use weights::ClipTextWeights;
