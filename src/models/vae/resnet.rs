//! The decoder's residual block and the GroupNorm every block uses, computed in f32.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::silu;

use super::config::VAE_NORM_EPS;

/// A 3×3 convolution with one pixel of zero padding, `input → output` channels.
pub(crate) fn conv3x3(input: usize, output: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([input, output], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// A GroupNorm of `channels` in `groups` with the decoder's epsilon.
pub(crate) fn group_norm(groups: usize, channels: usize, device: &Device) -> GroupNorm {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(VAE_NORM_EPS)
        .init(device)
}

/// `norm` applied to `[B, C, H, W]`, computed in f32 whatever the weights' dtype (a bf16
/// variance over thousands of pixels loses too much), returned in the input's dtype.
pub(crate) fn group_norm_f32(norm: &GroupNorm, input: Tensor<4>) -> Tensor<4> {
    let dtype = input.dtype();
    let [batch, channels, height, width] = input.dims();
    let groups = norm.num_groups;
    let grouped =
        input
            .cast(DType::F32)
            .reshape([batch, groups, channels / groups * height * width]);
    let (variance, mean) = grouped.clone().var_mean_bias(2);
    let normalised = ((grouped - mean) / (variance + norm.epsilon).sqrt())
        .reshape([batch, channels, height, width]);
    let per_channel =
        |param: &Tensor<1>| param.clone().cast(DType::F32).reshape([1, channels, 1, 1]);
    let scaled = match &norm.gamma {
        Some(gamma) => normalised * per_channel(&gamma.val()),
        None => normalised,
    };
    let shifted = match &norm.beta {
        Some(beta) => scaled + per_channel(&beta.val()),
        None => scaled,
    };
    shifted.cast(dtype)
}

/// diffusers' `ResnetBlock2D` without a time embedding: `norm1 → SiLU → conv1 → norm2 →
/// SiLU → conv2`, added to the input (through a 1×1 `conv_shortcut` when the width changes).
#[derive(Module, Debug)]
pub struct VaeResnet {
    /// The first GroupNorm, over the input width.
    pub norm1: GroupNorm,
    /// 3×3, input → output width.
    pub conv1: Conv2d,
    /// The second GroupNorm, over the output width.
    pub norm2: GroupNorm,
    /// 3×3, output → output width.
    pub conv2: Conv2d,
    /// 1×1, input → output width; only when they differ.
    pub conv_shortcut: Option<Conv2d>,
}

impl VaeResnet {
    /// A block from `input` to `output` channels with `groups` norm groups.
    pub fn new(input: usize, output: usize, groups: usize, device: &Device) -> Self {
        Self {
            norm1: group_norm(groups, input, device),
            conv1: conv3x3(input, output, device),
            norm2: group_norm(groups, output, device),
            conv2: conv3x3(output, output, device),
            conv_shortcut: (input != output)
                .then(|| Conv2dConfig::new([input, output], [1, 1]).init(device)),
        }
    }

    /// `[B, input, H, W] → [B, output, H, W]`, in the weights' dtype.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let hidden = self
            .conv1
            .forward(silu(group_norm_f32(&self.norm1, input.clone())));
        let hidden = self
            .conv2
            .forward(silu(group_norm_f32(&self.norm2, hidden)));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(input),
            None => input,
        };
        shortcut + hidden
    }
}
