//! `PromptEncoder` against diffusers' `StableDiffusion3Pipeline.encode_prompt`, on the tiny
//! random CLIP-L-like, bigG-like and T5 fixtures (tests/fixtures/clip, tests/fixtures/t5) laid
//! out as a diffusers SD3 folder; the expected output comes from
//! scripts/prompt_encoder_fixture.py.

mod common;
#[path = "support/text_encoder_folder.rs"]
mod text_encoder_folder;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::FloatDType;
use common::relative_error;
use flow_rl::Error;
use flow_rl::models::mmdit::PromptEmbeddings;
use flow_rl::models::prompt_encoder::{PromptEncoder, PromptEncoderFiles};
use safetensors::SafeTensors;
use tempfile::TempDir;

/// f32 against diffusers in f32: the same operations in another order.
const F32_TOLERANCE: f32 = 1e-5;
/// bf16 weights against diffusers in f32: each encoder alone is within 3.6e-2 in bf16
/// (tests/clip.rs, tests/t5.rs); concatenation adds no error.
const BF16_TOLERANCE: f32 = 5e-2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixture encoders and tokenizers copied into a diffusers SD3 folder layout.
fn diffusers_folder() -> TempDir {
    let root = tempfile::tempdir().unwrap();
    text_encoder_folder::write_text_encoders(root.path());
    root
}

struct Expected {
    prompts: Vec<String>,
    max_sequence_length: usize,
    context: (Vec<f32>, Vec<usize>),
    pooled: (Vec<f32>, Vec<usize>),
}

impl Expected {
    fn load() -> Self {
        let folder = fixtures().join("prompt_encoder");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("expected.json")).unwrap())
                .unwrap();
        let bytes = std::fs::read(folder.join("expected.safetensors")).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let tensor = |name: &str| {
            let view = file.tensor(name).unwrap();
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (values, view.shape().to_vec())
        };
        Self {
            prompts: json["prompts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|prompt| prompt.as_str().unwrap().to_owned())
                .collect(),
            max_sequence_length: json["max_sequence_length"].as_u64().unwrap() as usize,
            context: tensor("context"),
            pooled: tensor("pooled"),
        }
    }

    fn prompts(&self) -> Vec<&str> {
        self.prompts.iter().map(String::as_str).collect()
    }
}

fn host<const D: usize>(tensor: Tensor<D>) -> (Vec<f32>, Vec<usize>) {
    let dims = tensor.dims().to_vec();
    (
        tensor.into_data().convert::<f32>().try_to_vec().unwrap(),
        dims,
    )
}

/// [`relative_error`] of two host tensors, after checking their shapes agree.
fn relative_error_of(actual: &(Vec<f32>, Vec<usize>), expected: &(Vec<f32>, Vec<usize>)) -> f32 {
    assert_eq!(actual.1, expected.1, "shapes");
    relative_error(&actual.0, &expected.0)
}

fn encoder(folder: &Path, dtype: Option<FloatDType>, batch_size: usize) -> PromptEncoder {
    let expected = Expected::load();
    PromptEncoder::from_diffusers_folder(
        folder,
        dtype,
        expected.max_sequence_length,
        &Device::default(),
    )
    .unwrap()
    .with_batch_size(batch_size)
    .unwrap()
}

#[test]
fn matches_diffusers_encode_prompt_in_f32_whatever_the_batch_size() {
    let folder = diffusers_folder();
    let expected = Expected::load();
    // 8 prompts: one pass, uneven passes of 3, and one prompt per pass.
    for batch_size in [8, 3, 1] {
        let embeddings = encoder(folder.path(), None, batch_size)
            .encode(&expected.prompts())
            .unwrap();
        assert_eq!(embeddings.prompts, expected.prompts);
        let context = relative_error_of(&host(embeddings.context), &expected.context);
        let pooled = relative_error_of(&host(embeddings.pooled), &expected.pooled);
        eprintln!("f32, batch {batch_size}: context {context:e}, pooled {pooled:e}");
        assert!(
            context < F32_TOLERANCE,
            "batch {batch_size}: context {context:e}"
        );
        assert!(
            pooled < F32_TOLERANCE,
            "batch {batch_size}: pooled {pooled:e}"
        );
    }
}

#[test]
fn matches_diffusers_encode_prompt_in_bf16() {
    let folder = diffusers_folder();
    let expected = Expected::load();
    let embeddings = encoder(folder.path(), Some(FloatDType::BF16), 8)
        .encode(&expected.prompts())
        .unwrap();
    let context = relative_error_of(&host(embeddings.context), &expected.context);
    let pooled = relative_error_of(&host(embeddings.pooled), &expected.pooled);
    eprintln!("bf16: context {context:e}, pooled {pooled:e}");
    assert!(context < BF16_TOLERANCE, "context {context:e}");
    assert!(pooled < BF16_TOLERANCE, "pooled {pooled:e}");
}

#[test]
fn embeddings_round_trip_through_the_prompt_embedding_file() {
    let folder = diffusers_folder();
    let expected = Expected::load();
    let embeddings = encoder(folder.path(), None, 4)
        .encode(&expected.prompts())
        .unwrap();
    let path = folder.path().join("prompts.safetensors");
    embeddings.save(&path).unwrap();
    let loaded = PromptEmbeddings::load(&path, &Device::default()).unwrap();
    assert_eq!(loaded.prompts, expected.prompts);
    assert_eq!(loaded.encoding(), embeddings.encoding());
    assert_eq!(host(loaded.context), host(embeddings.context));
    assert_eq!(host(loaded.pooled), host(embeddings.pooled));
}

#[test]
fn the_embeddings_record_how_they_were_encoded() {
    let folder = diffusers_folder();
    let expected = Expected::load();
    let embeddings = encoder(folder.path(), Some(FloatDType::BF16), 8)
        .encode(&expected.prompts()[..2])
        .unwrap();
    let encoding = embeddings
        .encoding()
        .expect("PromptEncoder records its encoding");
    assert_eq!(encoding.clip_tokens, 77);
    assert_eq!(encoding.max_sequence_length, expected.max_sequence_length);
    assert_eq!(encoding.context_tokens(), embeddings.context_tokens());
    let names: Vec<&str> = encoding.encoders.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["clip_l", "clip_g", "t5"]);
    let clip_l = &encoding.encoders[0];
    assert_eq!(clip_l.dtype, "bf16");
    assert_eq!(clip_l.config["width"], 12);
    assert_eq!(clip_l.config["activation"], "QuickGelu");
    assert_eq!(encoding.encoders[1].config["width"], 16);
    assert_eq!(encoding.encoders[2].config["d_model"], 32);
    let canonical = std::fs::canonicalize(folder.path()).unwrap();
    assert_eq!(
        encoding.encoders[2].tokenizer.as_deref(),
        Some(
            canonical
                .join("tokenizer_3/tokenizer.json")
                .to_str()
                .unwrap()
        )
    );

    // The record names the files: the same folder by another path matches, another does not.
    let files = PromptEncoderFiles::diffusers_folder(folder.path().join("tokenizer/.."));
    assert!(files.produced(encoding));
    let elsewhere = diffusers_folder();
    assert!(!PromptEncoderFiles::diffusers_folder(elsewhere.path()).produced(encoding));
}

/// Stability's single T5 file in place of `text_encoder_3/`. (The CLIP single files carry
/// no `config.json`, and their head count is inferred as width / 64, which the tiny
/// fixtures' widths 12 and 16 do not follow; tests/clip.rs loads them with a given config.)
#[test]
fn a_stability_single_file_encodes_as_the_diffusers_folder_does() {
    let folder = diffusers_folder();
    let expected = Expected::load();
    let files = PromptEncoderFiles {
        t5: fixtures().join("t5/t5_single.safetensors"),
        ..PromptEncoderFiles::diffusers_folder(folder.path())
    };
    let embeddings = PromptEncoder::from_files(
        &files,
        None,
        expected.max_sequence_length,
        &Device::default(),
    )
    .unwrap()
    .encode(&expected.prompts())
    .unwrap();
    let t5 = embeddings.encoding().unwrap().encoders[2].clone();
    let context = relative_error_of(&host(embeddings.context), &expected.context);
    let pooled = relative_error_of(&host(embeddings.pooled), &expected.pooled);
    assert!(context < F32_TOLERANCE, "context {context:e}");
    assert!(pooled < F32_TOLERANCE, "pooled {pooled:e}");
    assert!(
        t5.weights
            .as_deref()
            .unwrap()
            .ends_with("t5_single.safetensors")
    );
}

#[test]
fn a_context_length_other_than_the_run_expects_is_an_error() {
    let folder = diffusers_folder();
    let expected = Expected::load();
    let embeddings = encoder(folder.path(), None, 8)
        .encode(&expected.prompts()[..1])
        .unwrap();
    let length = 77 + expected.max_sequence_length;
    embeddings.check_context_tokens(length).unwrap();
    let error = embeddings.check_context_tokens(77 + 256).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::InvalidArgument { .. }), "{message}");
    for part in [
        format!("{length} context tokens"),
        format!("max_sequence_length {}", expected.max_sequence_length),
        "333 context tokens".to_owned(),
    ] {
        assert!(message.contains(&part), "{part:?} in {message}");
    }

    // A record that disagrees with the context is refused, in memory and in a file.
    let mut wrong = embeddings.encoding().unwrap().clone();
    wrong.max_sequence_length += 1;
    let error = embeddings.clone().with_encoding(wrong.clone()).unwrap_err();
    assert!(error.to_string().contains("prompt encoding"), "{error}");
    let path = folder.path().join("prompts.safetensors");
    embeddings.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let stored = serde_json::to_string(embeddings.encoding().unwrap()).unwrap();
    let tampered = serde_json::to_string(&wrong).unwrap();
    for (replacement, complaint) in [
        (tampered, "tokens in all"),
        ("{}".to_owned(), "not a prompt-encoding record"),
    ] {
        let text = rewrite_metadata(&bytes, &stored, &replacement);
        let bad = folder.path().join("bad.safetensors");
        std::fs::write(&bad, text).unwrap();
        let error = PromptEmbeddings::load(&bad, &Device::default()).unwrap_err();
        assert!(matches!(error, Error::Checkpoint { .. }), "{error}");
        assert!(error.to_string().contains(complaint), "{error}");
    }
}

/// A safetensors file with the `encoding` metadata value `stored` replaced by `replacement`
/// (the header rewritten, the tensor bytes kept).
fn rewrite_metadata(bytes: &[u8], stored: &str, replacement: &str) -> Vec<u8> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let mut header = header;
    assert_eq!(header["__metadata__"]["encoding"], stored);
    header["__metadata__"]["encoding"] = replacement.into();
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + header_len..]);
    out
}

#[test]
fn bad_input_gets_named_errors() {
    let folder = diffusers_folder();
    let device = Device::default();
    for length in [0, 513] {
        let error =
            PromptEncoder::from_diffusers_folder(folder.path(), None, length, &device).unwrap_err();
        assert!(
            matches!(&error, Error::InvalidArgument { name, .. } if name == "max_sequence_length"),
            "{error}"
        );
    }
    let encoder = encoder(folder.path(), None, 8);
    let error = encoder.encode(&[]).unwrap_err();
    assert!(error.to_string().contains("prompts"), "{error}");
    let error = encoder.with_batch_size(0).unwrap_err();
    assert!(error.to_string().contains("batch_size"), "{error}");

    std::fs::remove_file(folder.path().join("tokenizer_3/tokenizer.json")).unwrap();
    let error = PromptEncoder::from_diffusers_folder(folder.path(), None, 10, &device).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert!(error.to_string().contains("tokenizer_3"), "{error}");
}
