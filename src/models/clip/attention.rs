//! Multi-head self-attention with separate q/k/v projections, causal (text tower) or
//! bidirectional (vision tower).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::models::mmdit::layers::project;

/// Which keys each query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionMask {
    /// Each position sees itself and the positions before it (the text tower).
    Causal,
    /// Every position sees every position (a vision tower).
    Bidirectional,
}

/// Self-attention `q_proj`, `k_proj`, `v_proj`, `out_proj` (all `width → width`, biased).
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// Queries.
    pub q_proj: Linear,
    /// Keys.
    pub k_proj: Linear,
    /// Values.
    pub v_proj: Linear,
    /// The output projection.
    pub out_proj: Linear,
    /// The number of heads.
    #[module(skip)]
    heads: usize,
}

impl ClipAttention {
    /// Attention over `width` features in `heads` heads (`heads` divides `width`).
    pub fn new(width: usize, heads: usize, device: &Device) -> Self {
        let linear = || LinearConfig::new(width, width).init(device);
        Self {
            q_proj: linear(),
            k_proj: linear(),
            v_proj: linear(),
            out_proj: linear(),
            heads,
        }
    }

    /// `[B, T, width] → [B, T, width]`. The projections run in the weights' dtype; the
    /// scores and their softmax in f32, so that bf16 weights lose no precision there.
    pub fn forward(&self, tokens: Tensor<3>, mask: AttentionMask) -> Tensor<3> {
        let [batch, length, width] = tokens.dims();
        let heads = |linear: &Linear| {
            project(linear, tokens.clone())
                .cast(DType::F32)
                .reshape([batch, length, self.heads, width / self.heads])
                .swap_dims(1, 2)
        };
        let options = AttentionModuleOptions {
            is_causal: mask == AttentionMask::Causal,
            ..AttentionModuleOptions::default()
        };
        let attended = attention(
            heads(&self.q_proj),
            heads(&self.k_proj),
            heads(&self.v_proj),
            None,
            None,
            options,
        );
        let merged = attended.swap_dims(1, 2).reshape([batch, length, width]);
        project(&self.out_proj, merged.cast(tokens.dtype()))
    }
}
