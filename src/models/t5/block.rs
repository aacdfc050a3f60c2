//! One T5 encoder block: pre-norm self-attention and gated-GELU feed-forward, each added to
//! the residual stream.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::attention::T5Attention;
use super::norm::T5LayerNorm;
use crate::models::mmdit::layers::project;
use crate::models::mmdit::surrogate::gelu_tanh;

/// T5 v1.1's feed-forward: `wo(gelu_tanh(wi_0·x) ⊙ wi_1·x)`, without biases.
#[derive(Module, Debug)]
pub struct T5FeedForward {
    /// The gated branch, `d_model → d_ff`.
    pub wi_0: Linear,
    /// The linear branch, `d_model → d_ff`.
    pub wi_1: Linear,
    /// `d_ff → d_model`.
    pub wo: Linear,
}

impl T5FeedForward {
    pub(crate) fn new(d_model: usize, d_ff: usize, device: &Device) -> Self {
        let linear = |d_input, d_output| {
            LinearConfig::new(d_input, d_output)
                .with_bias(false)
                .init(device)
        };
        Self {
            wi_0: linear(d_model, d_ff),
            wi_1: linear(d_model, d_ff),
            wo: linear(d_ff, d_model),
        }
    }

    /// `[P, S, d_model] → [P, S, d_model]`.
    pub fn forward(&self, tokens: Tensor<3>) -> Tensor<3> {
        let gate = gelu_tanh(project(&self.wi_0, tokens.clone()));
        project(&self.wo, gate * project(&self.wi_1, tokens))
    }
}

/// Self-attention then feed-forward, each behind its own RMS norm and added back.
#[derive(Module, Debug)]
pub struct T5Block {
    /// Normalises the attention's input (`layer.0.layer_norm`).
    pub attention_norm: T5LayerNorm,
    /// `layer.0.SelfAttention`.
    pub attention: T5Attention,
    /// Normalises the feed-forward's input (`layer.1.layer_norm`).
    pub feed_forward_norm: T5LayerNorm,
    /// `layer.1.DenseReluDense`.
    pub feed_forward: T5FeedForward,
}

impl T5Block {
    pub(crate) fn new(config: &super::T5Config, device: &Device) -> Self {
        let norm = || T5LayerNorm::new(config.d_model, config.layer_norm_epsilon, device);
        Self {
            attention_norm: norm(),
            attention: T5Attention::new(config.d_model, config.num_heads, config.d_kv, device),
            feed_forward_norm: norm(),
            feed_forward: T5FeedForward::new(config.d_model, config.d_ff, device),
        }
    }

    /// Tokens `[P, S, d_model]` and the shared score bias `[1 or P, heads, S, S]` →
    /// `[P, S, d_model]`.
    pub fn forward(&self, tokens: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let attended = self
            .attention
            .forward(self.attention_norm.forward(tokens.clone()), bias);
        let tokens = tokens + attended;
        let transformed = self
            .feed_forward
            .forward(self.feed_forward_norm.forward(tokens.clone()));
        tokens + transformed
    }
}
