//! Where SD3's three text encoders and their tokenizers are.

use std::path::{Path, PathBuf};

use crate::models::mmdit::PromptEncoding;

/// Where SD3's three text encoders and their tokenizers are: a diffusers folder
/// ([`diffusers_folder`](Self::diffusers_folder)), or Stability AI's single files with
/// tokenizer folders from anywhere.
///
/// ```no_run
/// use burn::prelude::*;
/// use burn::tensor::FloatDType;
/// use flow_rl::models::prompt_encoder::{PromptEncoder, PromptEncoderFiles};
///
/// // Stability AI's `text_encoders/` files, with the tokenizers of the diffusers download.
/// let files = PromptEncoderFiles {
///     clip_l: "text_encoders/clip_l.safetensors".into(),
///     clip_g: "text_encoders/clip_g.safetensors".into(),
///     t5: "text_encoders/t5xxl_fp16.safetensors".into(),
///     ..PromptEncoderFiles::diffusers_folder("stable-diffusion-3.5-medium")
/// };
/// let encoder = PromptEncoder::from_files(&files, Some(FloatDType::BF16), 256, &Device::default())?;
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PromptEncoderFiles {
    /// CLIP-L's weights: a diffusers `text_encoder/` folder or a single file.
    pub clip_l: PathBuf,
    /// CLIP-L's tokenizer folder (`tokenizer.json`, or `vocab.json` + `merges.txt`).
    pub clip_l_tokenizer: PathBuf,
    /// CLIP-G's weights: `text_encoder_2/` or a single file.
    pub clip_g: PathBuf,
    /// CLIP-G's tokenizer folder (its pad token is `!`, from its `special_tokens_map.json`).
    pub clip_g_tokenizer: PathBuf,
    /// T5's weights: `text_encoder_3/` (sharded) or a single file.
    pub t5: PathBuf,
    /// T5's `tokenizer.json`.
    pub t5_tokenizer: PathBuf,
}

impl PromptEncoderFiles {
    /// The layout of a diffusers SD3/SD3.5 folder: `text_encoder/` with `tokenizer/`,
    /// `text_encoder_2/` with `tokenizer_2/`, `text_encoder_3/` with
    /// `tokenizer_3/tokenizer.json`.
    pub fn diffusers_folder(folder: impl AsRef<Path>) -> Self {
        let folder = folder.as_ref();
        Self {
            clip_l: folder.join("text_encoder"),
            clip_l_tokenizer: folder.join("tokenizer"),
            clip_g: folder.join("text_encoder_2"),
            clip_g_tokenizer: folder.join("tokenizer_2"),
            t5: folder.join("text_encoder_3"),
            t5_tokenizer: folder.join("tokenizer_3").join("tokenizer.json"),
        }
    }

    /// The same files with absolute paths, symbolic links resolved (paths that do not
    /// exist are kept as given): what a [`PromptEncoding`] records, so that a record
    /// compares equal however the files were named.
    pub fn canonical(&self) -> Self {
        let canonical = |path: &PathBuf| std::fs::canonicalize(path).unwrap_or(path.clone());
        Self {
            clip_l: canonical(&self.clip_l),
            clip_l_tokenizer: canonical(&self.clip_l_tokenizer),
            clip_g: canonical(&self.clip_g),
            clip_g_tokenizer: canonical(&self.clip_g_tokenizer),
            t5: canonical(&self.t5),
            t5_tokenizer: canonical(&self.t5_tokenizer),
        }
    }

    /// Whether these files produced `encoding` (compared [`canonical`](Self::canonical)):
    /// CLIP-L, CLIP-G and T5 in that order, each with its tokenizer.
    pub fn produced(&self, encoding: &PromptEncoding) -> bool {
        let files = self.canonical();
        let expected = [
            (&files.clip_l, &files.clip_l_tokenizer),
            (&files.clip_g, &files.clip_g_tokenizer),
            (&files.t5, &files.t5_tokenizer),
        ];
        let same = |recorded: &Option<String>, path: &PathBuf| {
            recorded.as_deref() == Some(path.display().to_string().as_str())
        };
        encoding.encoders.len() == expected.len()
            && encoding
                .encoders
                .iter()
                .zip(expected)
                .all(|(record, (weights, tokenizer))| {
                    same(&record.weights, weights) && same(&record.tokenizer, tokenizer)
                })
    }
}
