//! Rewards that score RGB images with their prompts.

use image::RgbImage;

use crate::error::Result;

/// Scores RGB images (8-bit, `H × W × 3`) with the prompts they were generated from: one
/// value per image.
///
/// Implementations are local scorers (JPEG size, CLIP-based preference models) and
/// clients of reward servers. [`DecodedReward`](super::DecodedReward) makes any of them a
/// [`Reward`](super::Reward) of latents by decoding them with a VAE.
pub trait ImageReward: Send + Sync {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;

    /// One finite score per image, in order, or an error; `prompts[i]` is image i's
    /// prompt, and both slices have the same length.
    fn score_images(&self, images: &[RgbImage], prompts: &[String]) -> Result<Vec<f32>>;
}

/// A boxed reward scores as the reward it holds, so rewards chosen at run time
/// (`Box<dyn ImageReward>`) wrap in a [`DecodedReward`](super::DecodedReward) like any other.
impl<R: ImageReward + ?Sized> ImageReward for Box<R> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn score_images(&self, images: &[RgbImage], prompts: &[String]) -> Result<Vec<f32>> {
        (**self).score_images(images, prompts)
    }
}
