//! The architecture of a whole CLIP model (text and vision towers) and its presets.

use burn::prelude::*;

use super::config::{ClipPooling, ClipTextConfig};
use super::mlp::ClipActivation;
use super::vision_config::ClipVisionConfig;
use crate::error::{Error, Result};

/// A CLIP model: a text tower and a vision tower projecting into one embedding space of
/// `projection` features, and a learned logit scale.
///
/// ```
/// use flow_rl::models::clip::ClipModelConfig;
///
/// let pickscore = ClipModelConfig::vit_h14();
/// assert_eq!(pickscore.projection(), 1024);
/// assert_eq!((pickscore.text.width, pickscore.vision.width), (1024, 1280));
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct ClipModelConfig {
    /// The text tower.
    pub text: ClipTextConfig,
    /// The vision tower.
    pub vision: ClipVisionConfig,
}

impl ClipModelConfig {
    /// OpenAI CLIP ViT-L/14 (`openai/clip-vit-large-patch14`; CLIPScore, the LAION aesthetic
    /// predictor's backbone): [`ClipTextConfig::vit_l14`] and [`ClipVisionConfig::vit_l14`],
    /// projection 768.
    pub fn vit_l14() -> Self {
        Self::new(ClipTextConfig::vit_l14(), ClipVisionConfig::vit_l14())
    }

    /// OpenCLIP ViT-H/14 (`laion/CLIP-ViT-H-14-laion2B-s32B-b79K`, PickScore_v1, HPSv2):
    /// a text tower of width 1024, 24 layers, 16 heads, MLP 4096, exact GELU, pooled at the
    /// highest id (the `<|endoftext|>` of CLIP's vocabulary: transformers' rule for the legacy
    /// `eos_token_id = 2` these configs carry, and OpenCLIP's `argmax`), and
    /// [`ClipVisionConfig::vit_h14`]; projection 1024.
    pub fn vit_h14() -> Self {
        let text = ClipTextConfig::new(
            1024,
            24,
            16,
            4096,
            ClipActivation::Gelu,
            1024,
            ClipPooling::HighestId,
        );
        Self::new(text, ClipVisionConfig::vit_h14())
    }

    /// The width of the shared embedding space.
    pub fn projection(&self) -> usize {
        self.text.projection
    }

    /// Checks both towers and that they project to the same width.
    pub fn validate(&self) -> Result<()> {
        self.text.validate()?;
        self.vision.validate()?;
        if self.text.projection != self.vision.projection {
            return Err(Error::invalid(
                "vision.projection",
                self.vision.projection,
                format!(
                    "the text tower's projection {} (both towers embed into one space)",
                    self.text.projection
                ),
            ));
        }
        Ok(())
    }
}
