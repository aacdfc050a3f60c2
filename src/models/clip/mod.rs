//! CLIP: the text encoders as SD3 uses them (OpenAI CLIP-L/14 `text_encoder`, OpenCLIP
//! bigG/14 `text_encoder_2`), and whole CLIP models (text and vision towers) as the
//! preference rewards use them (PickScore, HPSv2, CLIPScore, the LAION aesthetic score).
//!
//! - [`ClipTextConfig`]: the architecture and its presets [`vit_l14`](ClipTextConfig::vit_l14),
//!   [`vit_bigg14`](ClipTextConfig::vit_bigg14);
//! - [`ClipTextModel`]: the text transformer; [`ClipTextOutput`] holds a chosen hidden state,
//!   the last one, the pooled and the projected pooled output;
//! - [`ClipEncoderLayer`]: the pre-LayerNorm layer with an [`AttentionMask`], shared by the
//!   two towers;
//! - [`ClipTextWeights`]: diffusers folders and Stability AI's single files;
//! - [`ClipTokenizer`]: CLIP's BPE, padded to 77 as diffusers' SD3 pipeline pads;
//! - [`ClipVisionConfig`]: the vision tower's architecture and its presets
//!   [`vit_l14`](ClipVisionConfig::vit_l14), [`vit_h14`](ClipVisionConfig::vit_h14);
//! - [`ClipVisionModel`]: the vision transformer; [`ClipVisionOutput`] holds the pooled class
//!   token and its projection;
//! - [`ClipModelConfig`], [`ClipModel`]: both towers and the logit scale, with image and text
//!   embeddings in one space;
//! - [`ClipModelWeights`]: whole-CLIP checkpoints in either [`ClipLayout`], transformers'
//!   `CLIPModel` or OpenCLIP's.
//! - [`ClipImageProcessor`]: the image preprocessing of transformers and OpenCLIP (PIL's
//!   bicubic resize, centre crop, CLIP's mean and std).
//!
//! `docs/text_encoders.md` is the guide to the text encoders, `docs/clip.md` to the vision
//! tower and whole CLIP models.

mod attention;
mod block;
mod config;
mod mlp;
mod model;
mod model_config;
mod model_keys;
mod model_weights;
mod preprocess;
mod text;
mod tokenizer;
mod vision;
mod vision_config;
mod weights;

pub use attention::{AttentionMask, ClipAttention};
pub use block::ClipEncoderLayer;
pub use config::{ClipPooling, ClipTextConfig};
pub use mlp::{ClipActivation, ClipMlp};
pub use model::ClipModel;
pub use model_config::ClipModelConfig;
pub use model_weights::{ClipLayout, ClipModelWeights};
pub use preprocess::{CLIP_MEAN, CLIP_STD, ClipImageProcessor};
pub use text::{ClipTextModel, ClipTextOutput};
pub use tokenizer::{
    BOS_TOKEN, CLIP_G_PAD_TOKEN, CONTEXT_LENGTH, ClipTokenIds, ClipTokenizer, EOS_TOKEN,
};
pub use vision::{ClipVisionModel, ClipVisionOutput};
pub use vision_config::ClipVisionConfig;
pub use weights::ClipTextWeights;
