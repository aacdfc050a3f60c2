//! SD3's text condition from its three text encoders, as diffusers' `encode_prompt` builds it:
//! [`PromptEncoder`], the files it loads ([`PromptEncoderFiles`]) and prompt lists
//! ([`read_prompt_list`]).

mod files;
mod prompt_list;

pub use files::PromptEncoderFiles;
pub use prompt_list::read_prompt_list;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use crate::error::{Error, Result};
use crate::models::clip::{CONTEXT_LENGTH, ClipTextModel, ClipTextWeights, ClipTokenizer};
use crate::models::mmdit::{EncoderRecord, PromptEmbeddings, PromptEncoding};
use crate::models::t5::{T5_MAX_POSITIONS, T5Encoder, T5Tokenizer, T5Weights};

/// T5 tokens per prompt when a run does not choose (diffusers' SD3 default; flow_grpo uses
/// 128).
pub const DEFAULT_MAX_SEQUENCE_LENGTH: usize = 256;

/// Prompts encoded in one pass when a run does not choose.
pub const DEFAULT_ENCODE_BATCH_SIZE: usize = 8;

/// One text encoder of SD3 with its tokenizer.
#[derive(Debug)]
pub struct ClipEncoder {
    /// The text transformer.
    pub model: ClipTextModel,
    /// Its tokenizer, padding with the model's own pad token.
    pub tokenizer: ClipTokenizer,
}

/// SD3's T5 encoder with its tokenizer.
#[derive(Debug)]
pub struct T5TextEncoder {
    /// The encoder.
    pub model: T5Encoder,
    /// Its tokenizer.
    pub tokenizer: T5Tokenizer,
}

/// SD3's three text encoders, producing the MMDiT's condition as diffusers'
/// `StableDiffusion3Pipeline.encode_prompt` does with classifier-free guidance off:
///
/// - context `[P, 77 + max_sequence_length, t5_width]`: CLIP-L's and CLIP-G's penultimate
///   hidden states (`hidden_states[-2]`, before the final LayerNorm) concatenated along
///   features (768 + 1280 for SD3), zero-padded to T5's width (4096), then followed along
///   the sequence by T5's last hidden state (computed without an attention mask, as the
///   pipeline calls it);
/// - pooled `[P, clip_l_projection + clip_g_projection]` (2048): both projected pooled
///   outputs, concatenated.
///
/// ```no_run
/// use burn::prelude::*;
/// use burn::tensor::FloatDType;
/// use flow_rl::models::prompt_encoder::PromptEncoder;
///
/// let device = Device::default();
/// let encoder = PromptEncoder::from_diffusers_folder(
///     "stable-diffusion-3.5-medium",
///     Some(FloatDType::BF16),
///     256,
///     &device,
/// )?;
/// let embeddings = encoder.encode(&["a photo of a cat", "two dogs"])?;
/// assert_eq!(embeddings.context.dims(), [2, 77 + 256, 4096]);
/// assert_eq!(embeddings.pooled.dims(), [2, 2048]);
/// embeddings.save("prompts.safetensors")?;
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Debug)]
pub struct PromptEncoder {
    clip_l: ClipEncoder,
    clip_g: ClipEncoder,
    t5: T5TextEncoder,
    max_sequence_length: usize,
    batch_size: usize,
    /// Where the encoders came from, when loaded from files.
    files: Option<PromptEncoderFiles>,
    device: Device,
}

impl PromptEncoder {
    /// Combines loaded encoders. Fails if `max_sequence_length` is 0 or above
    /// [`T5_MAX_POSITIONS`].
    pub fn new(
        clip_l: ClipEncoder,
        clip_g: ClipEncoder,
        t5: T5TextEncoder,
        max_sequence_length: usize,
        device: &Device,
    ) -> Result<Self> {
        if max_sequence_length == 0 || max_sequence_length > T5_MAX_POSITIONS {
            return Err(Error::invalid(
                "max_sequence_length",
                max_sequence_length,
                format!("1 to {T5_MAX_POSITIONS} T5 tokens (T5's position limit)"),
            ));
        }
        Ok(Self {
            clip_l,
            clip_g,
            t5,
            max_sequence_length,
            batch_size: DEFAULT_ENCODE_BATCH_SIZE,
            files: None,
            device: device.clone(),
        })
    }

    /// Loads the three encoders and tokenizers of a diffusers SD3/SD3.5 folder
    /// ([`PromptEncoderFiles::diffusers_folder`]); see [`from_files`](Self::from_files).
    pub fn from_diffusers_folder(
        folder: impl AsRef<Path>,
        dtype: Option<FloatDType>,
        max_sequence_length: usize,
        device: &Device,
    ) -> Result<Self> {
        let files = PromptEncoderFiles::diffusers_folder(folder);
        Self::from_files(&files, dtype, max_sequence_length, device)
    }

    /// Loads the three encoders and tokenizers, keeping the stored dtypes (`dtype` `None`)
    /// or casting every encoder to `dtype`. T5 refuses f16 (see [`T5Weights::load`]): pass
    /// `Some(FloatDType::BF16)` for f16 downloads. The embeddings it encodes record `files`
    /// in their [`PromptEncoding`].
    pub fn from_files(
        files: &PromptEncoderFiles,
        dtype: Option<FloatDType>,
        max_sequence_length: usize,
        device: &Device,
    ) -> Result<Self> {
        let clip = |weights: &Path, tokenizer: &Path| -> Result<ClipEncoder> {
            let weights = ClipTextWeights::open(weights)?;
            let model = weights.load_into(weights.infer_config()?.init(device)?, dtype)?;
            let tokenizer = ClipTokenizer::from_folder(tokenizer)?;
            Ok(ClipEncoder { model, tokenizer })
        };
        let clip_l = clip(&files.clip_l, &files.clip_l_tokenizer)?;
        let clip_g = clip(&files.clip_g, &files.clip_g_tokenizer)?;
        let weights = T5Weights::open(&files.t5)?;
        let t5 = T5TextEncoder {
            model: weights.load(&weights.infer_config()?, device, dtype)?,
            tokenizer: T5Tokenizer::from_file(&files.t5_tokenizer)?,
        };
        let mut encoder = Self::new(clip_l, clip_g, t5, max_sequence_length, device)?;
        encoder.files = Some(files.canonical());
        Ok(encoder)
    }

    /// Encodes at most `batch_size` prompts per pass (default
    /// [`DEFAULT_ENCODE_BATCH_SIZE`]); the result does not depend on it. Fails on 0.
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::invalid(
                "batch_size",
                batch_size,
                "at least one prompt per pass",
            ));
        }
        self.batch_size = batch_size;
        Ok(self)
    }

    /// T5 tokens per prompt: the context has `77 + max_sequence_length` tokens.
    pub fn max_sequence_length(&self) -> usize {
        self.max_sequence_length
    }

    /// The record the embeddings of [`encode`](Self::encode) carry: the token counts, each
    /// encoder's config and dtype, and the files they came from when known.
    pub fn encoding(&self) -> PromptEncoding {
        let path = |pick: fn(&PromptEncoderFiles) -> &PathBuf| {
            self.files
                .as_ref()
                .map(|files| pick(files).display().to_string())
        };
        let clip_record = |name: &str, encoder: &ClipEncoder, weights, tokenizer| EncoderRecord {
            name: name.to_owned(),
            config: serde_json::to_value(encoder.model.config())
                .expect("a burn Config serialises to JSON"),
            dtype: dtype_name(encoder.model.token_embedding.weight.val().dtype()),
            weights,
            tokenizer,
        };
        let encoders = vec![
            clip_record(
                "clip_l",
                &self.clip_l,
                path(|files| &files.clip_l),
                path(|files| &files.clip_l_tokenizer),
            ),
            clip_record(
                "clip_g",
                &self.clip_g,
                path(|files| &files.clip_g),
                path(|files| &files.clip_g_tokenizer),
            ),
            EncoderRecord {
                name: "t5".to_owned(),
                config: serde_json::to_value(self.t5.model.config())
                    .expect("a burn Config serialises to JSON"),
                dtype: dtype_name(self.t5.model.embed_tokens.val().dtype()),
                weights: path(|files| &files.t5),
                tokenizer: path(|files| &files.t5_tokenizer),
            },
        ];
        PromptEncoding {
            clip_tokens: CONTEXT_LENGTH,
            max_sequence_length: self.max_sequence_length,
            encoders,
        }
    }

    /// Encodes `prompts` in passes of `batch_size`: context `[P, 77 + max_sequence_length,
    /// t5_width]` and pooled `[P, clip_l_projection + clip_g_projection]`, in f32.
    ///
    /// Fails on an empty list, and when the two CLIP widths together exceed T5's (the
    /// pipeline would crop them; no SD3 checkpoint does that).
    pub fn encode(&self, prompts: &[&str]) -> Result<PromptEmbeddings> {
        if prompts.is_empty() {
            return Err(Error::invalid("prompts", "[]", "at least one prompt"));
        }
        let (contexts, pooled): (Vec<_>, Vec<_>) = prompts
            .chunks(self.batch_size)
            .map(|chunk| self.encode_chunk(chunk))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        PromptEmbeddings::new(
            prompts.iter().map(|prompt| prompt.to_string()).collect(),
            Tensor::cat(contexts, 0),
            Tensor::cat(pooled, 0),
        )?
        .with_encoding(self.encoding())
    }

    fn encode_chunk(&self, prompts: &[&str]) -> Result<(Tensor<3>, Tensor<2>)> {
        let (hidden_l, pooled_l) = self.clip_condition(&self.clip_l, prompts)?;
        let (hidden_g, pooled_g) = self.clip_condition(&self.clip_g, prompts)?;
        let t5_ids = self
            .t5
            .tokenizer
            .encode(prompts, self.max_sequence_length, &self.device)?;
        let t5_hidden = self.t5.model.forward(t5_ids, None)?.cast(DType::F32);

        let clip_hidden = Tensor::cat(vec![hidden_l, hidden_g], 2);
        let [rows, clip_tokens, clip_width] = clip_hidden.dims();
        let t5_width = t5_hidden.dims()[2];
        if clip_width > t5_width {
            return Err(Error::shape(
                "CLIP-L and CLIP-G hidden widths together",
                format!("at most T5's width {t5_width}"),
                [clip_width],
            ));
        }
        let padding = Tensor::zeros([rows, clip_tokens, t5_width - clip_width], &self.device);
        let clip_hidden = Tensor::cat(vec![clip_hidden, padding], 2);
        let context = Tensor::cat(vec![clip_hidden, t5_hidden], 1);
        let pooled = Tensor::cat(vec![pooled_l, pooled_g], 1);
        Ok((context, pooled))
    }

    /// The penultimate hidden state `[P, 77, width]` and the projected pooled output
    /// `[P, projection]` of one CLIP, as `_get_clip_prompt_embeds` takes them.
    fn clip_condition(
        &self,
        encoder: &ClipEncoder,
        prompts: &[&str],
    ) -> Result<(Tensor<3>, Tensor<2>)> {
        let ids = encoder
            .tokenizer
            .encode_batch(prompts)?
            .to_tensor(&self.device);
        let output = encoder
            .model
            .forward(ids, encoder.model.penultimate_layer())?;
        Ok((output.hidden, output.projected))
    }
}

/// `"bf16"`, `"f32"`, ...: the lower-case dtype name the encoding record stores.
fn dtype_name(dtype: DType) -> String {
    format!("{dtype:?}").to_lowercase()
}
