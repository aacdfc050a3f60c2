//! The CLIP text transformer and its outputs.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::DType;

use super::attention::AttentionMask;
use super::block::{ClipEncoderLayer, layer_norm};
use super::config::{ClipPooling, ClipTextConfig};
use crate::error::{Error, Result};
use crate::models::mmdit::layers::project;

/// What [`ClipTextModel::forward`] returns, in f32 whatever the weights' dtype.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// The requested hidden state `[P, T, width]`, numbered as transformers'
    /// `hidden_states[i]`: 0 is the embeddings, `i` the output of layer `i` (before the final
    /// LayerNorm). SD3 takes the penultimate, `layers - 1`.
    pub hidden: Tensor<3>,
    /// The last layer's output after the final LayerNorm `[P, T, width]`.
    pub last_hidden: Tensor<3>,
    /// `last_hidden` at each prompt's end-of-text position `[P, width]`.
    pub pooled: Tensor<2>,
    /// `pooled` through `text_projection` `[P, projection]`: SD3's pooled condition.
    pub projected: Tensor<2>,
}

/// A CLIP text transformer (transformers' `CLIPTextModelWithProjection`).
///
/// ```
/// use burn::prelude::*;
/// use flow_rl::models::clip::{ClipActivation, ClipPooling, ClipTextConfig};
///
/// let device = Device::default();
/// let config = ClipTextConfig::new(16, 2, 2, 32, ClipActivation::Gelu, 8, ClipPooling::FirstId(99))
///     .with_vocab_size(100);
/// let model = config.init(&device)?;
/// let ids = Tensor::<2, Int>::from_ints([[98, 5, 7, 99, 0], [98, 99, 0, 0, 0]], &device);
/// let output = model.forward(ids, model.penultimate_layer())?;
/// assert_eq!(output.hidden.dims(), [2, 5, 16]);
/// assert_eq!(output.projected.dims(), [2, 8]);
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Module, Debug)]
pub struct ClipTextModel {
    /// Token embeddings `[vocab_size, width]`.
    pub token_embedding: Embedding,
    /// Positional embeddings `[max_positions, width]`.
    pub position_embedding: Embedding,
    /// The encoder layers.
    pub layers: Vec<ClipEncoderLayer>,
    /// The LayerNorm after the last layer.
    pub final_layer_norm: LayerNorm,
    /// `width → projection`, without bias.
    pub text_projection: Linear,
    /// The architecture.
    #[module(skip)]
    config: ClipTextConfig,
}

impl ClipTextModel {
    pub(crate) fn new(config: ClipTextConfig, device: &Device) -> Self {
        let layers = (0..config.layers)
            .map(|_| {
                ClipEncoderLayer::new(
                    config.width,
                    config.heads,
                    config.mlp_width,
                    config.activation,
                    config.layer_norm_eps,
                    device,
                )
            })
            .collect();
        Self {
            token_embedding: EmbeddingConfig::new(config.vocab_size, config.width).init(device),
            position_embedding: EmbeddingConfig::new(config.max_positions, config.width)
                .init(device),
            layers,
            final_layer_norm: LayerNormConfig::new(config.width)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            text_projection: LinearConfig::new(config.width, config.projection)
                .with_bias(false)
                .init(device),
            config,
        }
    }

    /// The architecture.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// The index of the penultimate hidden state (`layers - 1`), which SD3 conditions on.
    pub fn penultimate_layer(&self) -> usize {
        self.config.layers - 1
    }

    /// Encodes token ids `[P, T]` (`T <= max_positions`, each row holding its end-of-text
    /// token) and returns hidden state `hidden_layer` (`0..=layers`) with the pooled outputs.
    ///
    /// Fails with [`Error::InvalidArgument`] for a layer index out of range, an id outside
    /// the vocabulary or a row without end-of-text token, and [`Error::ShapeMismatch`] for
    /// an empty or too long sequence.
    pub fn forward(&self, ids: Tensor<2, Int>, hidden_layer: usize) -> Result<ClipTextOutput> {
        let [prompts, length] = ids.dims();
        let host_ids = self.checked_ids(&ids, hidden_layer)?;
        let end_positions = self.end_positions(&host_ids, prompts, length)?;

        let device = ids.device();
        let tokens = self
            .token_embedding
            .weight
            .val()
            .select(0, ids.flatten::<1>(0, 1));
        let tokens = tokens.reshape([prompts, length, self.config.width]);
        let positions = self.position_embedding.weight.val().narrow(0, 0, length);
        let mut hidden = (tokens + positions.unsqueeze::<3>()).cast(DType::F32);
        let mut requested = (hidden_layer == 0).then(|| hidden.clone());
        for (index, layer) in self.layers.iter().enumerate() {
            hidden = layer.forward(hidden, AttentionMask::Causal);
            if index + 1 == hidden_layer {
                requested = Some(hidden.clone());
            }
        }
        let last_hidden = layer_norm(&self.final_layer_norm, hidden, self.config.layer_norm_eps);

        let rows: Vec<i64> = end_positions
            .iter()
            .enumerate()
            .map(|(prompt, &position)| (prompt * length + position) as i64)
            .collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [prompts]), &device);
        let pooled = last_hidden
            .clone()
            .reshape([prompts * length, self.config.width])
            .select(0, rows);
        let projected = project(&self.text_projection, pooled.clone());
        Ok(ClipTextOutput {
            hidden: requested.expect("the layer index was checked to be in range"),
            last_hidden,
            pooled,
            projected,
        })
    }

    /// The ids on the host, after checking the layer index, the shape and the id range.
    fn checked_ids(&self, ids: &Tensor<2, Int>, hidden_layer: usize) -> Result<Vec<i64>> {
        if hidden_layer > self.config.layers {
            return Err(Error::invalid(
                "hidden_layer",
                hidden_layer,
                format!(
                    "0 (embeddings) to {} (the last layer) for a {}-layer CLIP",
                    self.config.layers, self.config.layers
                ),
            ));
        }
        let [prompts, length] = ids.dims();
        if prompts == 0 || length == 0 || length > self.config.max_positions {
            return Err(Error::shape(
                "ids",
                format!(
                    "[P, T] with P >= 1 and 1 <= T <= {}",
                    self.config.max_positions
                ),
                [prompts, length],
            ));
        }
        let host: Vec<i64> = ids
            .clone()
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|err| Error::TensorRead(format!("{err:?}")))?;
        if let Some((index, id)) = host
            .iter()
            .enumerate()
            .find(|&(_, &id)| id < 0 || id as usize >= self.config.vocab_size)
        {
            return Err(Error::invalid(
                format!("ids[{}][{}]", index / length, index % length),
                id,
                format!("a token id in 0..{}", self.config.vocab_size),
            ));
        }
        Ok(host)
    }

    /// Each prompt's end-of-text position, by the configured pooling rule.
    fn end_positions(&self, ids: &[i64], prompts: usize, length: usize) -> Result<Vec<usize>> {
        (0..prompts)
            .map(|prompt| {
                let row = &ids[prompt * length..(prompt + 1) * length];
                let position = match self.config.pooling {
                    // The first maximum, as torch's argmax picks it.
                    ClipPooling::HighestId => row
                        .iter()
                        .enumerate()
                        .fold(
                            None,
                            |best: Option<(usize, i64)>, (index, &id)| match best {
                                Some((_, top)) if top >= id => best,
                                _ => Some((index, id)),
                            },
                        )
                        .map(|(index, _)| index),
                    ClipPooling::FirstId(eos) => row.iter().position(|&id| id as usize == eos),
                };
                position.ok_or_else(|| {
                    Error::invalid(
                        format!("ids[{prompt}]"),
                        format!("{row:?}"),
                        format!(
                            "a row holding the end-of-text token ({:?})",
                            self.config.pooling
                        ),
                    )
                })
            })
            .collect()
    }
}

impl ClipTextConfig {
    /// A model with this architecture and freshly initialised f32 weights (load real ones
    /// with [`ClipTextWeights::load_into`](super::ClipTextWeights::load_into)).
    pub fn init(&self, device: &Device) -> Result<ClipTextModel> {
        self.validate()?;
        Ok(ClipTextModel::new(self.clone(), device))
    }
}
