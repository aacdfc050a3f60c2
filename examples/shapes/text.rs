//! The text encoder: a word-level tokenizer over the closed vocabulary and a tiny CLIP text
//! transformer with seeded random weights, frozen, giving the MMDiT's `context` and `pooled`.
//!
//! The CLIP is [`text_config`]: width 32, 2 layers of 2 heads, MLP 64, exact GELU, projection
//! 32, over [`CONTEXT_LENGTH`] = 16 positions. `context` is its last hidden state after the
//! final LayerNorm (unit scale per token, where the unnormalised penultimate state SD3 uses
//! would carry the random embeddings' scale), `pooled` the projected end-of-text state.
//! [`mmdit_config`] is the small MMDiT these widths are chosen for.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use flow_rl::models::clip::{ClipActivation, ClipPooling, ClipTextConfig, ClipTextModel};
use flow_rl::models::mmdit::{MmditConfig, PromptEmbeddings};
use flow_rl::{Error, Result, Rng};

use crate::prompt::{vocabulary, words};
use crate::world::IMAGE_SIZE;

/// Tokens per prompt: BOS, up to 14 words (the longest prompt has 11), EOS, then padding.
pub const CONTEXT_LENGTH: usize = 16;
/// The width of a `context` token, the MMDiT's `context_dim`.
pub const CONTEXT_DIM: usize = 32;
/// The width of `pooled`, the MMDiT's `pooled_dim`.
pub const POOLED_DIM: usize = 32;

/// The padding token's id.
pub const PAD_ID: u32 = 0;
/// The start-of-text token's id.
pub const BOS_ID: u32 = 1;
/// The end-of-text token's id; the pooled output is read at its position.
pub const EOS_ID: u32 = 2;
/// The id of the vocabulary's first word; word `i` of [`vocabulary`] has id `FIRST_WORD_ID + i`.
const FIRST_WORD_ID: u32 = 3;

/// Std of the random token and position embeddings (unit scale, so that prompts differing
/// in one word differ clearly after the pre-LayerNorm layers).
const EMBEDDING_STD: f64 = 1.0;

/// Token ids `[BOS, words.., EOS, PAD..]` of length [`CONTEXT_LENGTH`] for a prompt. Fails
/// naming an unknown word (with the vocabulary), or when the prompt is empty or too long.
pub fn tokenize(prompt: &str) -> Result<Vec<u32>> {
    let vocabulary = vocabulary();
    let words = words(prompt)?;
    if words.is_empty() || words.len() + 2 > CONTEXT_LENGTH {
        return Err(Error::InvalidArgument {
            name: "words in prompt".into(),
            value: format!("{} in {prompt:?}", words.len()),
            expected: format!("1 to {} words", CONTEXT_LENGTH - 2),
        });
    }
    let mut ids = vec![BOS_ID];
    for word in &words {
        let index = vocabulary
            .iter()
            .position(|known| known == word)
            .expect("words() keeps only vocabulary words");
        ids.push(FIRST_WORD_ID + index as u32);
    }
    ids.push(EOS_ID);
    ids.resize(CONTEXT_LENGTH, PAD_ID);
    Ok(ids)
}

/// The tiny CLIP's architecture: vocabulary of the special tokens and the words, 16
/// positions, width [`CONTEXT_DIM`], 2 layers, 2 heads, MLP 64, GELU, projection
/// [`POOLED_DIM`], pooled at the end-of-text token.
pub fn text_config() -> ClipTextConfig {
    ClipTextConfig::new(
        CONTEXT_DIM,
        2,
        2,
        2 * CONTEXT_DIM,
        ClipActivation::Gelu,
        POOLED_DIM,
        ClipPooling::FirstId(EOS_ID as usize),
    )
    .with_vocab_size(FIRST_WORD_ID as usize + vocabulary().len())
    .with_max_positions(CONTEXT_LENGTH)
}

/// The MMDiT proposed for this world, in pixel space: 4 joint blocks of width 64 (4 heads of
/// 16) with qk-norm, 3 channels in and out, 4×4 patches (64 image tokens for 32×32), an 8²
/// positional table, and text widths [`CONTEXT_DIM`] and [`POOLED_DIM`]: 579,248 parameters,
/// 2.3 MB in f32, small enough to commit a pre-trained checkpoint. (2×2 patches, 256 image
/// tokens, train about 4.5 times slower per step on a CPU and learn less per second.)
pub fn mmdit_config() -> MmditConfig {
    MmditConfig::new(4, 4)
        .with_head_dim(16)
        .with_in_channels(3)
        .with_out_channels(3)
        .with_patch_size(4)
        .with_pos_embed_max_size(IMAGE_SIZE / 4)
        .with_context_dim(CONTEXT_DIM)
        .with_pooled_dim(POOLED_DIM)
        .with_timestep_channels(64)
        .with_qk_norm(true)
}

/// The frozen text encoder.
#[derive(Debug)]
pub struct TextEncoder {
    model: ClipTextModel,
}

impl TextEncoder {
    /// The [`text_config`] CLIP with weights drawn from `seed` alone: embeddings and linear
    /// weights Gaussian (embeddings std 1, linear weights std `1/√fan_in`), biases 0,
    /// LayerNorms the identity. The same seed gives the same weights bit for bit, whatever
    /// else uses the device's generator. The weights take no gradient.
    pub fn new(seed: u64, device: &Device) -> Result<TextEncoder> {
        let model = text_config().init(device)?;
        let mut weights = SeededWeights {
            rng: Rng::seed_from(seed),
            path: Vec::new(),
        };
        Ok(TextEncoder {
            model: model.map(&mut weights).no_grad(),
        })
    }

    /// Encodes prompts: `context` `[P, 16, 32]`, `pooled` `[P, 32]`, detached. Fails for an
    /// empty list, or as [`tokenize`] does.
    pub fn encode(&self, prompts: &[String]) -> Result<PromptEmbeddings> {
        if prompts.is_empty() {
            return Err(Error::InvalidArgument {
                name: "prompts".into(),
                value: "an empty list".into(),
                expected: "at least one prompt".into(),
            });
        }
        let mut ids: Vec<i64> = Vec::with_capacity(prompts.len() * CONTEXT_LENGTH);
        for prompt in prompts {
            ids.extend(tokenize(prompt)?.into_iter().map(i64::from));
        }
        let device = self.model.token_embedding.weight.val().device();
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(ids, [prompts.len(), CONTEXT_LENGTH]),
            &device,
        );
        let output = self.model.forward(ids, self.model.config().layers)?;
        PromptEmbeddings::new(
            prompts.to_vec(),
            output.last_hidden.detach(),
            output.projected.detach(),
        )
    }
}

/// Replaces every float parameter with values drawn from one [`Rng`], in the module's
/// (fixed) traversal order, by the parameter's role, read from its field name.
struct SeededWeights {
    rng: Rng,
    /// The field names from the model down to the current parameter.
    path: Vec<String>,
}

impl ModuleMapper for SeededWeights {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let role = self.path.last().map(String::as_str).unwrap_or_default();
        let in_embedding = self.path.iter().any(|name| name.ends_with("_embedding"));
        let rng = &mut self.rng;
        param.map(|tensor| {
            let dims = tensor.dims();
            let count: usize = dims.iter().product();
            let values: Vec<f32> = match role {
                "gamma" => vec![1.0; count],
                "weight" => {
                    // burn's Linear weight is [fan_in, fan_out].
                    let std = if in_embedding {
                        EMBEDDING_STD
                    } else {
                        1.0 / (dims[0] as f64).sqrt()
                    };
                    (0..count).map(|_| (std * rng.normal()) as f32).collect()
                }
                _ => vec![0.0; count],
            };
            Tensor::from_data(TensorData::new(values, dims), &tensor.device())
        })
    }
}
