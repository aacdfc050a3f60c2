//! The architecture of a CLIP text transformer and its SD3 presets.

use burn::prelude::*;

use super::mlp::ClipActivation;
use crate::error::{Error, Result};

/// How the pooled output picks each prompt's end-of-text position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClipPooling {
    /// The position of the largest id (transformers' rule for configs whose `eos_token_id`
    /// is the legacy 2, OpenAI's CLIP-L among them). With CLIP's vocabulary the largest id is
    /// `<|endoftext|>` (49407), so this is its first occurrence.
    HighestId,
    /// The first position holding this id (transformers' rule otherwise).
    FirstId(usize),
}

/// A CLIP text transformer: token and positional embeddings, `layers` pre-LayerNorm encoder
/// layers under a causal mask, a final LayerNorm and a bias-free text projection.
///
/// ```
/// use flow_rl::models::clip::ClipTextConfig;
///
/// let clip_l = ClipTextConfig::vit_l14();
/// assert_eq!((clip_l.layers, clip_l.width, clip_l.projection), (12, 768, 768));
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct ClipTextConfig {
    /// Token ids are below this.
    #[config(default = 49408)]
    pub vocab_size: usize,
    /// The sequence length the positional table covers.
    #[config(default = 77)]
    pub max_positions: usize,
    /// The residual width.
    pub width: usize,
    /// The number of encoder layers.
    pub layers: usize,
    /// The number of attention heads; divides `width`.
    pub heads: usize,
    /// The MLP's hidden width.
    pub mlp_width: usize,
    /// The MLP's activation.
    pub activation: ClipActivation,
    /// The output width of `text_projection`.
    pub projection: usize,
    /// The epsilon of every LayerNorm.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// The pooling rule.
    pub pooling: ClipPooling,
}

impl ClipTextConfig {
    /// OpenAI CLIP ViT-L/14's text tower (SD3's `text_encoder`): 12 layers, width 768, 12
    /// heads, MLP 3072, QuickGELU, projection 768.
    pub fn vit_l14() -> Self {
        Self::new(
            768,
            12,
            12,
            3072,
            ClipActivation::QuickGelu,
            768,
            ClipPooling::HighestId,
        )
    }

    /// OpenCLIP ViT-bigG/14's text tower (SD3's `text_encoder_2`): 32 layers, width 1280,
    /// 20 heads, MLP 5120, exact GELU, projection 1280.
    pub fn vit_bigg14() -> Self {
        Self::new(
            1280,
            32,
            20,
            5120,
            ClipActivation::Gelu,
            1280,
            ClipPooling::FirstId(49407),
        )
    }

    /// Checks the sizes: all positive, `heads` dividing `width`.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("max_positions", self.max_positions),
            ("width", self.width),
            ("layers", self.layers),
            ("heads", self.heads),
            ("mlp_width", self.mlp_width),
            ("projection", self.projection),
        ];
        if let Some((name, value)) = sizes.iter().find(|(_, value)| *value == 0) {
            return Err(Error::invalid(*name, value, "a positive size"));
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(Error::invalid(
                "heads",
                self.heads,
                format!("a divisor of width {}", self.width),
            ));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(Error::invalid(
                "layer_norm_eps",
                self.layer_norm_eps,
                "a positive epsilon",
            ));
        }
        Ok(())
    }
}
