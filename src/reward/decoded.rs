//! Image rewards on latents: decode the final samples with a VAE, then score the images.

use std::sync::{Arc, Mutex};

use burn::prelude::*;
use image::RgbImage;

use super::{ImageReward, Reward};
use crate::error::{Error, Result};
use crate::models::mmdit::MmditCondition;
use crate::tensor_util::host_values;

/// A decoder of latents `[B, C, h, w]` into B RGB images: a VAE decoder.
pub trait ImageDecoder: Send {
    /// The latent channel count C it decodes.
    fn latent_channels(&self) -> usize;

    /// The images of `latents` `[B, C, h, w]`, `chunk_size` per pass.
    fn decode_images(&self, latents: Tensor<4>, chunk_size: usize) -> Result<Vec<RgbImage>>;
}

/// The default number of images per VAE pass.
pub const DEFAULT_DECODE_CHUNK: usize = 4;

/// Decodes flattened latents `[B, C·h·w]` into RGB images with an [`ImageDecoder`], in
/// chunks, and remembers the last batch: several [`DecodedReward`]s sharing one decoder
/// decode each rollout once.
pub struct LatentDecoder {
    vae: Mutex<Box<dyn ImageDecoder>>,
    latent_size: [usize; 2],
    chunk_size: usize,
    last: Mutex<Option<DecodedBatch>>,
}

/// The host values of the last decoded latents and their images.
struct DecodedBatch {
    latents: Vec<f32>,
    images: Arc<Vec<RgbImage>>,
}

impl LatentDecoder {
    /// A decoder of `latent_height × latent_width` latents with `vae`'s channel count,
    /// [`DEFAULT_DECODE_CHUNK`] images per pass.
    pub fn new(
        vae: impl ImageDecoder + 'static,
        latent_height: usize,
        latent_width: usize,
    ) -> Result<Self> {
        if latent_height == 0 || latent_width == 0 {
            return Err(Error::invalid(
                "latent size",
                format!("{latent_height}×{latent_width}"),
                "at least 1×1",
            ));
        }
        Ok(Self {
            vae: Mutex::new(Box::new(vae)),
            latent_size: [latent_height, latent_width],
            chunk_size: DEFAULT_DECODE_CHUNK,
            last: Mutex::new(None),
        })
    }

    /// Decodes `chunk_size` images per VAE pass (memory grows with it).
    pub fn with_chunk_size(mut self, chunk_size: usize) -> Result<Self> {
        if chunk_size == 0 {
            return Err(Error::invalid("decode chunk size", 0, "at least 1 image"));
        }
        self.chunk_size = chunk_size;
        Ok(self)
    }

    /// The RGB images of `samples` `[B, C·h·w]` (latents as the policy samples them),
    /// decoded once per distinct batch.
    pub fn images(&self, samples: &Tensor<2>) -> Result<Arc<Vec<RgbImage>>> {
        let [batch, dims] = samples.dims();
        let vae = self.vae.lock().expect("a VAE pass panicked");
        let channels = vae.latent_channels();
        let [height, width] = self.latent_size;
        if dims != channels * height * width {
            return Err(Error::shape(
                "samples to decode",
                format!(
                    "[B, {}] ({channels} channels of {height}×{width} latents)",
                    channels * height * width
                ),
                [batch, dims],
            ));
        }
        let latents = host_values(samples.clone())?;
        let mut last = self.last.lock().expect("a VAE pass panicked");
        if let Some(decoded) = last.as_ref().filter(|decoded| decoded.latents == latents) {
            return Ok(decoded.images.clone());
        }
        let images = Arc::new(vae.decode_images(
            samples.clone().reshape([batch, channels, height, width]),
            self.chunk_size,
        )?);
        *last = Some(DecodedBatch {
            latents,
            images: images.clone(),
        });
        Ok(images)
    }
}

/// Any [`ImageReward`] as a [`Reward`] of an MMDiT's samples: the latents are decoded by a
/// shared [`LatentDecoder`] and scored with the prompts the conditions carry
/// ([`MmditCondition::prompts`]; a condition without prompts is an error).
///
/// ```
/// use std::sync::Arc;
/// use burn::prelude::*;
/// use flow_rl::models::mmdit::MmditCondition;
/// use flow_rl::reward::{DecodedReward, ImageDecoder, JpegSize, LatentDecoder, RewardSet};
/// use image::RgbImage;
///
/// /// Channel 0 of each latent as a grey image (a VAE decoder in real use).
/// struct Grey;
/// impl ImageDecoder for Grey {
///     fn latent_channels(&self) -> usize { 1 }
///     fn decode_images(&self, latents: Tensor<4>, _: usize) -> flow_rl::Result<Vec<RgbImage>> {
///         let [batch, _, h, w] = latents.dims();
///         let values = latents.into_data().try_to_vec::<f32>().unwrap();
///         Ok((0..batch).map(|b| RgbImage::from_fn(w as u32, h as u32, |x, y| {
///             let v = values[b * h * w + y as usize * w + x as usize];
///             image::Rgb([((v + 1.0) * 127.5).clamp(0.0, 255.0) as u8; 3])
///         })).collect())
///     }
/// }
///
/// let device = Device::default();
/// let decoder = Arc::new(LatentDecoder::new(Grey, 16, 16)?);
/// let rewards = RewardSet::single(DecodedReward::new(JpegSize::incompressibility(), decoder.clone()))
///     .with(DecodedReward::new(JpegSize::compressibility(), decoder), 0.5);
/// let condition = MmditCondition::new(Tensor::zeros([2, 3, 8], &device), Tensor::zeros([2, 4], &device))
///     .with_prompts(vec!["a".into(), "b".into()])?;
/// let samples = Tensor::<2>::random([2, 256], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
/// let scores = rewards.score(&samples, &condition)?;
/// assert!(scores.values[0].iter().all(|&kb| kb > 0.0));
/// # Ok::<(), flow_rl::Error>(())
/// ```
pub struct DecodedReward<R> {
    reward: R,
    decoder: Arc<LatentDecoder>,
}

impl<R: ImageReward> DecodedReward<R> {
    /// `reward` on the images `decoder` makes.
    pub fn new(reward: R, decoder: Arc<LatentDecoder>) -> Self {
        Self { reward, decoder }
    }
}

impl<R: ImageReward> Reward<MmditCondition> for DecodedReward<R> {
    fn name(&self) -> &str {
        self.reward.name()
    }

    fn score(&self, samples: &Tensor<2>, conditions: &MmditCondition) -> Result<Vec<f32>> {
        let prompts = conditions.prompts().ok_or_else(|| {
            Error::invalid(
                format!("conditions of image reward {:?}", self.reward.name()),
                "conditions without prompts",
                "prompts attached to the conditions (PromptEmbeddings::condition or \
                 MmditCondition::with_prompts)",
            )
        })?;
        let images = self.decoder.images(samples)?;
        self.reward.score_images(&images, prompts)
    }
}
