//! The architecture of a CLIP text transformer and its presets.

use burn::prelude::*;

use super::text::ClipTextModel;
use crate::error::{Error, Result};

/// The MLP's activation.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x·sigmoid(1.702·x)`: OpenAI's CLIP (ViT-L/14).
    QuickGelu,
    /// The exact (erf) GELU: OpenCLIP's ViT-bigG/14.
    Gelu,
}

/// Where the pooled output is read in each row of token ids.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum EosPooling {
    /// At the highest id (the first one on ties): transformers' rule for configs whose
    /// `eos_token_id` is 2, which SD3.5's two CLIP configs are. With CLIP's vocabulary the
    /// end-of-text token 49407 is the highest id, so this is its first occurrence.
    HighestId,
    /// At the first occurrence of this id; a row without it is an error.
    FirstOf(usize),
}

/// A CLIP text transformer: token and positional embeddings, pre-LN encoder layers, a
/// final LayerNorm and a bias-free text projection.
#[derive(Config, Debug)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Number of positions (77).
    pub max_positions: usize,
    /// Width of the residual stream.
    pub width: usize,
    /// Number of encoder layers.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Hidden width of the MLP.
    pub mlp_width: usize,
    /// The MLP's activation.
    pub activation: ClipActivation,
    /// Output width of `text_projection`.
    pub projection: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// The pooled output's position rule.
    #[config(default = "EosPooling::HighestId")]
    pub pooling: EosPooling,
}

impl ClipTextConfig {
    /// OpenAI CLIP ViT-L/14 (SD3.5's `text_encoder`).
    pub fn vit_l14() -> Self {
        Self::new(49408, 77, 768, 12, 12, 3072, ClipActivation::QuickGelu, 768)
    }

    /// OpenCLIP ViT-bigG/14 (SD3.5's `text_encoder_2`).
    pub fn vit_bigg14() -> Self {
        Self::new(49408, 77, 1280, 32, 20, 5120, ClipActivation::Gelu, 1280)
    }

    /// Fails where the widths do not split into heads or a size is zero.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("max_positions", self.max_positions),
            ("width", self.width),
            ("heads", self.heads),
            ("mlp_width", self.mlp_width),
            ("projection", self.projection),
        ] {
            if value == 0 {
                return Err(Error::invalid(name, value, "a positive size"));
            }
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(Error::invalid(
                "width",
                self.width,
                format!("a multiple of heads = {}", self.heads),
            ));
        }
        Ok(())
    }

    /// A model with freshly initialised weights (f32).
    pub fn init(&self, device: &Device) -> Result<ClipTextModel> {
        self.validate()?;
        Ok(ClipTextModel::new(self, device))
    }
}
