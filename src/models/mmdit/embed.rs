//! Patch embedding with the centre-cropped positional table, the timestep's sinusoidal
//! features, and the final adaLN layer that maps tokens back to patches.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

use super::layers::{modulation, project};
use super::surrogate::layer_norm;

/// Patchifies latents `[B, C, H, W]` into tokens `[B, (H/p)·(W/p), hidden]` with a strided
/// convolution and adds the centre of the learned positional table.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// `p×p` convolution with stride `p`, `C → hidden`.
    pub proj: Conv2d,
    /// The positional table `[M·M, hidden]`, row-major over an `M×M` grid of patches.
    pub position: Param<Tensor<2>>,
    /// The table's side M.
    #[module(skip)]
    grid: usize,
}

impl PatchEmbed {
    pub(crate) fn new(
        channels: usize,
        hidden: usize,
        patch_size: usize,
        grid: usize,
        device: &Device,
    ) -> Self {
        Self {
            proj: Conv2dConfig::new([channels, hidden], [patch_size, patch_size])
                .with_stride([patch_size, patch_size])
                .init(device),
            position: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([grid * grid, hidden], device),
            grid,
        }
    }

    /// Tokens `[B, h·w, hidden]` in the given dtype for latents `[B, C, h·p, w·p]`
    /// (`h, w ≤ M`, checked by the caller).
    pub(crate) fn forward(&self, latents: Tensor<4>, dtype: burn::tensor::DType) -> Tensor<3> {
        let patches = self.proj.forward(latents.cast(dtype));
        let [batch, hidden, height, width] = patches.dims();
        let tokens = patches
            .reshape([batch, hidden, height * width])
            .swap_dims(1, 2);
        let top = (self.grid - height) / 2;
        let left = (self.grid - width) / 2;
        let position = self
            .position
            .val()
            .cast(dtype)
            .reshape([self.grid, self.grid, hidden])
            .slice(s![top..top + height, left..left + width, ..])
            .reshape([1, height * width, hidden]);
        tokens + position
    }
}

/// `[cos(t·f_i), sin(t·f_i)]` with `f_i = 10000^(−i/half)`, `i < half`: `[B] → [B, 2·half]`.
pub(crate) fn timestep_features(timestep: Tensor<1>, channels: usize) -> Tensor<2> {
    let half = channels / 2;
    let frequencies: Vec<f32> = (0..half).map(|i| timestep_frequency(i, half)).collect();
    let device = timestep.device();
    let frequencies =
        Tensor::<1>::from_data(TensorData::new(frequencies, [half]), &device).unsqueeze::<2>();
    let angles = timestep
        .cast(burn::tensor::DType::F32)
        .unsqueeze_dim::<2>(1)
        * frequencies;
    Tensor::cat(vec![angles.clone().cos(), angles.sin()], 1)
}

/// `f_i = exp(−ln(10000)·i/half)`, computed in f32 step by step as SD3 and diffusers do
/// (`exponent = −ln(10000)·arange(0, half, dtype=float32) / half`, then `exp`), so the
/// features round as the reference's do rather than as an exactly rounded f64 value would.
fn timestep_frequency(index: usize, half: usize) -> f32 {
    let log_max_period = 10_000f64.ln() as f32;
    let exponent = -log_max_period * index as f32 / half as f32;
    exponent.exp()
}

/// The final adaLN (`shift, scale`) and the projection of tokens to patches.
#[derive(Module, Debug)]
pub struct FinalLayer {
    /// `Linear(SiLU(c))`, `hidden → 2·hidden` (`shift`, then `scale`).
    pub modulation: Linear,
    /// `hidden → p·p·C_out`.
    pub proj: Linear,
}

impl FinalLayer {
    pub(crate) fn new(hidden: usize, outputs: usize, device: &Device) -> Self {
        Self {
            modulation: LinearConfig::new(hidden, 2 * hidden).init(device),
            proj: LinearConfig::new(hidden, outputs).init(device),
        }
    }

    /// Tokens `[B, T, hidden]` → patch values `[B, T, p·p·C_out]`.
    pub(crate) fn forward(&self, tokens: Tensor<3>, conditioning: &Tensor<2>) -> Tensor<3> {
        let chunks = modulation(&self.modulation, conditioning, 2);
        let input = layer_norm(tokens).modulate(chunks[0].clone(), chunks[1].clone());
        project(&self.proj, input)
    }
}
