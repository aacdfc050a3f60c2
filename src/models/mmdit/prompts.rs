//! Precomputed text conditions and their file format.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;

use super::MmditCondition;
use super::MmditConfig;
use super::prompt_encoding::PromptEncoding;
use super::safetensors_io::{SafetensorsFile, write_file_atomically};
use crate::error::{Error, Result};
use crate::policy::ConditionBatch;

/// The metadata `format` value of prompt-embedding files.
const FORMAT: &str = "flow-rl/prompt-embeddings";
/// The version of the format this crate writes and reads.
const VERSION: &str = "1";
/// The metadata key of the [`PromptEncoding`] record (optional: files written by other tools
/// lack it).
const ENCODING: &str = "encoding";

/// Text conditions of an [`Mmdit`](super::Mmdit), one row per prompt: context tokens
/// `[P, L, context_dim]` (SD3: CLIP-L/G hidden states padded to 4096 and T5-XXL's,
/// `L = 77 + 256`) and pooled embeddings `[P, pooled_dim]` (SD3: CLIP-L ⊕ CLIP-G, 2048).
///
/// **File format** (safetensors): tensors `context` `[P, L, D]` and `pooled` `[P, D_pooled]`
/// in f32, f16 or bf16; metadata `format = "flow-rl/prompt-embeddings"`, `version = "1"`,
/// `prompts`, a JSON array of the P prompt strings in row order, and optionally `encoding`,
/// a [`PromptEncoding`] as JSON (what made the file: `max_sequence_length`, the encoders and
/// tokenizers). `docs/sd35.md` shows how to write one with diffusers' `encode_prompt`.
#[derive(Debug, Clone)]
pub struct PromptEmbeddings {
    /// The prompts, one per row.
    pub prompts: Vec<String>,
    /// Context tokens `[P, L, context_dim]`.
    pub context: Tensor<3>,
    /// Pooled embeddings `[P, pooled_dim]`.
    pub pooled: Tensor<2>,
    /// How they were encoded, when known; its context length is `L`.
    encoding: Option<PromptEncoding>,
}

impl PromptEmbeddings {
    /// Checks that there is one context row and one pooled row per prompt.
    pub fn new(prompts: Vec<String>, context: Tensor<3>, pooled: Tensor<2>) -> Result<Self> {
        let count = prompts.len();
        if context.dims()[0] != count || context.dims()[1] == 0 {
            return Err(Error::shape(
                "context",
                format!("[{count}, L, D] with L ≥ 1 (one row per prompt)"),
                context.dims(),
            ));
        }
        if pooled.dims()[0] != count {
            return Err(Error::shape(
                "pooled",
                format!("[{count}, D] (one row per prompt)"),
                pooled.dims(),
            ));
        }
        Ok(Self {
            prompts,
            context,
            pooled,
            encoding: None,
        })
    }

    /// Records how the embeddings were encoded. Fails when the record's context length
    /// (`clip_tokens + max_sequence_length`) is not the context's `L`.
    pub fn with_encoding(mut self, encoding: PromptEncoding) -> Result<Self> {
        let tokens = self.context_tokens();
        if encoding.context_tokens() != tokens {
            return Err(Error::invalid(
                "prompt encoding",
                format!(
                    "{} CLIP + {} T5 tokens",
                    encoding.clip_tokens, encoding.max_sequence_length
                ),
                format!("{tokens} tokens in all (the context's length)"),
            ));
        }
        self.encoding = Some(encoding);
        Ok(self)
    }

    /// How the embeddings were encoded, when the file says.
    pub fn encoding(&self) -> Option<&PromptEncoding> {
        self.encoding.as_ref()
    }

    /// Context tokens per prompt (`L`).
    pub fn context_tokens(&self) -> usize {
        self.context.dims()[1]
    }

    /// Checks that each prompt has `expected` context tokens (SD3: `77 +
    /// max_sequence_length`), as a run encoding at one `max_sequence_length` expects of a
    /// file made earlier. The error names both lengths, and the file's
    /// `max_sequence_length` when it records one.
    pub fn check_context_tokens(&self, expected: usize) -> Result<()> {
        let tokens = self.context_tokens();
        if tokens == expected {
            return Ok(());
        }
        let value = match &self.encoding {
            Some(encoding) => format!(
                "{tokens} context tokens ({} CLIP + max_sequence_length {})",
                encoding.clip_tokens, encoding.max_sequence_length
            ),
            None => format!("{tokens} context tokens"),
        };
        Err(Error::invalid(
            "prompt embeddings",
            value,
            format!("{expected} context tokens per prompt"),
        ))
    }

    /// The number of prompts.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// Whether there are no prompts.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// The rows at `indices` (which may repeat), in that order.
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::invalid(
                "prompt index",
                bad,
                format!("an index below {}", self.len()),
            ));
        }
        let picked = MmditCondition::new(self.context.clone(), self.pooled.clone()).pick(indices);
        Ok(Self {
            prompts: indices.iter().map(|&i| self.prompts[i].clone()).collect(),
            context: picked.context,
            pooled: picked.pooled,
            encoding: self.encoding.clone(),
        })
    }

    /// The condition batch a policy takes: context, pooled and the prompts.
    pub fn condition(&self) -> MmditCondition {
        MmditCondition::new(self.context.clone(), self.pooled.clone())
            .with_prompts(self.prompts.clone())
            .expect("PromptEmbeddings::new checked one row per prompt")
    }

    /// Checks the embedding widths against a model's.
    pub fn check_widths(&self, config: &MmditConfig) -> Result<()> {
        if self.context.dims()[2] != config.context_dim {
            return Err(Error::shape(
                "context",
                format!("[P, L, {}] (the model's context_dim)", config.context_dim),
                self.context.dims(),
            ));
        }
        if self.pooled.dims()[1] != config.pooled_dim {
            return Err(Error::shape(
                "pooled",
                format!("[P, {}] (the model's pooled_dim)", config.pooled_dim),
                self.pooled.dims(),
            ));
        }
        Ok(())
    }

    /// Reads a prompt-embedding file onto `device`, keeping the stored dtype where the
    /// device supports it (f32 otherwise).
    ///
    /// Fails with [`Error::NonFinite`] naming the prompt (row index and string) whose
    /// embedding holds a NaN or an infinity.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let file = SafetensorsFile::read(path)?;
        let error = |message: String| Error::Checkpoint {
            path: path.display().to_string(),
            message,
        };
        match (
            file.metadata_value("format"),
            file.metadata_value("version"),
        ) {
            (Some(FORMAT), Some(VERSION)) => {}
            (format, version) => {
                return Err(error(format!(
                    "metadata format = {format:?}, version = {version:?}; expected \
                     format = \"{FORMAT}\", version = \"{VERSION}\""
                )));
            }
        }
        let prompts: Vec<String> = file
            .metadata_value("prompts")
            .ok_or_else(|| error("no `prompts` metadata".into()))
            .and_then(|text| {
                serde_json::from_str(text).map_err(|err| {
                    error(format!("`prompts` is not a JSON array of strings: {err}"))
                })
            })?;
        let tensor = |name: &str, rank: usize| {
            let data = file
                .tensors()
                .get(name)
                .ok_or_else(|| error(format!("no `{name}` tensor")))?;
            if data.shape().num_dims() != rank {
                return Err(error(format!(
                    "`{name}` has shape {:?}; expected {rank} axes",
                    data.shape()
                )));
            }
            // Keep the stored dtype where the device has it; the model casts to its own.
            let dtype = if device.supports_dtype(data.dtype()) {
                data.dtype()
            } else {
                DType::F32
            };
            Ok((data.clone(), dtype))
        };
        let (context, context_dtype) = tensor("context", 3)?;
        let (pooled, pooled_dtype) = tensor("pooled", 2)?;
        for (name, data) in [("context", &context), ("pooled", &pooled)] {
            check_finite(path, name, data, &prompts)?;
        }
        let encoding = file
            .metadata_value(ENCODING)
            .map(|text| PromptEncoding::from_json(text, &path.display().to_string()))
            .transpose()?;
        let context = Tensor::<3>::from_data(context, (device, context_dtype));
        let pooled = Tensor::<2>::from_data(pooled, (device, pooled_dtype));
        let embeddings = Self::new(prompts, context, pooled)?;
        match encoding {
            Some(encoding) => embeddings
                .with_encoding(encoding)
                .map_err(|err| error(err.to_string())),
            None => Ok(embeddings),
        }
    }

    /// Writes the embeddings (in their dtype) to `path`, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut file = SafetensorsFile::new();
        file.insert("context", self.context.clone().into_data());
        file.insert("pooled", self.pooled.clone().into_data());
        file.metadata("format", FORMAT);
        file.metadata("version", VERSION);
        file.metadata(
            "prompts",
            serde_json::to_string(&self.prompts).expect("strings serialise"),
        );
        if let Some(encoding) = &self.encoding {
            file.metadata(ENCODING, encoding.to_json());
        }
        write_file_atomically(path.as_ref(), &file)
    }
}

/// Fails on the first NaN or infinity of `data` (`[P, ...]`, one row per prompt), naming the
/// row's prompt.
fn check_finite(path: &Path, name: &str, data: &TensorData, prompts: &[String]) -> Result<()> {
    let values = data.clone().convert::<f32>();
    let values = values.as_slice::<f32>().map_err(|err| Error::Checkpoint {
        path: path.display().to_string(),
        message: format!("`{name}` could not be read as floats: {err:?}"),
    })?;
    let Some(position) = values.iter().position(|value| !value.is_finite()) else {
        return Ok(());
    };
    let rows = data.shape()[0];
    let row = position / (values.len() / rows);
    let prompt = prompts.get(row).map_or("", String::as_str);
    Err(Error::NonFinite {
        what: format!(
            "`{name}` embedding of prompt {row} ({prompt:?}) in {}",
            path.display()
        ),
        index: row,
        value: f64::from(values[position]),
    })
}
