//! The CLIP text transformer.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use super::attention::AttentionMask;
use super::block::{ClipEncoderLayer, ClipLayerShape, layer_norm};
use super::config::{ClipTextConfig, EosPooling};
use crate::error::{Error, Result};
use crate::models::mmdit::layers::project;

/// What [`ClipTextModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// The requested hidden states `[P, T, width]` (transformers' `hidden_states[i]`).
    pub hidden: Tensor<3>,
    /// The last layer's output after the final LayerNorm, `[P, T, width]`.
    pub last_hidden: Tensor<3>,
    /// `last_hidden` at each row's end-of-text position, `[P, width]`.
    pub pooled: Tensor<2>,
    /// `pooled` through `text_projection`, `[P, projection]`.
    pub projected: Tensor<2>,
}

/// A CLIP text tower (transformers' `CLIPTextModelWithProjection`).
#[derive(Module, Debug)]
pub struct ClipTextModel {
    /// Token embedding `[vocab_size, width]`.
    pub token_embedding: Embedding,
    /// Positional embedding `[max_positions, width]`.
    pub position_embedding: Param<Tensor<2>>,
    /// The encoder layers.
    pub layers: Vec<ClipEncoderLayer>,
    /// The final LayerNorm.
    pub final_norm: LayerNorm,
    /// `width → projection`, no bias.
    pub text_projection: Linear,
    #[module(skip)]
    config: ClipTextConfig,
}

impl ClipTextModel {
    pub(crate) fn new(config: &ClipTextConfig, device: &Device) -> Self {
        let shape = ClipLayerShape {
            width: config.width,
            heads: config.heads,
            mlp_width: config.mlp_width,
            activation: config.activation,
            layer_norm_eps: config.layer_norm_eps,
        };
        Self {
            token_embedding: EmbeddingConfig::new(config.vocab_size, config.width).init(device),
            position_embedding: Param::from_tensor(Tensor::zeros(
                [config.max_positions, config.width],
                device,
            )),
            layers: (0..config.layers)
                .map(|_| ClipEncoderLayer::new(shape, device))
                .collect(),
            final_norm: LayerNormConfig::new(config.width)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            text_projection: LinearConfig::new(config.width, config.projection)
                .with_bias(false)
                .init(device),
            config: config.clone(),
        }
    }

    /// The architecture.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Encodes token ids `[P, T]` (`T ≤ max_positions`) and returns hidden states
    /// `hidden_layer` (0 = embeddings, `layers` = the last layer before the final norm;
    /// SD3.5 reads `layers - 1`), the final-normed last hidden state, the pooled output and
    /// its projection.
    pub fn forward(&self, ids: Tensor<2, Int>, hidden_layer: usize) -> Result<ClipTextOutput> {
        let config = &self.config;
        if hidden_layer > config.layers {
            return Err(Error::invalid(
                "hidden_layer",
                hidden_layer,
                format!("at most the layer count {}", config.layers),
            ));
        }
        let [rows, length] = ids.dims();
        if rows == 0 || length == 0 || length > config.max_positions {
            return Err(Error::shape(
                "ids",
                format!("[P, T] with P > 0 and 0 < T <= {}", config.max_positions),
                [rows, length],
            ));
        }
        let host = self.checked_ids(&ids)?;
        let eos = self.eos_positions(&host, length)?;

        let device = ids.device();
        let dtype = self.token_embedding.weight.val().dtype();
        let positions = self
            .position_embedding
            .val()
            .narrow(0, 0, length)
            .cast(dtype)
            .unsqueeze::<3>();
        let mut tokens = self.token_embedding.forward(ids) + positions;
        let mut hidden = (hidden_layer == 0).then(|| tokens.clone());
        for (index, layer) in self.layers.iter().enumerate() {
            tokens = layer.forward(tokens, AttentionMask::Causal);
            if index + 1 == hidden_layer {
                hidden = Some(tokens.clone());
            }
        }
        let last_hidden = layer_norm(&self.final_norm, config.layer_norm_eps, tokens);
        let flat_index: Vec<i64> = eos
            .iter()
            .enumerate()
            .map(|(row, &position)| (row * length + position) as i64)
            .collect();
        let pooled = last_hidden
            .clone()
            .reshape([rows * length, config.width])
            .select(
                0,
                Tensor::<1, Int>::from_data(flat_index.as_slice(), &device),
            );
        let projected = project(&self.text_projection, pooled.clone());
        Ok(ClipTextOutput {
            hidden: hidden.expect("hidden_layer is checked to be at most the layer count"),
            last_hidden,
            pooled,
            projected,
        })
    }

    /// The ids on the host, each checked to lie in the vocabulary.
    fn checked_ids(&self, ids: &Tensor<2, Int>) -> Result<Vec<i64>> {
        let host: Vec<i64> = ids
            .to_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|err| Error::TensorRead(format!("{err:?}")))?;
        let vocab = self.config.vocab_size as i64;
        if let Some((index, id)) = host
            .iter()
            .enumerate()
            .find(|(_, id)| !(0..vocab).contains(*id))
        {
            return Err(Error::invalid(
                format!("ids[{index}]"),
                id,
                format!("a token id in 0..{vocab}"),
            ));
        }
        Ok(host)
    }

    /// Each row's pooled position under the configured rule.
    fn eos_positions(&self, host: &[i64], length: usize) -> Result<Vec<usize>> {
        host.chunks(length)
            .enumerate()
            .map(|(row, ids)| match self.config.pooling {
                EosPooling::HighestId => {
                    let highest = ids.iter().max().copied().unwrap_or(0);
                    Ok(ids.iter().position(|&id| id == highest).unwrap_or(0))
                }
                EosPooling::FirstOf(eos) => {
                    ids.iter().position(|&id| id == eos as i64).ok_or_else(|| {
                        Error::invalid(
                            format!("ids row {row}"),
                            format!("{ids:?}"),
                            format!("a row holding the end-of-text id {eos}"),
                        )
                    })
                }
            })
            .collect()
    }
}
