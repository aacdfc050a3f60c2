//! Whole CLIP models against transformers' `CLIPModel` and open_clip's `CLIP`: two tiny
//! models with every parameter random (tests/fixtures/clip_model, made by
//! scripts/clip_model_fixture.py), one in each library's layout, fed the same preprocessed
//! pixels and token ids.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use common::relative_error;
use flow_rl::Error;
use flow_rl::models::clip::{
    ClipActivation, ClipLayout, ClipModel, ClipModelConfig, ClipModelWeights, ClipPooling,
    ClipTextConfig, ClipTextWeights, ClipVisionConfig,
};
use safetensors::SafeTensors;

/// f32 against either library in f32: the same operations in another order.
const F32_TOLERANCE: f32 = 1e-5;
/// bf16 weights (LayerNorms, attention scores and the residual stream in f32, each Linear's
/// input rounded to bf16) against the libraries in f32: every weight and Linear input
/// carries a relative rounding error up to 2⁻⁹ ≈ 2e-3, which two layers of random weights
/// (std 0.4, LayerNorm gains 1 ± 0.3) per tower amplify; the measured worst case over every
/// output is given in docs/clip.md.
const BF16_TOLERANCE: f32 = 8e-2;

/// f16 weights (HPSv2's released files) against open_clip in f32 weights: as for bf16, with
/// 3 more mantissa bits (rounding up to 2⁻¹¹ ≈ 5e-4); measured 4.2e-3.
const F16_TOLERANCE: f32 = 1e-2;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clip_model")
        .join(path)
}

/// f32 tensors by name, and the i64 ones, from a fixture file.
struct Tensors {
    floats: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    ints: BTreeMap<String, (Vec<i64>, Vec<usize>)>,
}

impl Tensors {
    fn load(name: &str) -> Self {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let (mut floats, mut ints) = (BTreeMap::new(), BTreeMap::new());
        for (key, view) in file.tensors() {
            let shape = view.shape().to_vec();
            match view.dtype() {
                safetensors::Dtype::I64 => {
                    let host = view
                        .data()
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    ints.insert(key, (host, shape));
                }
                _ => {
                    let host = view
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    floats.insert(key, (host, shape));
                }
            }
        }
        Self { floats, ints }
    }

    fn get(&self, key: &str) -> &[f32] {
        &self.floats[key].0
    }

    fn pixels(&self, device: &Device) -> Tensor<4> {
        let (values, shape) = &self.floats["pixels"];
        let shape: [usize; 4] = shape.clone().try_into().unwrap();
        Tensor::from_data(TensorData::new(values.clone(), shape), device)
    }

    fn ids(&self, device: &Device) -> Tensor<2, Int> {
        let (values, shape) = &self.ints["input_ids"];
        let shape: [usize; 2] = shape.clone().try_into().unwrap();
        Tensor::from_data(TensorData::new(values.clone(), shape), device)
    }
}

fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().try_to_vec().unwrap()
}

/// The architectures scripts/clip_model_fixture.py gives each model.
fn fixture_config(layout: ClipLayout) -> ClipModelConfig {
    match layout {
        ClipLayout::Transformers => ClipModelConfig::new(
            ClipTextConfig::new(
                24,
                2,
                2,
                96,
                ClipActivation::QuickGelu,
                12,
                ClipPooling::HighestId,
            )
            .with_vocab_size(634),
            ClipVisionConfig::new(8, 32, 2, 2, 128, ClipActivation::QuickGelu, 12)
                .with_image_size(32),
        ),
        ClipLayout::OpenClip => ClipModelConfig::new(
            ClipTextConfig::new(
                20,
                2,
                4,
                80,
                ClipActivation::Gelu,
                16,
                ClipPooling::HighestId,
            )
            .with_vocab_size(634),
            ClipVisionConfig::new(8, 40, 2, 4, 120, ClipActivation::Gelu, 16).with_image_size(32),
        ),
    }
}

/// Each layout's checkpoint and its expected outputs.
fn cases() -> [(ClipLayout, PathBuf, &'static str); 2] {
    [
        (
            ClipLayout::Transformers,
            fixture("hf"),
            "expected_hf.safetensors",
        ),
        (
            ClipLayout::OpenClip,
            fixture("open_clip.safetensors"),
            "expected_open_clip.safetensors",
        ),
    ]
}

fn load(layout: ClipLayout, path: &Path, dtype: Option<FloatDType>, device: &Device) -> ClipModel {
    let weights = ClipModelWeights::open(path).unwrap();
    assert_eq!(weights.layout(), layout);
    let model = fixture_config(layout).init(device).unwrap();
    weights.load_into(model, dtype).unwrap()
}

/// `scale · cos(image, text)` for every pair `[images, texts]`.
fn logits(images: Tensor<2>, texts: Tensor<2>, scale: f32) -> Tensor<2> {
    let unit = |x: Tensor<2>| x.clone() / x.powi_scalar(2).sum_dim(1).sqrt();
    unit(images)
        .matmul(unit(texts).transpose())
        .mul_scalar(scale)
}

/// The worst relative error over every output of `model` against `expected`.
fn worst_error(model: &ClipModel, expected: &Tensors, device: &Device) -> f32 {
    let inputs = Tensors::load("pixels.safetensors");
    let vision = model.vision.forward(inputs.pixels(device)).unwrap();
    let images = model.image_embeddings(inputs.pixels(device)).unwrap();
    let texts = model.text_embeddings(inputs.ids(device)).unwrap();
    assert_eq!(images.dtype(), DType::F32);
    assert_eq!(texts.dtype(), DType::F32);
    let scale = model.logit_scale();
    let mut errors = vec![
        relative_error(&host(images.clone()), expected.get("image_embeds")),
        relative_error(&host(vision.projected), expected.get("image_embeds")),
        relative_error(&host(texts.clone()), expected.get("text_embeds")),
        relative_error(&[scale], expected.get("logit_scale")),
        relative_error(
            &host(logits(images, texts, scale)),
            expected.get("logits_per_image"),
        ),
    ];
    if expected.floats.contains_key("pooled") {
        errors.push(relative_error(&host(vision.pooled), expected.get("pooled")));
    }
    errors.into_iter().fold(0f32, f32::max)
}

#[test]
fn presets_have_the_released_sizes() {
    let l14 = ClipVisionConfig::vit_l14();
    assert_eq!(
        (
            l14.image_size,
            l14.patch_size,
            l14.width,
            l14.layers,
            l14.heads
        ),
        (224, 14, 1024, 24, 16)
    );
    assert_eq!(
        (l14.mlp_width, l14.activation, l14.projection),
        (4096, ClipActivation::QuickGelu, 768)
    );
    let h14 = ClipVisionConfig::vit_h14();
    assert_eq!(
        (
            h14.image_size,
            h14.patch_size,
            h14.width,
            h14.layers,
            h14.heads
        ),
        (224, 14, 1280, 32, 16)
    );
    assert_eq!(
        (h14.mlp_width, h14.activation, h14.projection),
        (5120, ClipActivation::Gelu, 1024)
    );
    let pickscore = ClipModelConfig::vit_h14();
    let text = &pickscore.text;
    assert_eq!(
        (
            text.width,
            text.layers,
            text.heads,
            text.mlp_width,
            text.projection
        ),
        (1024, 24, 16, 4096, 1024)
    );
    assert_eq!(
        (text.activation, text.pooling),
        (ClipActivation::Gelu, ClipPooling::HighestId)
    );
    assert_eq!(ClipModelConfig::vit_l14().text, ClipTextConfig::vit_l14());
    for config in [ClipModelConfig::vit_l14(), pickscore] {
        config.validate().unwrap();
    }
}

#[test]
fn configs_refuse_bad_sizes() {
    let mut vision = ClipVisionConfig::vit_l14();
    vision.patch_size = 15;
    let err = vision.validate().unwrap_err().to_string();
    assert!(err.contains("patch_size") && err.contains("224"), "{err}");
    let mut mismatched = ClipModelConfig::vit_l14();
    mismatched.vision.projection = 1024;
    let err = mismatched.validate().unwrap_err().to_string();
    assert!(
        err.contains("vision.projection") && err.contains("768"),
        "{err}"
    );
}

#[test]
fn a_transformers_folder_infers_the_fixture_architecture() {
    let weights = ClipModelWeights::open(fixture("hf")).unwrap();
    assert_eq!(weights.prefix(), "");
    assert_eq!(
        weights.infer_config().unwrap(),
        fixture_config(ClipLayout::Transformers)
    );
}

#[test]
fn open_clip_shapes_are_inferred_and_unguessable_heads_named() {
    let weights = ClipModelWeights::open(fixture("open_clip.safetensors")).unwrap();
    assert_eq!(weights.layout(), ClipLayout::OpenClip);
    // Widths 20 and 40 are no multiple of 64: no released head width fits, so the
    // architecture must be given.
    let err = weights.infer_config().unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { name, .. } if name == "text heads"),
        "{err}"
    );
}

#[test]
fn f32_outputs_match_transformers_and_open_clip() {
    let device = Device::default();
    for (layout, path, expected) in cases() {
        let expected = Tensors::load(expected);
        let model = load(layout, &path, None, &device);
        let error = worst_error(&model, &expected, &device);
        println!("{layout:?}: f32 worst relative error {error:e}");
        assert!(error <= F32_TOLERANCE, "{layout:?}: {error:e}");
    }
}

#[test]
fn an_hpsv2_style_torch_checkpoint_loads_under_its_state_dict() {
    let device = Device::default();
    let weights = ClipModelWeights::open(fixture("open_clip.pt")).unwrap();
    assert_eq!(
        (weights.layout(), weights.prefix()),
        (ClipLayout::OpenClip, "state_dict.")
    );
    let model = weights
        .load_into(
            fixture_config(ClipLayout::OpenClip).init(&device).unwrap(),
            None,
        )
        .unwrap();
    let expected = Tensors::load("expected_open_clip.safetensors");
    let error = worst_error(&model, &expected, &device);
    assert!(error <= F32_TOLERANCE, "{error:e}");
}

#[test]
fn an_f16_torch_checkpoint_stays_f16_and_matches_open_clip() {
    let device = Device::default();
    if !device.supports_dtype(FloatDType::F16) {
        return;
    }
    let weights = ClipModelWeights::open(fixture("open_clip_f16.pt")).unwrap();
    let model = weights
        .load_into(
            fixture_config(ClipLayout::OpenClip).init(&device).unwrap(),
            None,
        )
        .unwrap();
    assert_eq!(
        model.vision.layers[1].mlp.fc2.weight.val().dtype(),
        DType::F16
    );
    let expected = Tensors::load("expected_open_clip.safetensors");
    let error = worst_error(&model, &expected, &device);
    println!("OpenClip f16 .pt: worst relative error {error:e}");
    assert!(error <= F16_TOLERANCE, "{error:e}");
}

#[test]
fn load_infers_and_loads_a_transformers_folder() {
    let device = Device::default();
    let model = ClipModelWeights::open(fixture("hf"))
        .unwrap()
        .load(None, &device)
        .unwrap();
    let error = worst_error(&model, &Tensors::load("expected_hf.safetensors"), &device);
    assert!(error <= F32_TOLERANCE, "{error:e}");
}

#[test]
fn bf16_weights_stay_bf16_and_match_both_libraries() {
    let device = Device::default();
    if !device.supports_dtype(FloatDType::BF16) {
        return;
    }
    for (layout, path, expected) in cases() {
        let expected = Tensors::load(expected);
        let model = load(layout, &path, Some(FloatDType::BF16), &device);
        assert_eq!(
            model.vision.layers[0].self_attn.q_proj.weight.val().dtype(),
            DType::BF16
        );
        assert_eq!(
            model.vision.patch_embedding.weight.val().dtype(),
            DType::BF16
        );
        let error = worst_error(&model, &expected, &device);
        println!("{layout:?}: bf16 worst relative error {error:e}");
        assert!(error <= BF16_TOLERANCE, "{layout:?}: {error:e}");
    }
}

#[test]
fn mis_shaped_missing_and_unexpected_keys_are_all_listed() {
    let device = Device::default();
    let weights = ClipModelWeights::open(fixture("hf")).unwrap();
    let mut other = fixture_config(ClipLayout::Transformers);
    other.vision.layers = 3;
    other.text.layers = 1;
    other.vision.mlp_width = 64;
    let Err(Error::WeightMismatch { problems, .. }) =
        weights.load_into(other.init(&device).unwrap(), None)
    else {
        panic!("expected WeightMismatch");
    };
    let listed = |kind: &str, key: &str| problems.iter().any(|p| p.kind() == kind && p.key == key);
    assert!(
        listed(
            "missing",
            "vision_model.encoder.layers.2.self_attn.q_proj.weight"
        ),
        "{problems:?}"
    );
    assert!(
        listed("unexpected", "text_model.encoder.layers.1.mlp.fc2.bias"),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| {
        p.key == "vision_model.encoder.layers.0.mlp.fc1.weight"
            && p.expected == Some(vec![64, 32])
            && p.found == Some(vec![128, 32])
    }));
}

#[test]
fn open_clip_mismatches_name_the_fused_keys() {
    let device = Device::default();
    let weights = ClipModelWeights::open(fixture("open_clip.safetensors")).unwrap();
    let mut other = fixture_config(ClipLayout::OpenClip);
    other.text.width = 24;
    other.text.heads = 4;
    other.vision.projection = 8;
    other.text.projection = 8;
    let Err(Error::WeightMismatch { problems, .. }) =
        weights.load_into(other.init(&device).unwrap(), None)
    else {
        panic!("expected WeightMismatch");
    };
    // One entry for the fused q/k/v tensor, by its stored shape.
    let fused: Vec<_> = problems
        .iter()
        .filter(|p| p.key == "transformer.resblocks.0.attn.in_proj_weight")
        .collect();
    assert_eq!(fused.len(), 1, "{problems:?}");
    assert_eq!(fused[0].expected, Some(vec![72, 24]));
    assert_eq!(fused[0].found, Some(vec![60, 20]));
    // The projections by their stored [width, projection] shape.
    assert!(problems.iter().any(|p| {
        p.key == "visual.proj" && p.expected == Some(vec![40, 8]) && p.found == Some(vec![40, 16])
    }));
}

#[test]
fn whole_clip_checkpoints_are_refused_as_text_encoders() {
    for (path, says) in [
        (fixture("hf"), "whole CLIP model"),
        (fixture("hf/model.safetensors"), "ClipModelWeights::open"),
        (fixture("open_clip.safetensors"), "whole OpenCLIP model"),
        (fixture("vision_only.safetensors"), "CLIP vision tower"),
    ] {
        let err = ClipTextWeights::open(&path).unwrap_err();
        assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
        assert!(err.to_string().contains(says), "{path:?}: {err}");
    }
}

#[test]
fn partial_checkpoints_are_refused_as_whole_clips() {
    let text_only = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clip/clip_l/text_encoder/model.safetensors");
    for (path, says) in [
        (text_only, "CLIP text encoder alone"),
        (
            fixture("vision_only.safetensors"),
            "CLIP vision tower alone",
        ),
        (fixture("pixels.safetensors"), "not a CLIP model"),
    ] {
        let err = ClipModelWeights::open(&path).unwrap_err();
        assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
        assert!(err.to_string().contains(says), "{path:?}: {err}");
    }
}

#[test]
fn wrong_pixel_shapes_are_named_errors() {
    let device = Device::default();
    let model = fixture_config(ClipLayout::Transformers)
        .init(&device)
        .unwrap();
    for (shape, says) in [
        ([2, 4, 32, 32], "3 channels"),
        ([2, 1, 32, 32], "3 channels"),
        ([2, 3, 28, 28], "32 × 32"),
        ([2, 3, 32, 24], "32 × 32"),
        ([0, 3, 32, 32], "B >= 1"),
    ] {
        let err = model
            .image_embeddings(Tensor::zeros(shape, &device))
            .unwrap_err();
        assert!(
            matches!(&err, Error::ShapeMismatch { name, .. } if name == "pixels"),
            "{err}"
        );
        assert!(err.to_string().contains(says), "{shape:?}: {err}");
    }
}
