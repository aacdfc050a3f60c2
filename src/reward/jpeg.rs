//! JPEG compressibility and incompressibility: the size of each image's quality-95 JPEG.

use std::io::Cursor;

use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;

use super::ImageReward;
use crate::error::{Error, Result};

/// The JPEG quality of DDPO's and flow_grpo's size rewards.
pub const JPEG_QUALITY: u8 = 95;

/// The size of each image encoded as a quality-95 JPEG, in kB (1000 bytes), times a scale:
/// positive for incompressibility (detail), negative for compressibility (flat images).
///
/// DDPO scores compressibility as `−kB` and flow_grpo as `−kB / 500`; both score
/// incompressibility as `+kB`. The encoder is the `image` crate's, not PIL's, so sizes
/// differ from Python's by a few percent; a reward's ranking of images is what training
/// uses.
///
/// ```
/// use flow_rl::reward::{ImageReward, JpegSize};
/// use image::RgbImage;
///
/// let flat = RgbImage::from_pixel(64, 64, image::Rgb([90, 120, 200]));
/// let noisy = RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 37 ^ y * 91) as u8, (x * y) as u8, (x + 3 * y) as u8]));
/// let prompts = vec![String::new(), String::new()];
/// let scores = JpegSize::compressibility().score_images(&[flat, noisy], &prompts)?;
/// assert!(scores[0] > scores[1]);
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct JpegSize {
    name: String,
    scale: f32,
}

impl JpegSize {
    /// Incompressibility, `+kB`: rewards detail.
    pub fn incompressibility() -> Self {
        Self::with_scale("jpeg_incompressibility", 1.0)
    }

    /// Compressibility as flow_grpo scores it, `−kB / 500`.
    pub fn compressibility() -> Self {
        Self::with_scale("jpeg_compressibility", -1.0 / 500.0)
    }

    /// Compressibility as DDPO scores it, `−kB`.
    pub fn compressibility_ddpo() -> Self {
        Self::with_scale("jpeg_compressibility", -1.0)
    }

    /// `scale · kB`, under `name`.
    pub fn with_scale(name: impl Into<String>, scale: f32) -> Self {
        Self {
            name: name.into(),
            scale,
        }
    }

    /// The size of `image` as a quality-95 JPEG, in bytes.
    pub fn encoded_bytes(image: &RgbImage) -> Result<usize> {
        Ok(jpeg_bytes(image, JPEG_QUALITY)?.len())
    }
}

/// `image` as JPEG bytes of the given quality (the JPEG rewards, and the image reward
/// servers' requests).
pub(crate) fn jpeg_bytes(image: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    let mut encoded = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut encoded, quality)
        .encode_image(image)
        .map_err(|error| {
            Error::invalid(
                "image",
                format!("{}×{} ({error})", image.width(), image.height()),
                "an RGB image the JPEG encoder accepts (sides of 1 to 65535 pixels)",
            )
        })?;
    Ok(encoded.into_inner())
}

impl ImageReward for JpegSize {
    fn name(&self) -> &str {
        &self.name
    }

    fn score_images(&self, images: &[RgbImage], _prompts: &[String]) -> Result<Vec<f32>> {
        images
            .iter()
            .map(|image| Ok(self.scale * Self::encoded_bytes(image)? as f32 / 1000.0))
            .collect()
    }
}
