//! `PromptEncoder` against diffusers' `StableDiffusion3Pipeline.encode_prompt`, on the tiny
//! random CLIP-L-like, bigG-like and T5 fixtures (tests/fixtures/clip, tests/fixtures/t5) laid
//! out as a diffusers SD3 folder; the expected output comes from
//! scripts/prompt_encoder_fixture.py.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::FloatDType;
use common::relative_error;
use flow_rl::Error;
use flow_rl::models::mmdit::PromptEmbeddings;
use flow_rl::models::prompt_encoder::PromptEncoder;
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
    let parts = [
        ("clip/clip_l/text_encoder", "text_encoder"),
        ("clip/clip_l/tokenizer", "tokenizer"),
        ("clip/clip_g/text_encoder_2", "text_encoder_2"),
        ("clip/clip_g/tokenizer_2", "tokenizer_2"),
        ("t5/text_encoder_3", "text_encoder_3"),
    ];
    for (from, to) in parts {
        let target = root.path().join(to);
        std::fs::create_dir(&target).unwrap();
        for entry in std::fs::read_dir(fixtures().join(from)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
    }
    std::fs::create_dir(root.path().join("tokenizer_3")).unwrap();
    std::fs::copy(
        fixtures().join("t5/tokenizer.json"),
        root.path().join("tokenizer_3/tokenizer.json"),
    )
    .unwrap();
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
    assert_eq!(host(loaded.context), host(embeddings.context));
    assert_eq!(host(loaded.pooled), host(embeddings.pooled));
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
