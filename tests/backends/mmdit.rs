//! The SD3-family MMDiT: the committed diffusers fixture's dual-attention model, forward
//! with and without its LoRA adapter, and the gradient with respect to the latents.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::FloatDType;
use flow_rl::Rng;
use flow_rl::models::mmdit::{Mmdit, MmditCheckpoint, PromptEmbeddings};
use safetensors::SafeTensors;

use super::harness::{NETWORK, assert_matches, host, normals, reference_device};

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mmdit")
        .join(relative)
}

/// The fixture's model in f32 on `device`, with its adapter if `lora`.
fn model(device: &Device, lora: bool) -> Mmdit {
    let checkpoint = MmditCheckpoint::open(fixture("dual/official.safetensors")).unwrap();
    let config = checkpoint.infer_config().unwrap();
    let model = checkpoint
        .load_into(config.init(device).unwrap(), Some(FloatDType::F32))
        .unwrap();
    if lora {
        model
            .load_lora(fixture("dual/lora.safetensors"), Some(FloatDType::F32))
            .unwrap()
    } else {
        model
    }
}

/// A tensor of the fixture's `cases.safetensors` as f32 values and shape.
fn case(name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(fixture("cases.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(name).unwrap();
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (values, view.shape().to_vec())
}

fn tensor<const D: usize>(name: &str, device: &Device) -> Tensor<D> {
    let (values, shape) = case(name);
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The velocity on `device`, as f64.
fn velocity(model: &Mmdit, device: &Device) -> Vec<f64> {
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), device).unwrap();
    let output = model
        .forward(
            tensor("latents", device),
            tensor("timestep", device),
            prompts.context,
            prompts.pooled,
        )
        .unwrap();
    host(output)
}

/// `d/dx Σ w·v(x)` on `device` (autodiff) for fixed host weights `w`.
fn latent_gradient(device: &Device) -> Vec<f64> {
    let device = device.clone().autodiff();
    let model = model(&device, true);
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), &device).unwrap();
    let (_, shape) = case("latents");
    let count = shape.iter().product();
    let weights = normals(&mut Rng::seed_from(11), count);
    let weights = Tensor::<4>::from_data(TensorData::new(weights, shape), &device);
    let latents = tensor::<4>("latents", &device).require_grad();
    let output = model
        .forward(
            latents.clone(),
            tensor("timestep", &device),
            prompts.context,
            prompts.pooled,
        )
        .unwrap();
    let grads = (output * weights).sum().backward();
    host(latents.grad(&grads).unwrap())
}

/// Forward (base and LoRA) against flex and against diffusers' own output, and the latent
/// gradient against flex.
pub fn check(device: &Device) {
    let reference = reference_device();
    for (lora, expected) in [(false, "dual.velocity"), (true, "dual.lora_velocity")] {
        let what = if lora {
            "velocity with LoRA"
        } else {
            "velocity"
        };
        let got = velocity(&model(device, lora), device);
        let want = velocity(&model(&reference, lora), &reference);
        assert_matches("mmdit", what, &got, &want, NETWORK.scaled_abs(&want));
        let diffusers: Vec<f64> = case(expected).0.into_iter().map(f64::from).collect();
        assert_matches(
            "mmdit",
            &format!("{what} against diffusers"),
            &got,
            &diffusers,
            NETWORK.scaled_abs(&diffusers),
        );
    }
    let want = latent_gradient(&reference);
    let got = latent_gradient(device);
    assert_matches(
        "mmdit",
        "latent gradient with LoRA",
        &got,
        &want,
        NETWORK.scaled_abs(&want),
    );
}
