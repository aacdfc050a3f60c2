//! The pre-LayerNorm encoder layer shared by CLIP's text and vision towers.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::DType;

use super::attention::{AttentionMask, ClipAttention};
use super::mlp::{ClipActivation, ClipMlp};

/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// The self-attention.
    pub self_attn: ClipAttention,
    /// The LayerNorm before the attention.
    pub layer_norm1: LayerNorm,
    /// The MLP.
    pub mlp: ClipMlp,
    /// The LayerNorm before the MLP.
    pub layer_norm2: LayerNorm,
    /// The LayerNorms' epsilon.
    #[module(skip)]
    eps: f64,
}

impl ClipEncoderLayer {
    /// A layer of `width` features, `heads` heads and an MLP of `mlp_width`.
    pub fn new(
        width: usize,
        heads: usize,
        mlp_width: usize,
        activation: ClipActivation,
        eps: f64,
        device: &Device,
    ) -> Self {
        let norm = || LayerNormConfig::new(width).with_epsilon(eps).init(device);
        Self {
            self_attn: ClipAttention::new(width, heads, device),
            layer_norm1: norm(),
            mlp: ClipMlp::new(width, mlp_width, activation, device),
            layer_norm2: norm(),
            eps,
        }
    }

    /// `[B, T, width] → [B, T, width]`; the residual stream keeps the input's dtype.
    pub fn forward(&self, tokens: Tensor<3>, mask: AttentionMask) -> Tensor<3> {
        let attended = self.self_attn.forward(
            layer_norm(&self.layer_norm1, tokens.clone(), self.eps),
            mask,
        );
        let tokens = tokens + attended;
        let transformed = self
            .mlp
            .forward(layer_norm(&self.layer_norm2, tokens.clone(), self.eps));
        tokens + transformed
    }
}

/// LayerNorm over the last axis, computed in f32 whatever the weights' dtype, returned in
/// the input's dtype.
pub(crate) fn layer_norm(norm: &LayerNorm, tokens: Tensor<3>, eps: f64) -> Tensor<3> {
    let dtype = tokens.dtype();
    let tokens = tokens.cast(DType::F32);
    let (variance, mean) = tokens.clone().var_mean_bias(2);
    let normalised = (tokens - mean) / (variance + eps).sqrt();
    let gamma = norm.gamma.val().cast(DType::F32).unsqueeze::<3>();
    let scaled = normalised * gamma;
    let shifted = match &norm.beta {
        Some(beta) => scaled + beta.val().cast(DType::F32).unsqueeze::<3>(),
        None => scaled,
    };
    shifted.cast(dtype)
}
