//! What made a prompt-embedding file: the `encoding` metadata of
//! [`PromptEmbeddings`](super::PromptEmbeddings).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How prompt embeddings were encoded, stored as JSON in the `encoding` metadata of a
/// prompt-embedding file: the context holds `clip_tokens + max_sequence_length` tokens.
///
/// [`PromptEncoder`](crate::models::prompt_encoder::PromptEncoder) fills it in; files written
/// by other tools (docs/sd35.md's diffusers script) have none.
///
/// ```
/// use flow_rl::models::mmdit::PromptEncoding;
///
/// let encoding = PromptEncoding {
///     clip_tokens: 77,
///     max_sequence_length: 128,
///     encoders: Vec::new(),
/// };
/// assert_eq!(encoding.context_tokens(), 205);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptEncoding {
    /// CLIP tokens at the start of the context (77 for SD3).
    pub clip_tokens: usize,
    /// T5 tokens after them.
    pub max_sequence_length: usize,
    /// The encoders, in the order their outputs appear in the context (CLIP-L, CLIP-G, T5).
    pub encoders: Vec<EncoderRecord>,
}

/// One text encoder of a [`PromptEncoding`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderRecord {
    /// Its role: `"clip_l"`, `"clip_g"` or `"t5"`.
    pub name: String,
    /// Its architecture: the model's config (`ClipTextConfig`, `T5Config`) as JSON.
    pub config: serde_json::Value,
    /// Its weights' dtype (`"bf16"`, `"f32"`).
    pub dtype: String,
    /// The weights it was loaded from, when known.
    pub weights: Option<String>,
    /// The tokenizer file or folder, when known.
    pub tokenizer: Option<String>,
}

impl PromptEncoding {
    /// The context length `clip_tokens + max_sequence_length`.
    pub fn context_tokens(&self) -> usize {
        self.clip_tokens + self.max_sequence_length
    }

    /// The metadata value: compact JSON.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an encoding record serialises")
    }

    /// Parses the metadata value, naming `source` (the file) on malformed JSON.
    pub(crate) fn from_json(text: &str, source: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|err| Error::Checkpoint {
            path: source.to_owned(),
            message: format!(
                "the `encoding` metadata is not a prompt-encoding record \
                 (clip_tokens, max_sequence_length, encoders): {err}"
            ),
        })
    }
}
