//! CLIP's byte-level BPE tokenizer, padded and truncated to 77 tokens as diffusers' SD3
//! pipeline calls its two CLIP tokenizers (`padding="max_length"`, `truncation=True`).

use std::path::Path;

use burn::prelude::*;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, NormalizerWrapper, Replace, Sequence};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};

/// CLIP's start-of-text token.
pub const BOS_TOKEN: &str = "<|startoftext|>";
/// CLIP's end-of-text token, also CLIP-L's pad token in SD3.5.
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// CLIP-G's pad token in SD3.5 (`tokenizer_2`), id 0 in CLIP's vocabulary.
pub const CLIP_G_PAD_TOKEN: &str = "!";
/// The context length of every CLIP text encoder SD3.5 uses.
pub const CONTEXT_LENGTH: usize = 77;

/// CLIP's word pattern: the special tokens, English contractions, letter runs, single
/// digits, and runs of other non-space characters.
const WORD_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Token ids of a batch of prompts, each row `[BOS, tokens.., EOS, pad..]` of length 77.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipTokenIds {
    /// The rows, each [`CONTEXT_LENGTH`] ids long.
    pub rows: Vec<Vec<u32>>,
}

impl ClipTokenIds {
    /// The ids as an Int tensor `[P, 77]`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let flat: Vec<i64> = self
            .rows
            .iter()
            .flatten()
            .map(|&id| i64::from(id))
            .collect();
        Tensor::<1, Int>::from_data(flat.as_slice(), device)
            .reshape([self.rows.len(), CONTEXT_LENGTH])
    }
}

/// A CLIP tokenizer with its pad token.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
}

impl ClipTokenizer {
    /// Loads a tokenizer folder as diffusers saves one: `tokenizer.json`, or `vocab.json`
    /// with `merges.txt`; the pad token from `special_tokens_map.json` or
    /// `tokenizer_config.json` (`<|endoftext|>` where neither names one).
    pub fn from_folder(folder: impl AsRef<Path>) -> Result<Self> {
        let folder = folder.as_ref();
        let pad = pad_token(folder)?.unwrap_or_else(|| EOS_TOKEN.to_owned());
        let json = folder.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json, &pad);
        }
        Self::from_vocab_merges(folder.join("vocab.json"), folder.join("merges.txt"), &pad)
    }

    /// A Hugging Face `tokenizer.json` with `pad_token`.
    pub fn from_tokenizer_json(path: impl AsRef<Path>, pad_token: &str) -> Result<Self> {
        let path = path.as_ref();
        crate::io::check_regular_file(path)?;
        let tokenizer = Tokenizer::from_file(path).map_err(|err| Error::Checkpoint {
            path: path.display().to_string(),
            message: format!("not a tokenizer.json: {err}"),
        })?;
        Self::with_specials(tokenizer, pad_token, path)
    }

    /// CLIP's BPE pipeline built from `vocab.json` and `merges.txt`: NFC, whitespace runs
    /// to one space, lowercase; CLIP's word pattern; byte-level symbols; `</w>` ending
    /// each word.
    pub fn from_vocab_merges(
        vocab: impl AsRef<Path>,
        merges: impl AsRef<Path>,
        pad_token: &str,
    ) -> Result<Self> {
        let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
        crate::io::check_regular_file(vocab)?;
        crate::io::check_regular_file(merges)?;
        let unreadable = |message: String| Error::Checkpoint {
            path: vocab.display().to_string(),
            message,
        };
        let model = BPE::from_file(&vocab.display().to_string(), &merges.display().to_string())
            .unk_token(EOS_TOKEN.to_owned())
            .end_of_word_suffix("</w>".to_owned())
            .build()
            .map_err(|err| unreadable(format!("not a BPE vocab.json + merges.txt: {err}")))?;
        let whitespace = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(|err| unreadable(format!("whitespace pattern: {err}")))?;
        let words = Split::new(
            SplitPattern::Regex(WORD_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|err| unreadable(format!("word pattern: {err}")))?;
        let mut tokenizer = Tokenizer::new(model);
        tokenizer.with_normalizer(Some(Sequence::new(vec![
            NormalizerWrapper::NFC(NFC),
            NormalizerWrapper::Replace(whitespace),
            NormalizerWrapper::Lowercase(Lowercase),
        ])));
        tokenizer.with_pre_tokenizer(Some(PreSequence::new(vec![
            PreTokenizerWrapper::Split(words),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ])));
        Self::with_specials(tokenizer, pad_token, vocab)
    }

    /// Registers BOS, EOS and the pad token as special tokens, matched in the raw text before
    /// normalisation, as transformers' `CLIPTokenizer` does: with CLIP-G's pad token `!`,
    /// `"wow!!"` is `wow` then two `!` tokens, not the word `!!`.
    fn with_specials(mut tokenizer: Tokenizer, pad_token: &str, path: &Path) -> Result<Self> {
        let id = |tokenizer: &Tokenizer, token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| Error::Checkpoint {
                    path: path.display().to_string(),
                    message: format!("the vocabulary has no `{token}` token"),
                })
        };
        let (bos, eos, pad) = (
            id(&tokenizer, BOS_TOKEN)?,
            id(&tokenizer, EOS_TOKEN)?,
            id(&tokenizer, pad_token)?,
        );
        tokenizer.add_special_tokens(&[
            AddedToken::from(pad_token, true),
            AddedToken::from(BOS_TOKEN, true),
            AddedToken::from(EOS_TOKEN, true),
        ]);
        Ok(Self {
            bos,
            eos,
            pad,
            tokenizer,
        })
    }

    /// The pad token's id.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// `[BOS, tokens.., EOS]` of one prompt, untruncated.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(prompt, false).map_err(|err| {
            Error::invalid(
                "prompt",
                format!("{prompt:?}"),
                format!("text CLIP's tokenizer can encode ({err})"),
            )
        })?;
        let mut ids = Vec::with_capacity(encoding.len() + 2);
        ids.push(self.bos);
        ids.extend_from_slice(encoding.get_ids());
        ids.push(self.eos);
        Ok(ids)
    }

    /// Each prompt as 77 ids: `BOS`, at most 75 tokens, `EOS`, then the pad token. A cut
    /// prompt is logged with the number of tokens kept, as diffusers warns.
    pub fn encode_batch(&self, prompts: &[&str]) -> Result<ClipTokenIds> {
        let rows = prompts
            .iter()
            .map(|prompt| {
                let mut ids = self.encode(prompt)?;
                if ids.len() > CONTEXT_LENGTH {
                    log::warn!(
                        "prompt {prompt:?} is {} CLIP tokens long; only the first {} are kept",
                        ids.len() - 2,
                        CONTEXT_LENGTH - 2
                    );
                    ids.truncate(CONTEXT_LENGTH - 1);
                    ids.push(self.eos);
                }
                ids.resize(CONTEXT_LENGTH, self.pad);
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ClipTokenIds { rows })
    }
}

/// The `pad_token` named by a tokenizer folder's `special_tokens_map.json` or
/// `tokenizer_config.json` (a string or `{"content": ..}`).
fn pad_token(folder: &Path) -> Result<Option<String>> {
    for file in ["special_tokens_map.json", "tokenizer_config.json"] {
        let path = folder.join(file);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|err| Error::io(&path, err))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|err| Error::Checkpoint {
                path: path.display().to_string(),
                message: format!("not JSON: {err}"),
            })?;
        let pad = json.get("pad_token");
        let pad = pad.and_then(serde_json::Value::as_str).or_else(|| {
            pad.and_then(|pad| pad.get("content"))
                .and_then(serde_json::Value::as_str)
        });
        if let Some(pad) = pad {
            return Ok(Some(pad.to_owned()));
        }
    }
    Ok(None)
}
