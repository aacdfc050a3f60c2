//! T5's self-attention: no 1/√d scaling, a relative position bias added to the scores.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::softmax;

use crate::models::mmdit::layers::project;

/// Multi-head self-attention without biases or score scaling (T5 folds the 1/√d_kv into
/// its initialisation).
#[derive(Module, Debug)]
pub struct T5Attention {
    /// `d_model → num_heads·d_kv`.
    pub q: Linear,
    /// `d_model → num_heads·d_kv`.
    pub k: Linear,
    /// `d_model → num_heads·d_kv`.
    pub v: Linear,
    /// `num_heads·d_kv → d_model`.
    pub o: Linear,
    /// Attention heads.
    #[module(skip)]
    pub num_heads: usize,
}

impl T5Attention {
    pub(crate) fn new(d_model: usize, num_heads: usize, d_kv: usize, device: &Device) -> Self {
        let linear = |d_input, d_output| {
            LinearConfig::new(d_input, d_output)
                .with_bias(false)
                .init(device)
        };
        let inner = num_heads * d_kv;
        Self {
            q: linear(d_model, inner),
            k: linear(d_model, inner),
            v: linear(d_model, inner),
            o: linear(inner, d_model),
            num_heads,
        }
    }

    /// Tokens `[P, S, d_model]` and the score bias `[1 or P, num_heads, S, S]` (relative
    /// positions, plus a large negative value at masked keys) → `[P, S, d_model]`.
    ///
    /// Scores are computed in the weights' dtype and the softmax in f32, cast back, as
    /// `transformers` does.
    pub fn forward(&self, tokens: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let [prompts, length, _] = tokens.dims();
        let heads = |projection: &Linear| {
            project(projection, tokens.clone())
                .reshape([prompts as i32, length as i32, self.num_heads as i32, -1])
                .swap_dims(1, 2)
        };
        let (query, key, value) = (heads(&self.q), heads(&self.k), heads(&self.v));
        let dtype = query.dtype();
        let scores = query.matmul(key.swap_dims(2, 3)) + bias.cast(dtype);
        let weights = softmax(scores.cast(FloatDType::F32), 3).cast(dtype);
        let mixed =
            weights
                .matmul(value)
                .swap_dims(1, 2)
                .reshape([prompts as i32, length as i32, -1]);
        project(&self.o, mixed)
    }
}
