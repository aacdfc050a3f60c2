//! The MMDiT against diffusers' `SD3Transformer2DModel`: a committed fixture made by
//! `scripts/mmdit_fixture.py` (tiny SD3.5-style models with random weights, with and without
//! MMDiT-X dual attention, qk-norm on, saved in both key layouts, a PEFT LoRA adapter, inputs
//! and diffusers' output velocities). See `tests/fixtures/mmdit/README.md`.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use common::mmdit_fixture::{Cases, fixture};
use common::relative_error;
use flow_rl::models::mmdit::{Mmdit, MmditCheckpoint, MmditConfig, PromptEmbeddings, WeightLayout};
use flow_rl::policy::checked_velocity;

/// f32 against diffusers in f32: `max|ours − theirs| ≤ F32_TOLERANCE · max|theirs|`. Both
/// sides compute in f32 from the same bf16-exact weights, the timestep frequencies rounded
/// as diffusers rounds them; only the order of reductions differs. Measured on flex: 1.2e-6
/// (1.9e-6 with the LoRA adapter); frequencies computed in f64 and rounded once gave 3.6e-6
/// (7.3e-6), which this bound rejects.
const F32_TOLERANCE: f32 = 2.5e-6;
/// bf16 weights and activations against diffusers in bf16: each side rounds its own
/// intermediates to 8 mantissa bits (the two bf16 runs differ from the f32 one by up to
/// 0.03 at max |v| ≈ 4.5, as the fixture's README records).
const BF16_TOLERANCE: f32 = 2e-2;

fn host(tensor: Tensor<4>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().try_to_vec().unwrap()
}

fn expected_config(name: &str) -> MmditConfig {
    let (depth, dual) = match name {
        "plain" => (2, vec![]),
        "dual" => (3, vec![0]),
        _ => unreachable!(),
    };
    MmditConfig::new(depth, 2)
        .with_head_dim(16)
        .with_context_dim(24)
        .with_pooled_dim(20)
        .with_pos_embed_max_size(8)
        .with_qk_norm(true)
        .with_dual_attention_layers(dual)
}

fn load(path: &Path, layout: WeightLayout, dtype: Option<FloatDType>, device: &Device) -> Mmdit {
    let checkpoint = MmditCheckpoint::open(path).expect("open the fixture");
    assert_eq!(checkpoint.layout(), layout, "{}", path.display());
    let config = checkpoint.infer_config().expect("infer the architecture");
    let model = config.init(device).expect("build");
    checkpoint
        .load_into(model, dtype)
        .expect("load the fixture")
}

fn layouts(name: &str) -> [(PathBuf, WeightLayout); 2] {
    [
        (
            fixture(&format!("{name}/official.safetensors")),
            WeightLayout::Official,
        ),
        (
            fixture(&format!("{name}/diffusers")),
            WeightLayout::Diffusers,
        ),
    ]
}

fn forward(model: &Mmdit, cases: &Cases, prompts: &PromptEmbeddings, device: &Device) -> Vec<f32> {
    let output = model
        .forward(
            cases.tensor("latents", device),
            cases.tensor("timestep", device),
            prompts.context.clone(),
            prompts.pooled.clone(),
        )
        .expect("forward");
    assert_eq!(output.dtype(), DType::F32);
    host(output)
}

#[test]
fn both_layouts_infer_the_fixture_architecture() {
    for name in ["plain", "dual"] {
        for (path, layout) in layouts(name) {
            let checkpoint = MmditCheckpoint::open(&path).unwrap();
            assert_eq!(checkpoint.layout(), layout);
            assert_eq!(checkpoint.infer_config().unwrap(), expected_config(name));
        }
    }
    let single = MmditCheckpoint::open(fixture("plain/official.safetensors")).unwrap();
    assert_eq!(single.other_components(), 1, "the VAE key is set aside");
}

/// diffusers' `model.parameters()` counts of the fixture's models (the positional table is
/// a buffer there, 8·8·32 = 2048 values more here).
#[test]
fn parameter_counts_match_diffusers() {
    assert_eq!(expected_config("plain").num_params(), 80_256 + 2048);
    assert_eq!(expected_config("dual").num_params(), 125_568 + 2048);
}

#[test]
fn f32_forward_matches_diffusers_in_both_layouts() {
    let device = Device::default();
    let cases = Cases::load();
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), &device).unwrap();
    for name in ["plain", "dual"] {
        let (expected, _) = cases.values(&format!("{name}.velocity"));
        for (path, layout) in layouts(name) {
            let model = load(&path, layout, Some(FloatDType::F32), &device);
            let error = relative_error(&forward(&model, &cases, &prompts, &device), &expected);
            assert!(
                error <= F32_TOLERANCE,
                "{name} {layout:?}: relative error {error:e} > {F32_TOLERANCE:e}"
            );
        }
    }
}

#[test]
fn the_policy_interface_gives_the_same_velocity() {
    let device = Device::default();
    let cases = Cases::load();
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), &device).unwrap();
    let model = load(
        &fixture("dual/official.safetensors"),
        WeightLayout::Official,
        Some(FloatDType::F32),
        &device,
    )
    .with_latent_size(4, 6);
    let latents: Tensor<4> = cases.tensor("latents", &device);
    let [batch, channels, height, width] = latents.dims();
    let velocity = checked_velocity(
        &model,
        latents.reshape([batch, channels * height * width]),
        cases.tensor("sigma", &device),
        &prompts.condition(),
    )
    .unwrap();
    let (expected, _) = cases.values("dual.velocity");
    let actual: Vec<f32> = velocity.into_data().convert::<f32>().try_to_vec().unwrap();
    let error = relative_error(&actual, &expected);
    assert!(error <= F32_TOLERANCE, "relative error {error:e}");
}

#[test]
fn lora_forward_matches_peft_in_both_layouts() {
    let device = Device::default();
    let cases = Cases::load();
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), &device).unwrap();
    for name in ["plain", "dual"] {
        let (expected, _) = cases.values(&format!("{name}.lora_velocity"));
        let (base, _) = cases.values(&format!("{name}.velocity"));
        for (path, layout) in layouts(name) {
            let model = load(&path, layout, Some(FloatDType::F32), &device)
                .load_lora(
                    fixture(&format!("{name}/lora.safetensors")),
                    Some(FloatDType::F32),
                )
                .expect("load the adapter");
            assert_eq!(model.lora(), Some((4, 8.0)));
            let actual = forward(&model, &cases, &prompts, &device);
            let error = relative_error(&actual, &expected);
            assert!(
                error <= F32_TOLERANCE,
                "{name} {layout:?} + LoRA: relative error {error:e}"
            );
            assert!(
                relative_error(&actual, &base) > 0.1,
                "the adapter must change the output"
            );
        }
    }
}

#[test]
fn bf16_weights_stay_bf16_and_match_diffusers_in_bf16() {
    let device = Device::default();
    if !device.supports_dtype(FloatDType::BF16) {
        return;
    }
    let cases = Cases::load();
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), &device).unwrap();
    for name in ["plain", "dual"] {
        let (expected, _) = cases.values(&format!("{name}.velocity_bf16"));
        for (path, layout) in layouts(name) {
            let model = load(&path, layout, None, &device);
            assert_eq!(model.activation_dtype(), DType::BF16);
            assert_eq!(model.context_embed.weight.val().dtype(), DType::BF16);
            let error = relative_error(&forward(&model, &cases, &prompts, &device), &expected);
            assert!(
                error <= BF16_TOLERANCE,
                "{name} {layout:?} in bf16: relative error {error:e}"
            );
        }
    }
}
