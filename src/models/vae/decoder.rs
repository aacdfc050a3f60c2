//! The decoder: latents `[B, C, h, w]` → pixels `[B, 3, f·h, f·w]` in [-1, 1], and RGB images.

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::{DType, FloatDType};
use image::RgbImage;

use super::attention::VaeAttention;
use super::config::VaeDecoderConfig;
use super::resnet::{VaeResnet, conv3x3, group_norm, group_norm_f32};
use crate::error::{Error, Result};
use crate::reward::ImageDecoder;
use crate::tensor_util::host_values;

/// The mid block: resnet, attention, resnet at the widest block's width.
#[derive(Module, Debug)]
pub struct VaeMidBlock {
    /// The two resnets, before and after the attention.
    pub resnets: Vec<VaeResnet>,
    /// The one attention layer.
    pub attentions: Vec<VaeAttention>,
}

impl VaeMidBlock {
    /// `[B, C, H, W] → [B, C, H, W]`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut hidden = self.resnets[0].forward(input);
        for (attention, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            hidden = resnet.forward(attention.forward(hidden));
        }
        hidden
    }
}

/// Nearest-neighbour ×2 upsampling followed by a 3×3 convolution.
#[derive(Module, Debug)]
pub struct VaeUpsampler {
    /// 3×3, width preserved.
    pub conv: Conv2d,
}

impl VaeUpsampler {
    /// `[B, C, H, W] → [B, C, 2H, 2W]`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let [batch, channels, height, width] = input.dims();
        // Each pixel repeated into a 2×2 square: a broadcast and a reshape, no gather.
        let doubled = input
            .reshape([batch, channels, height, 1, width, 1])
            .expand([batch, channels, height, 2, width, 2])
            .reshape([batch, channels, 2 * height, 2 * width]);
        self.conv.forward(doubled)
    }
}

/// One resolution level: `layers_per_block + 1` resnets, then (all but the last level) an
/// upsampler.
#[derive(Module, Debug)]
pub struct VaeUpBlock {
    /// The resnets; the first changes the width from the previous level's.
    pub resnets: Vec<VaeResnet>,
    /// The upsampler, when the level has one (a list of at most one, as diffusers names it).
    pub upsamplers: Vec<VaeUpsampler>,
}

impl VaeUpBlock {
    /// `[B, C_in, H, W] → [B, C_out, 2H, 2W]` (or `[B, C_out, H, W]` at the last level).
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let hidden = self
            .resnets
            .iter()
            .fold(input, |hidden, resnet| resnet.forward(hidden));
        self.upsamplers
            .iter()
            .fold(hidden, |hidden, upsampler| upsampler.forward(hidden))
    }
}

/// The SD3 VAE decoder (diffusers' `AutoencoderKL.decoder`, parameters named as there
/// without the `decoder.` prefix). Runs in its weights' dtype, with every GroupNorm and the
/// attention scores in f32.
///
/// ```
/// use burn::prelude::*;
/// use flow_rl::models::vae::VaeDecoderConfig;
///
/// let device = Device::default();
/// let vae = VaeDecoderConfig::tiny().init(&device)?;
/// let latents = Tensor::<4>::zeros([2, 16, 4, 6], &device);
/// let pixels = vae.decode(latents.clone())?; // [2, 3, 8, 12] in [-1, 1]
/// assert_eq!(pixels.dims(), [2, 3, 8, 12]);
/// let images = vae.decode_images(latents, 1)?; // two 12×8 RGB images
/// assert_eq!(images[0].dimensions(), (12, 8));
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Module, Debug)]
pub struct VaeDecoder {
    /// 3×3, latent channels → the widest block.
    pub conv_in: Conv2d,
    /// The mid block.
    pub mid_block: VaeMidBlock,
    /// The levels, lowest resolution (widest) first.
    pub up_blocks: Vec<VaeUpBlock>,
    /// The final GroupNorm, over the first block's width.
    pub conv_norm_out: GroupNorm,
    /// 3×3, the first block's width → image channels.
    pub conv_out: Conv2d,
    /// The architecture.
    #[module(skip)]
    config: VaeDecoderConfig,
}

// Beside the model it builds, so that the configuration does not import the model.
impl VaeDecoderConfig {
    /// A decoder with random weights (checked configuration first).
    pub fn init(&self, device: &Device) -> Result<VaeDecoder> {
        self.validate()?;
        Ok(VaeDecoder::new(self.clone(), device))
    }
}

impl VaeDecoder {
    /// A decoder with random weights; `config` is assumed valid (use
    /// [`VaeDecoderConfig::init`]).
    pub(crate) fn new(config: VaeDecoderConfig, device: &Device) -> Self {
        let groups = config.norm_groups;
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let widest = reversed[0];
        let mid_block = VaeMidBlock {
            resnets: (0..2)
                .map(|_| VaeResnet::new(widest, widest, groups, device))
                .collect(),
            attentions: vec![VaeAttention::new(widest, groups, device)],
        };
        let mut previous = widest;
        let up_blocks = reversed
            .iter()
            .enumerate()
            .map(|(level, &width)| {
                let resnets = (0..=config.layers_per_block)
                    .map(|layer| {
                        let input = if layer == 0 { previous } else { width };
                        VaeResnet::new(input, width, groups, device)
                    })
                    .collect();
                previous = width;
                let upsamplers = (level + 1 < reversed.len())
                    .then(|| VaeUpsampler {
                        conv: conv3x3(width, width, device),
                    })
                    .into_iter()
                    .collect();
                VaeUpBlock {
                    resnets,
                    upsamplers,
                }
            })
            .collect();
        let narrowest = config.block_out_channels[0];
        Self {
            conv_in: conv3x3(config.latent_channels, widest, device),
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(groups, narrowest, device),
            conv_out: conv3x3(narrowest, config.out_channels, device),
            config,
        }
    }

    /// The architecture.
    pub fn config(&self) -> &VaeDecoderConfig {
        &self.config
    }

    /// The decoder with every parameter cast to `dtype` (activations follow).
    pub fn with_dtype(self, dtype: FloatDType) -> Self {
        self.map(&mut CastFloats { dtype })
    }

    /// The dtype activations run in: that of `conv_in`'s weight.
    pub fn activation_dtype(&self) -> DType {
        self.conv_in.weight.val().dtype()
    }

    /// Pixels `[B, out_channels, f·h, f·w]` (f32, clamped to [-1, 1]) of SD3 latents
    /// `[B, latent_channels, h, w]` as the transformer samples them: they are divided by
    /// the scaling factor and shifted here (`decode(z / scaling + shift)`), f being
    /// [`VaeDecoderConfig::upsampling_factor`].
    ///
    /// Fails with [`Error::ShapeMismatch`] on a wrong channel count or an empty batch or
    /// latent.
    pub fn decode(&self, latents: Tensor<4>) -> Result<Tensor<4>> {
        let dims = latents.dims();
        let [batch, channels, height, width] = dims;
        if channels != self.config.latent_channels || batch * height * width == 0 {
            return Err(Error::shape(
                "latents to decode",
                format!(
                    "[B, {}, h, w] with B, h, w ≥ 1",
                    self.config.latent_channels
                ),
                dims,
            ));
        }
        let dtype = self.activation_dtype();
        let latents =
            latents.cast(DType::F32) / self.config.scaling_factor + self.config.shift_factor;
        let hidden = self.conv_in.forward(latents.cast(dtype));
        let hidden = self.mid_block.forward(hidden);
        let hidden = self
            .up_blocks
            .iter()
            .fold(hidden, |hidden, block| block.forward(hidden));
        let hidden = silu(group_norm_f32(&self.conv_norm_out, hidden));
        Ok(self
            .conv_out
            .forward(hidden)
            .cast(DType::F32)
            .clamp(-1.0, 1.0))
    }

    /// The RGB images of latents `[B, latent_channels, h, w]`, decoded `chunk_size` at a
    /// time (memory grows with it): pixel `x` becomes `round(clamp(x/2 + 1/2, 0, 1)·255)`
    /// with ties to even, as torch rounds. Needs `out_channels` = 3.
    pub fn decode_images(&self, latents: Tensor<4>, chunk_size: usize) -> Result<Vec<RgbImage>> {
        if chunk_size == 0 {
            return Err(Error::invalid("decode chunk size", 0, "at least 1 image"));
        }
        if self.config.out_channels != 3 {
            return Err(Error::invalid(
                "out_channels",
                self.config.out_channels,
                "3 (RGB) to make images",
            ));
        }
        let batch = latents.dims()[0];
        let mut images = Vec::with_capacity(batch);
        for start in (0..batch).step_by(chunk_size) {
            let end = (start + chunk_size).min(batch);
            let pixels = self.decode(latents.clone().slice(start..end))?;
            let [count, _, height, width] = pixels.dims();
            let values = host_values(pixels)?;
            let plane = height * width;
            for image in values.chunks(3 * plane).take(count) {
                images.push(RgbImage::from_fn(width as u32, height as u32, |x, y| {
                    let pixel = y as usize * width + x as usize;
                    image::Rgb(std::array::from_fn(|channel| {
                        to_u8(image[channel * plane + pixel])
                    }))
                }));
            }
        }
        Ok(images)
    }
}

/// A pixel in [-1, 1] as a byte, rounding as torch does (ties to even).
fn to_u8(value: f32) -> u8 {
    ((value * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

impl ImageDecoder for VaeDecoder {
    fn latent_channels(&self) -> usize {
        self.config.latent_channels
    }

    fn decode_images(&self, latents: Tensor<4>, chunk_size: usize) -> Result<Vec<RgbImage>> {
        VaeDecoder::decode_images(self, latents, chunk_size)
    }
}

/// Casts every float parameter to one dtype.
struct CastFloats {
    dtype: FloatDType,
}

impl ModuleMapper for CastFloats {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.dtype;
        param.map(|tensor| tensor.cast(dtype))
    }
}
