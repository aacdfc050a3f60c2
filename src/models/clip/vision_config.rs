//! The architecture of a CLIP vision tower and its presets.

use burn::prelude::*;

use super::mlp::ClipActivation;
use crate::error::{Error, Result};

/// A CLIP vision transformer: square images of `image_size` pixels cut into patches of
/// `patch_size`, a class token, `layers` pre-LayerNorm encoder layers without mask, a
/// LayerNorm on the class token and a bias-free visual projection.
///
/// ```
/// use flow_rl::models::clip::ClipVisionConfig;
///
/// let vit_l = ClipVisionConfig::vit_l14();
/// assert_eq!((vit_l.layers, vit_l.width, vit_l.projection), (24, 1024, 768));
/// assert_eq!(vit_l.positions(), 257); // the class token and 16 × 16 patches
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct ClipVisionConfig {
    /// The side of the square input images, in pixels.
    #[config(default = 224)]
    pub image_size: usize,
    /// The side of a square patch, in pixels; divides `image_size`.
    pub patch_size: usize,
    /// The input channels (RGB).
    #[config(default = 3)]
    pub channels: usize,
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
    /// The output width of `visual_projection`.
    pub projection: usize,
    /// The epsilon of every LayerNorm.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    /// OpenAI CLIP ViT-L/14's vision tower (transformers' `openai/clip-vit-large-patch14`,
    /// the LAION aesthetic predictor's backbone): 224², patch 14, width 1024, 24 layers, 16
    /// heads, MLP 4096, QuickGELU, projection 768.
    pub fn vit_l14() -> Self {
        Self::new(14, 1024, 24, 16, 4096, ClipActivation::QuickGelu, 768)
    }

    /// OpenCLIP ViT-H/14's vision tower (`laion/CLIP-ViT-H-14-laion2B-s32B-b79K`, PickScore,
    /// HPSv2): 224², patch 14, width 1280, 32 layers, 16 heads (of 80 features), MLP 5120,
    /// exact GELU, projection 1024.
    pub fn vit_h14() -> Self {
        Self::new(14, 1280, 32, 16, 5120, ClipActivation::Gelu, 1024)
    }

    /// The patches along each side, `image_size / patch_size`.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// The sequence length: the class token and `grid()²` patches.
    pub fn positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// Checks the sizes: all positive, `patch_size` dividing `image_size`, `heads` dividing
    /// `width`.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("channels", self.channels),
            ("width", self.width),
            ("layers", self.layers),
            ("heads", self.heads),
            ("mlp_width", self.mlp_width),
            ("projection", self.projection),
        ];
        if let Some((name, value)) = sizes.iter().find(|(_, value)| *value == 0) {
            return Err(Error::invalid(*name, value, "a positive size"));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::invalid(
                "patch_size",
                self.patch_size,
                format!("a divisor of image_size {}", self.image_size),
            ));
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
