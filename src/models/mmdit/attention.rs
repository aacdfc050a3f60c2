//! Attention projections with optional per-head RMSNorm, and joint attention over two
//! token streams.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

use super::layers::project;
use super::surrogate;

/// The q/k/v (and output) projections of one token stream, with optional RMSNorm of each
/// head's queries and keys (SD3.5).
#[derive(Module, Debug)]
pub struct AttentionProjections {
    /// Queries, `hidden → hidden`.
    pub query: Linear,
    /// Keys, `hidden → hidden`.
    pub key: Linear,
    /// Values, `hidden → hidden`.
    pub value: Linear,
    /// RMSNorm weight `[head_dim]` of the queries, when qk-norm is on.
    pub query_norm: Option<Param<Tensor<1>>>,
    /// RMSNorm weight `[head_dim]` of the keys, when qk-norm is on.
    pub key_norm: Option<Param<Tensor<1>>>,
    /// The output projection; absent on the last block's context side, whose attention
    /// output is discarded.
    pub output: Option<Linear>,
    /// The number of heads.
    #[module(skip)]
    heads: usize,
}

impl AttentionProjections {
    pub(crate) fn new(
        heads: usize,
        head_dim: usize,
        qk_norm: bool,
        with_output: bool,
        device: &Device,
    ) -> Self {
        let hidden = heads * head_dim;
        let linear = || LinearConfig::new(hidden, hidden).init(device);
        let norm = || qk_norm.then(|| Initializer::Ones.init([head_dim], device));
        Self {
            query: linear(),
            key: linear(),
            value: linear(),
            query_norm: norm(),
            key_norm: norm(),
            output: with_output.then(linear),
            heads,
        }
    }

    /// Queries, keys and values `[B, heads, T, head_dim]` of tokens `[B, T, hidden]`.
    pub(crate) fn qkv(&self, tokens: Tensor<3>) -> [Tensor<4>; 3] {
        let query = self.split_heads(project(&self.query, tokens.clone()));
        let key = self.split_heads(project(&self.key, tokens.clone()));
        let value = self.split_heads(project(&self.value, tokens));
        [
            rms_norm(query, self.query_norm.as_ref()),
            rms_norm(key, self.key_norm.as_ref()),
            value,
        ]
    }

    /// The output projection of attended tokens `[B, T, hidden]`, or the tokens themselves
    /// where there is none.
    pub(crate) fn project_output(&self, tokens: Tensor<3>) -> Tensor<3> {
        match &self.output {
            Some(output) => project(output, tokens),
            None => tokens,
        }
    }

    /// Self-attention of tokens `[B, T, hidden]`, output projection included.
    pub(crate) fn self_attention(&self, tokens: Tensor<3>) -> Tensor<3> {
        let [query, key, value] = self.qkv(tokens);
        self.project_output(merge_heads(surrogate::attention(query, key, value)))
    }

    fn split_heads(&self, tokens: Tensor<3>) -> Tensor<4> {
        let [batch, length, hidden] = tokens.dims();
        tokens
            .reshape([batch, length, self.heads, hidden / self.heads])
            .swap_dims(1, 2)
    }
}

/// RMSNorm over the head dimension, computed in f32, when a weight is given.
fn rms_norm(heads: Tensor<4>, weight: Option<&Param<Tensor<1>>>) -> Tensor<4> {
    match weight {
        Some(weight) => surrogate::rms_norm(heads, weight.val()),
        None => heads,
    }
}

/// `[B, heads, T, head_dim] → [B, T, heads·head_dim]`.
fn merge_heads(heads: Tensor<4>) -> Tensor<3> {
    let [batch, count, length, head_dim] = heads.dims();
    heads
        .swap_dims(1, 2)
        .reshape([batch, length, count * head_dim])
}

/// Joint attention: both streams attend over their concatenated tokens. Returns the attended
/// context `[B, L, hidden]` and image `[B, T, hidden]` tokens, before output projections.
pub(crate) fn joint_attention(context: [Tensor<4>; 3], image: [Tensor<4>; 3]) -> [Tensor<3>; 2] {
    let context_length = context[0].dims()[2];
    let image_length = image[0].dims()[2];
    let [context_q, context_k, context_v] = context;
    let [image_q, image_k, image_v] = image;
    let attended = merge_heads(surrogate::attention(
        Tensor::cat(vec![context_q, image_q], 2),
        Tensor::cat(vec![context_k, image_k], 2),
        Tensor::cat(vec![context_v, image_v], 2),
    ));
    [
        attended.clone().narrow(1, 0, context_length),
        attended.narrow(1, context_length, image_length),
    ]
}
