//! The architecture of the SD3 VAE decoder and its presets.

use burn::prelude::*;

use crate::error::{Error, Result};

/// A diffusers `AutoencoderKL` decoder as SD3 uses it: `conv_in` (3×3, latents → the widest
/// block), a mid block (resnet, single-head attention, resnet), one up block per entry of
/// `block_out_channels` in reverse order (each `layers_per_block + 1` resnets, all but the
/// last upsampling ×2), GroupNorm, SiLU and `conv_out` (3×3 → `out_channels`). No
/// post-quant convolution.
///
/// ```
/// use flow_rl::models::vae::VaeDecoderConfig;
///
/// let sd3 = VaeDecoderConfig::sd3();
/// assert_eq!((sd3.latent_channels, sd3.upsampling_factor()), (16, 8));
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct VaeDecoderConfig {
    /// The latent channel count C of `[B, C, h, w]` latents.
    #[config(default = 16)]
    pub latent_channels: usize,
    /// The image channel count (3 for RGB).
    #[config(default = 3)]
    pub out_channels: usize,
    /// The width of each resolution level, highest resolution first (diffusers' order).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level; each decoder level holds one more.
    #[config(default = 2)]
    pub layers_per_block: usize,
    /// The GroupNorm group count; divides every block width.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// Latents are divided by this before decoding.
    #[config(default = 1.5305)]
    pub scaling_factor: f64,
    /// Added to the latents after the scaling.
    #[config(default = 0.0609)]
    pub shift_factor: f64,
}

/// The epsilon of every GroupNorm in the decoder (diffusers hard-codes it).
pub const VAE_NORM_EPS: f64 = 1e-6;

impl VaeDecoderConfig {
    /// SD3 / SD3.5's VAE decoder: 16 latent channels, blocks [128, 256, 512, 512], 2 layers
    /// per block, 32 groups, scaling 1.5305, shift 0.0609 (×8 upsampling).
    pub fn sd3() -> Self {
        Self::new(vec![128, 256, 512, 512])
    }

    /// A small decoder that runs fast on a CPU (tests, `--preset tiny`): SD3's latent
    /// channels, scaling and shift, blocks [32, 32], one layer per block, 8 groups (×2).
    pub fn tiny() -> Self {
        Self::new(vec![32, 32])
            .with_layers_per_block(1)
            .with_norm_groups(8)
    }

    /// How many pixels each latent position becomes along each axis: 2^(levels − 1).
    pub fn upsampling_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks the sizes: all positive, at least one block, `norm_groups` dividing every block
    /// width, a positive finite scaling factor and a finite shift.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("latent_channels", self.latent_channels),
            ("out_channels", self.out_channels),
            ("layers_per_block", self.layers_per_block),
            ("norm_groups", self.norm_groups),
        ];
        if let Some((name, value)) = sizes.iter().find(|(_, value)| *value == 0) {
            return Err(Error::invalid(*name, value, "a positive size"));
        }
        if self.block_out_channels.is_empty() {
            return Err(Error::invalid(
                "block_out_channels",
                "[]",
                "at least one block width",
            ));
        }
        if let Some(width) = self
            .block_out_channels
            .iter()
            .find(|width| **width == 0 || !width.is_multiple_of(self.norm_groups))
        {
            return Err(Error::invalid(
                "block_out_channels",
                format!("{:?} (width {width})", self.block_out_channels),
                format!(
                    "positive widths divisible by norm_groups {}",
                    self.norm_groups
                ),
            ));
        }
        if !self.scaling_factor.is_finite() || self.scaling_factor <= 0.0 {
            return Err(Error::invalid(
                "scaling_factor",
                self.scaling_factor,
                "a positive finite factor",
            ));
        }
        if !self.shift_factor.is_finite() {
            return Err(Error::invalid(
                "shift_factor",
                self.shift_factor,
                "a finite shift",
            ));
        }
        Ok(())
    }
}
