//! The mid block's single-head spatial self-attention.

use burn::module::Module;
use burn::nn::{GroupNorm, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::resnet::{group_norm, group_norm_f32};

/// diffusers' VAE `Attention`: GroupNorm, one head as wide as the channels over every pixel,
/// an output projection and a residual connection.
#[derive(Module, Debug)]
pub struct VaeAttention {
    /// The GroupNorm before the projections.
    pub group_norm: GroupNorm,
    /// Queries, `C → C`.
    pub to_q: Linear,
    /// Keys, `C → C`.
    pub to_k: Linear,
    /// Values, `C → C`.
    pub to_v: Linear,
    /// The output projection `C → C` (a one-entry list to match diffusers' `to_out.0`).
    pub to_out: Vec<Linear>,
}

impl VaeAttention {
    /// Attention over `channels` features with `groups` norm groups.
    pub fn new(channels: usize, groups: usize, device: &Device) -> Self {
        let linear = || LinearConfig::new(channels, channels).init(device);
        Self {
            group_norm: group_norm(groups, channels, device),
            to_q: linear(),
            to_k: linear(),
            to_v: linear(),
            to_out: vec![linear()],
        }
    }

    /// `[B, C, H, W] → [B, C, H, W]`. The projections run in the weights' dtype, the scores
    /// and their softmax in f32.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let dtype = input.dtype();
        let [batch, channels, height, width] = input.dims();
        let pixels = group_norm_f32(&self.group_norm, input.clone())
            .reshape([batch, channels, height * width])
            .swap_dims(1, 2);
        let head = |linear: &Linear| {
            linear
                .forward(pixels.clone())
                .cast(DType::F32)
                .unsqueeze_dim::<4>(1)
        };
        let attended = attention(
            head(&self.to_q),
            head(&self.to_k),
            head(&self.to_v),
            None,
            None,
            AttentionModuleOptions::default(),
        )
        .squeeze_dim::<3>(1)
        .cast(dtype);
        let projected = self
            .to_out
            .iter()
            .fold(attended, |hidden, linear| linear.forward(hidden));
        let spatial = projected
            .swap_dims(1, 2)
            .reshape([batch, channels, height, width]);
        spatial + input
    }
}
