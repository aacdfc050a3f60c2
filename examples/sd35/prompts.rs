//! The run's prompts: a prompt-embedding file, a prompt list encoded with the weights
//! folder's text encoders (cached beside the list), or random embeddings.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::FloatDType;
use flow_rl::models::clip::CONTEXT_LENGTH;
use flow_rl::models::mmdit::{MmditConfig, PromptEmbeddings};
use flow_rl::models::prompt_encoder::{
    DEFAULT_MAX_SEQUENCE_LENGTH, PromptEncoder, PromptEncoderFiles, read_prompt_list,
};
use flow_rl::{Error, Result, Rng};

use crate::Args;
use crate::setup::{PROMPT_SEED_OFFSET, Precision, Preset};

/// Context tokens of a random prompt embedding: CLIP's 77 and T5's 256, as diffusers pads.
const RANDOM_CONTEXT_TOKENS: usize = CONTEXT_LENGTH + DEFAULT_MAX_SEQUENCE_LENGTH;
/// Context tokens of the tiny preset's random prompts.
const TINY_CONTEXT_TOKENS: usize = 8;

/// `--embeddings` (checked against `--max-sequence-length` when given), the `--prompts`
/// encoded with the `--weights` folder's text encoders, or (with `--random-init` and neither)
/// random embeddings of placeholder prompts; checked against the model's widths.
pub fn load_embeddings(
    args: &Args,
    config: &MmditConfig,
    device: &Device,
) -> Result<PromptEmbeddings> {
    let embeddings = match (&args.embeddings, &args.prompts) {
        (Some(path), _) => {
            let embeddings = PromptEmbeddings::load(path, device)?;
            if let Some(length) = args.max_sequence_length {
                embeddings.check_context_tokens(CONTEXT_LENGTH + length)?;
            }
            embeddings
        }
        (None, Some(list)) => encoded_prompt_list(args, list, device)?,
        (None, None) if args.random_init => random_embeddings(args, config, device)?,
        (None, None) => {
            return Err(Error::InvalidArgument {
                name: "--embeddings".into(),
                value: "none".into(),
                expected: "a prompt-embedding file, or --prompts with a diffusers --weights \
                           folder"
                    .into(),
            });
        }
    };
    embeddings.check_widths(config)?;
    Ok(embeddings)
}

/// The prompt list's embeddings: from the cache beside it when that was made from the same
/// prompts, encoder files and length, else encoded now (encoders freed afterwards) and
/// cached. A cache that cannot be written is a warning, not a failure.
fn encoded_prompt_list(args: &Args, list: &Path, device: &Device) -> Result<PromptEmbeddings> {
    let folder = args
        .weights
        .as_ref()
        .filter(|path| path.is_dir())
        .ok_or_else(|| Error::InvalidArgument {
            name: "--prompts".into(),
            value: list.display().to_string(),
            expected: "--weights naming a diffusers folder with text_encoder*/ and \
                       tokenizer*/ (or pass --embeddings)"
                .into(),
        })?;
    let prompts = read_prompt_list(list)?;
    // T5 overflows in f16: encode in bf16 unless f32 was asked for.
    let dtype = match args.precision {
        Some(Precision::F32) => FloatDType::F32,
        _ => FloatDType::BF16,
    };
    let length = args
        .max_sequence_length
        .unwrap_or(DEFAULT_MAX_SEQUENCE_LENGTH);
    let files = PromptEncoderFiles::diffusers_folder(folder);
    let cache = cache_path(list, length, dtype);
    if let Some(cached) = current_cache(&cache, &prompts, &files, length, device) {
        log::info!("prompt embeddings from the cache {}", cache.display());
        return Ok(cached);
    }

    let encoder = PromptEncoder::from_files(&files, Some(dtype), length, device)?;
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let embeddings = encoder.encode(&refs)?;
    drop(encoder);
    match embeddings.save(&cache) {
        Ok(()) => log::info!("prompt embeddings cached in {}", cache.display()),
        Err(err) => log::warn!("the prompt embeddings could not be cached: {err}"),
    }
    Ok(embeddings)
}

/// `LIST.L-DTYPE.embeddings.safetensors` beside the prompt list.
pub fn cache_path(list: &Path, max_sequence_length: usize, dtype: FloatDType) -> PathBuf {
    let dtype = match dtype {
        FloatDType::F32 => "f32",
        FloatDType::BF16 => "bf16",
        FloatDType::F16 => "f16",
        FloatDType::F64 => "f64",
        _ => "other",
    };
    let mut name = list.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{max_sequence_length}-{dtype}.embeddings.safetensors"
    ));
    list.with_file_name(name)
}

/// The cached embeddings when the cache exists and was made from `prompts` with `files` at
/// `max_sequence_length`; a stale or unreadable cache is logged and ignored.
fn current_cache(
    cache: &Path,
    prompts: &[String],
    files: &PromptEncoderFiles,
    max_sequence_length: usize,
    device: &Device,
) -> Option<PromptEmbeddings> {
    if !cache.exists() {
        return None;
    }
    let cached = match PromptEmbeddings::load(cache, device) {
        Ok(cached) => cached,
        Err(err) => {
            log::warn!("ignoring the unreadable prompt cache: {err}");
            return None;
        }
    };
    let current = cached.prompts == prompts
        && cached.encoding().is_some_and(|encoding| {
            encoding.max_sequence_length == max_sequence_length && files.produced(encoding)
        });
    if !current {
        log::warn!(
            "{} was made from other prompts or text encoders: encoding again",
            cache.display()
        );
    }
    current.then_some(cached)
}

/// Normal random embeddings for `max(prompts per rollout, eval prompts)` placeholder prompts.
fn random_embeddings(
    args: &Args,
    config: &MmditConfig,
    device: &Device,
) -> Result<PromptEmbeddings> {
    let count = args.prompts_per_rollout.max(args.eval_prompts).max(1);
    let tokens = match args.preset {
        Preset::Tiny => TINY_CONTEXT_TOKENS,
        Preset::Medium | Preset::Large => RANDOM_CONTEXT_TOKENS,
    };
    let mut rng = Rng::seed_from(args.seed.wrapping_add(PROMPT_SEED_OFFSET));
    let context = rng
        .normal_tensor([count * tokens, config.context_dim], device)
        .reshape([count, tokens, config.context_dim]);
    let pooled = rng.normal_tensor([count, config.pooled_dim], device);
    let prompts = (0..count).map(|i| format!("random prompt {i}")).collect();
    PromptEmbeddings::new(prompts, context, pooled)
}
