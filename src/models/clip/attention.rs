//! Multi-head self-attention with q/k/v/out projections, under a causal (text) or
//! bidirectional (vision) mask.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::softmax;

use crate::models::mmdit::layers::project;

/// Which keys each query may attend to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionMask {
    /// Token `i` sees tokens `0..=i` (the text tower).
    Causal,
    /// Every token sees every token (a vision tower).
    Bidirectional,
}

/// Self-attention of one CLIP encoder layer.
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// Queries, `width → width`.
    pub query: Linear,
    /// Keys, `width → width`.
    pub key: Linear,
    /// Values, `width → width`.
    pub value: Linear,
    /// Output projection, `width → width`.
    pub output: Linear,
    #[module(skip)]
    heads: usize,
}

impl ClipAttention {
    pub(crate) fn new(width: usize, heads: usize, device: &Device) -> Self {
        let linear = || LinearConfig::new(width, width).init(device);
        Self {
            query: linear(),
            key: linear(),
            value: linear(),
            output: linear(),
            heads,
        }
    }

    /// `[B, T, width] → [B, T, width]`. Scores and softmax are computed in f32 whatever
    /// the weights' dtype, as bf16 scores would round the softmax's inputs.
    pub fn forward(&self, tokens: Tensor<3>, mask: AttentionMask) -> Tensor<3> {
        let dtype = tokens.dtype();
        let [batch, length, width] = tokens.dims();
        let head_dim = width / self.heads;
        let split = |linear: &Linear| {
            project(linear, tokens.clone())
                .cast(FloatDType::F32)
                .reshape([batch, length, self.heads, head_dim])
                .swap_dims(1, 2)
        };
        let (query, key, value) = (split(&self.query), split(&self.key), split(&self.value));
        let scores = query
            .matmul(key.swap_dims(2, 3))
            .mul_scalar((head_dim as f64).powf(-0.5));
        let scores = match mask {
            AttentionMask::Causal => {
                let future = Tensor::<2, Bool>::tril_mask([length, length], 0, &scores.device())
                    .unsqueeze::<4>()
                    .expand([batch, self.heads, length, length]);
                scores.mask_fill(future, f32::NEG_INFINITY)
            }
            AttentionMask::Bidirectional => scores,
        };
        let attended = softmax(scores, 3)
            .matmul(value)
            .swap_dims(1, 2)
            .reshape([batch, length, width])
            .cast(dtype);
        project(&self.output, attended)
    }
}
