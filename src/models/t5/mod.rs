//! T5 v1.1's encoder (T5-XXL is SD3.5's third text encoder) and its tokenizer.
//!
//! - [`T5Config`]: the architecture, [`T5Config::xxl`] for SD3.5;
//! - [`T5Encoder`]: token ids `[P, S]` → last hidden state `[P, S, d_model]`;
//! - [`T5Weights`]: diffusers' `text_encoder_3/` (sharded) and Stability AI's single files
//!   (`t5xxl_fp16.safetensors`), with every mismatch listed;
//! - [`T5Tokenizer`]: `tokenizer_3/tokenizer.json`, padded and truncated as SD3's pipeline.
//!
//! `docs/text_encoders.md` is the guide.

mod attention;
mod block;
mod config;
mod encoder;
mod norm;
mod position_bias;
mod tokenizer;
mod weights;

pub use attention::T5Attention;
pub use block::{T5Block, T5FeedForward};
pub use config::T5Config;
pub use encoder::T5Encoder;
pub use norm::T5LayerNorm;
pub use position_bias::{RelativePositionBias, relative_position_bucket};
pub use tokenizer::{T5_MAX_POSITIONS, T5Tokenizer};
pub use weights::T5Weights;
