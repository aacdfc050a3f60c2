//! The pre-LN encoder layer shared by CLIP's text and vision towers.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::FloatDType;

use super::attention::{AttentionMask, ClipAttention};
use super::config::ClipActivation;
use super::mlp::ClipMlp;

/// `x + attention(norm1(x))`, then `x + mlp(norm2(x))`.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// LayerNorm before attention.
    pub norm1: LayerNorm,
    /// Self-attention.
    pub attention: ClipAttention,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm,
    /// Feed-forward network.
    pub mlp: ClipMlp,
    #[module(skip)]
    layer_norm_eps: f64,
}

/// The sizes of one encoder layer.
#[derive(Debug, Clone, Copy)]
pub struct ClipLayerShape {
    /// Residual width.
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden width.
    pub mlp_width: usize,
    /// MLP activation.
    pub activation: ClipActivation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl ClipEncoderLayer {
    /// A layer with freshly initialised weights.
    pub fn new(shape: ClipLayerShape, device: &Device) -> Self {
        let norm = || {
            LayerNormConfig::new(shape.width)
                .with_epsilon(shape.layer_norm_eps)
                .init(device)
        };
        Self {
            norm1: norm(),
            attention: ClipAttention::new(shape.width, shape.heads, device),
            norm2: norm(),
            mlp: ClipMlp::new(shape.width, shape.mlp_width, shape.activation, device),
            layer_norm_eps: shape.layer_norm_eps,
        }
    }

    /// `[B, T, width] → [B, T, width]`.
    pub fn forward(&self, tokens: Tensor<3>, mask: AttentionMask) -> Tensor<3> {
        let attended = self.attention.forward(
            layer_norm(&self.norm1, self.layer_norm_eps, tokens.clone()),
            mask,
        );
        let tokens = tokens + attended;
        let transformed =
            self.mlp
                .forward(layer_norm(&self.norm2, self.layer_norm_eps, tokens.clone()));
        tokens + transformed
    }
}

/// LayerNorm over the last axis computed in f32 (the statistics of bf16 activations lose
/// digits otherwise), returned in the input's dtype.
pub(crate) fn layer_norm(norm: &LayerNorm, epsilon: f64, tokens: Tensor<3>) -> Tensor<3> {
    let dtype = tokens.dtype();
    let tokens = tokens.cast(FloatDType::F32);
    let (variance, mean) = tokens.clone().var_mean_bias(2);
    let normalized = (tokens - mean) / variance.add_scalar(epsilon).sqrt();
    let gamma = norm.gamma.val().cast(FloatDType::F32).unsqueeze::<3>();
    let scaled = normalized * gamma;
    let shifted = match &norm.beta {
        Some(beta) => scaled + beta.val().cast(FloatDType::F32).unsqueeze::<3>(),
        None => scaled,
    };
    shifted.cast(dtype)
}
