//! Encodes a prompt list with SD3/SD3.5's three text encoders into the crate's
//! prompt-embedding file, as diffusers' `encode_prompt` would (CFG off), with no Python.
//!
//! ```sh
//! cargo run --release --example encode_prompts -- \
//!     --model stable-diffusion-3.5-medium --prompts prompts.txt --out prompts.safetensors
//! cargo run --release --example encode_prompts -- --help
//! ```
//!
//! `--model` is a diffusers SD3/SD3.5 folder (`text_encoder*/`, `tokenizer*/`); `--prompts`
//! holds one prompt per line, or a JSON array of strings in a `.json` file.

use std::path::PathBuf;
use std::time::Instant;

#[path = "common/encoder_precision.rs"]
mod encoder_precision;

use burn::prelude::*;
use clap::Parser;
use encoder_precision::Precision;
use flow_rl::backend::Backend;
use flow_rl::models::mmdit::PromptEmbeddings;
use flow_rl::models::prompt_encoder::{
    DEFAULT_ENCODE_BATCH_SIZE, DEFAULT_MAX_SEQUENCE_LENGTH, PromptEncoder, read_prompt_list,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Encode a prompt list into a prompt-embedding file.
#[derive(Parser, Debug)]
struct Args {
    /// A diffusers SD3/SD3.5 folder.
    #[arg(long)]
    model: PathBuf,
    /// One prompt per line, or a JSON array of strings (`.json`).
    #[arg(long)]
    prompts: PathBuf,
    /// The prompt-embedding file to write (atomically).
    #[arg(long)]
    out: PathBuf,
    /// T5 tokens per prompt (diffusers' default 256; flow_grpo uses 128).
    #[arg(long, default_value_t = DEFAULT_MAX_SEQUENCE_LENGTH)]
    max_sequence_length: usize,
    /// Prompts per encoder pass.
    #[arg(long, default_value_t = DEFAULT_ENCODE_BATCH_SIZE)]
    batch_size: usize,
    /// Weight precision of the encoders.
    #[arg(long, value_enum, default_value_t = Precision::Bf16)]
    precision: Precision,
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in [default:
    /// $BURN_DEVICE, else the build's default: cuda, vulkan, wgpu, tch-cuda, tch, then flex]
    #[arg(long)]
    backend: Option<Backend>,
}

fn main() -> flow_rl::Result<()> {
    run(&Args::parse())
}

fn run(args: &Args) -> flow_rl::Result<()> {
    let device = Backend::from_flag(args.backend)?.open()?;
    let prompts = read_prompt_list(&args.prompts)?;
    println!(
        "read {} prompts from {}",
        prompts.len(),
        args.prompts.display()
    );
    let dtype = args.precision.dtype();

    let loading = Instant::now();
    let encoder = PromptEncoder::from_diffusers_folder(
        &args.model,
        Some(dtype),
        args.max_sequence_length,
        &device,
    )?
    .with_batch_size(args.batch_size)?;
    println!(
        "loaded the encoders of {} in {:.1} s",
        args.model.display(),
        loading.elapsed().as_secs_f64()
    );

    let encoding = Instant::now();
    let bar = ProgressBar::new(prompts.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "encoding [{bar:30}] {pos}/{len} prompts, {per_sec}, eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let (mut contexts, mut pooled) = (Vec::new(), Vec::new());
    for chunk in prompts.chunks(args.batch_size) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let embeddings = encoder.encode(&chunk)?;
        contexts.push(embeddings.context);
        pooled.push(embeddings.pooled);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    // The encoders are no longer needed: free them before the embeddings are gathered.
    let record = encoder.encoding();
    drop(encoder);
    let seconds = encoding.elapsed().as_secs_f64();

    let embeddings =
        PromptEmbeddings::new(prompts, Tensor::cat(contexts, 0), Tensor::cat(pooled, 0))?
            .with_encoding(record)?;
    embeddings.save(&args.out)?;
    println!(
        "encoded {} prompts in {seconds:.1} s ({:.2} prompts/s): context {:?}, pooled {:?} -> {}",
        embeddings.len(),
        embeddings.len() as f64 / seconds,
        embeddings.context.dims(),
        embeddings.pooled.dims(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
#[path = "../tests/support/text_encoder_folder.rs"]
mod text_encoder_folder;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_prompt_embedding_file_that_records_its_encoding() {
        let root = tempfile::tempdir().unwrap();
        text_encoder_folder::write_text_encoders(root.path());
        let list = root.path().join("prompts.json");
        std::fs::write(&list, r#"["a cat", "", "two dogs"]"#).unwrap();
        let out = root.path().join("prompts.safetensors");
        let args = Args::try_parse_from([
            "encode_prompts",
            "--model",
            root.path().to_str().unwrap(),
            "--prompts",
            list.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--max-sequence-length",
            "9",
            "--batch-size",
            "2",
            "--precision",
            "f32",
        ])
        .unwrap();
        run(&args).unwrap();
        let embeddings = PromptEmbeddings::load(&out, &Device::default()).unwrap();
        assert_eq!(embeddings.prompts, ["a cat", "", "two dogs"]);
        assert_eq!(embeddings.context.dims(), [3, 77 + 9, 32]);
        let encoding = embeddings
            .encoding()
            .expect("the file records its encoding");
        assert_eq!(encoding.max_sequence_length, 9);
        assert!(
            encoding
                .encoders
                .iter()
                .all(|encoder| encoder.dtype == "f32")
        );
    }
}
