//! T5's tokenizer (SentencePiece Unigram, as a `tokenizers` JSON file), called as SD3's
//! pipeline calls `tokenizer_3`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};
use crate::io::check_regular_file;

/// The longest sequence T5 was trained on (`tokenizer_3`'s `model_max_length`); SD3's
/// `max_sequence_length` may not exceed it.
pub const T5_MAX_POSITIONS: usize = 512;
/// T5's padding token.
const PAD_TOKEN: &str = "<pad>";

/// T5's tokenizer, loaded from a `tokenizer.json` (in an SD3.5 download:
/// `tokenizer_3/tokenizer.json`).
///
/// [`encode`](Self::encode) reproduces diffusers' `_get_t5_prompt_embeds`:
/// `tokenizer_3(prompts, padding="max_length", max_length=max_sequence_length,
/// truncation=True, add_special_tokens=True)`: `</s>` appended, long prompts cut to keep it,
/// short ones padded with `<pad>` on the right.
///
/// ```no_run
/// use burn::prelude::*;
/// use flow_rl::models::t5::T5Tokenizer;
///
/// let tokenizer = T5Tokenizer::from_file("stable-diffusion-3.5-medium/tokenizer_3/tokenizer.json")?;
/// let ids = tokenizer.encode(&["a photo of a cat"], 256, &Device::default())?; // [1, 256]
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Clone)]
pub struct T5Tokenizer {
    tokenizer: Tokenizer,
    pad_id: u32,
    path: PathBuf,
}

impl std::fmt::Debug for T5Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Tokenizer")
            .field("path", &self.path)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl T5Tokenizer {
    /// Loads a `tokenizers` JSON file that defines `<pad>`. A missing file is an
    /// [`Error::Io`]; a file that is not a tokenizer an [`Error::InvalidArgument`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        check_regular_file(path)?;
        let invalid = |message: String| Error::invalid("tokenizer file", path.display(), message);
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|err| invalid(format!("a `tokenizers` JSON file ({err})")))?;
        let pad_id = tokenizer
            .token_to_id(PAD_TOKEN)
            .ok_or_else(|| invalid(format!("a T5 tokenizer defining `{PAD_TOKEN}`")))?;
        Ok(Self {
            tokenizer,
            pad_id,
            path: path.to_owned(),
        })
    }

    /// The ids of each prompt, exactly `max_sequence_length` long: `</s>` appended, cut
    /// (with a `log` warning naming the prompt and the kept length) or padded with `<pad>`.
    ///
    /// Fails on an empty prompt list, a `max_sequence_length` of 0 or above
    /// [`T5_MAX_POSITIONS`], or text the tokenizer cannot encode.
    pub fn encode_ids<S: AsRef<str>>(
        &self,
        prompts: &[S],
        max_sequence_length: usize,
    ) -> Result<Vec<Vec<u32>>> {
        if prompts.is_empty() {
            return Err(Error::invalid("prompts", "[]", "at least one prompt"));
        }
        if max_sequence_length == 0 || max_sequence_length > T5_MAX_POSITIONS {
            return Err(Error::invalid(
                "max_sequence_length",
                max_sequence_length,
                format!("1 to {T5_MAX_POSITIONS} (T5's position limit; SD3 uses 256)"),
            ));
        }
        let mut configured = self.tokenizer.clone();
        configured
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_sequence_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|err| {
                Error::invalid("max_sequence_length", max_sequence_length, err.to_string())
            })?;
        configured.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_sequence_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: self.pad_id,
            pad_type_id: 0,
            pad_token: PAD_TOKEN.to_owned(),
        }));
        prompts
            .iter()
            .map(|prompt| {
                let prompt = prompt.as_ref();
                let encoding = configured.encode(prompt, true).map_err(|err| {
                    Error::invalid(
                        "prompt",
                        format!("{prompt:?}"),
                        format!("encodable text ({err})"),
                    )
                })?;
                if !encoding.get_overflowing().is_empty() {
                    log::warn!(
                        "T5 prompt {prompt:?} is longer than max_sequence_length: only its \
                         first {max_sequence_length} tokens (with </s>) are kept"
                    );
                }
                Ok(encoding.get_ids().to_vec())
            })
            .collect()
    }

    /// [`encode_ids`](Self::encode_ids) as a tensor `[P, max_sequence_length]` on `device`,
    /// ready for [`T5Encoder::forward`](super::T5Encoder::forward).
    pub fn encode<S: AsRef<str>>(
        &self,
        prompts: &[S],
        max_sequence_length: usize,
        device: &Device,
    ) -> Result<Tensor<2, Int>> {
        let ids = self.encode_ids(prompts, max_sequence_length)?;
        let flat: Vec<i64> = ids.concat().into_iter().map(i64::from).collect();
        Ok(Tensor::from_data(
            TensorData::new(flat, [ids.len(), max_sequence_length]),
            device,
        ))
    }
}
