//! The T5 encoder: token embedding, blocks sharing one position bias, final norm.

use burn::module::{Module, Param};
use burn::prelude::*;

use super::block::T5Block;
use super::config::T5Config;
use super::norm::T5LayerNorm;
use super::position_bias::RelativePositionBias;
use crate::error::{Error, Result};

/// The score given to masked keys: far below any real score yet finite in f32 and bf16, so
/// that softmax gives them zero weight without NaNs.
const MASKED_SCORE: f32 = -1e30;

/// A T5 v1.1 encoder stack, as `transformers`' `T5EncoderModel`; its
/// [`forward`](Self::forward) returns the last hidden state.
///
/// Build one with [`T5Config::init`] (random) or load one with
/// [`T5Weights::load`](super::T5Weights::load).
#[derive(Module, Debug)]
pub struct T5Encoder {
    /// The token embedding `[vocab_size, d_model]` (`shared.weight`), not scaled.
    pub embed_tokens: Param<Tensor<2>>,
    /// The relative position bias, owned by the first block in PyTorch and shared by all.
    pub position_bias: RelativePositionBias,
    /// The encoder blocks.
    pub blocks: Vec<T5Block>,
    /// The norm after the last block.
    pub final_norm: T5LayerNorm,
    /// The architecture.
    #[module(skip)]
    pub(crate) config: T5Config,
}

impl T5Encoder {
    pub(crate) fn new(config: &T5Config, device: &Device) -> Self {
        let embed = Tensor::random(
            [config.vocab_size, config.d_model],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            device,
        );
        Self {
            embed_tokens: Param::from_tensor(embed),
            position_bias: RelativePositionBias::new(
                config.relative_attention_num_buckets,
                config.num_heads,
                config.relative_attention_max_distance,
                device,
            ),
            blocks: (0..config.num_layers)
                .map(|_| T5Block::new(config, device))
                .collect(),
            final_norm: T5LayerNorm::new(config.d_model, config.layer_norm_epsilon, device),
            config: config.clone(),
        }
    }

    /// The architecture.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// The vocabulary size (rows of the embedding).
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.val().dims()[0]
    }

    /// Token ids `[P, S]` → the last hidden state `[P, S, d_model]`, in the weights' dtype.
    ///
    /// `mask` `[P, S]` (true for real tokens) keeps padding keys out of attention. SD3's
    /// pipeline passes none (`text_encoder_3(input_ids)`), so padding tokens are attended
    /// to and their outputs are part of the condition: pass `None` to reproduce it.
    ///
    /// Fails on an empty `ids`, an id outside the vocabulary, or a mask of another shape.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<Tensor<2, Bool>>) -> Result<Tensor<3>> {
        let [prompts, length] = ids.dims();
        let vocab_size = self.vocab_size();
        if prompts * length == 0 {
            return Err(Error::shape(
                "ids",
                "[P, S] with P, S ≥ 1",
                [prompts, length],
            ));
        }
        let largest: i64 = ids.clone().max().into_scalar::<i64>();
        let smallest: i64 = ids.clone().min().into_scalar::<i64>();
        if smallest < 0 || largest >= vocab_size as i64 {
            return Err(Error::invalid(
                "token id",
                if smallest < 0 { smallest } else { largest },
                format!("ids in 0..{vocab_size} (the embedding's rows)"),
            ));
        }
        let bias = self.position_bias.forward(length);
        let bias = match mask {
            None => bias,
            Some(mask) => {
                if mask.dims() != [prompts, length] {
                    return Err(Error::shape(
                        "mask",
                        format!("[{prompts}, {length}] like ids"),
                        mask.dims(),
                    ));
                }
                let [_, heads, _, _] = bias.dims();
                let masked_keys = mask
                    .bool_not()
                    .reshape([prompts, 1, 1, length])
                    .expand([prompts, heads, length, length]);
                bias.expand([prompts, heads, length, length])
                    .mask_fill(masked_keys, MASKED_SCORE)
            }
        };
        let flat = ids.reshape([prompts * length]);
        let mut tokens = self.embed_tokens.val().select(0, flat).reshape([
            prompts,
            length,
            self.embed_tokens.val().dims()[1],
        ]);
        for block in &self.blocks {
            tokens = block.forward(tokens, bias.clone());
        }
        Ok(self.final_norm.forward(tokens))
    }
}
