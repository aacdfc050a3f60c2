//! The SD3-family MMDiT: the committed diffusers fixture's dual-attention model, forward
//! with and without its LoRA adapter, and the gradient with respect to the latents.

use burn::prelude::*;
use burn::tensor::FloatDType;
use flow_rl::Rng;
use flow_rl::models::mmdit::{Mmdit, MmditCheckpoint, PromptEmbeddings};

use super::common::mmdit_fixture::{Cases, fixture};
use super::harness::{NETWORK, assert_matches, host, normals, reference_device};

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

/// The velocity on `device`, as f64.
fn velocity(model: &Mmdit, cases: &Cases, device: &Device) -> Vec<f64> {
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), device).unwrap();
    let output = model
        .forward(
            cases.tensor("latents", device),
            cases.tensor("timestep", device),
            prompts.context,
            prompts.pooled,
        )
        .unwrap();
    host(output)
}

/// `d/dx Σ w·v(x)` on `device` (autodiff) for fixed host weights `w`.
fn latent_gradient(cases: &Cases, device: &Device) -> Vec<f64> {
    let device = device.clone().autodiff();
    let model = model(&device, true);
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), &device).unwrap();
    let (_, shape) = cases.values("latents");
    let count = shape.iter().product();
    let weights = normals(&mut Rng::seed_from(11), count);
    let weights = Tensor::<4>::from_data(TensorData::new(weights, shape), &device);
    let latents = cases.tensor::<4>("latents", &device).require_grad();
    let output = model
        .forward(
            latents.clone(),
            cases.tensor("timestep", &device),
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
    let cases = Cases::load();
    for (lora, expected) in [(false, "dual.velocity"), (true, "dual.lora_velocity")] {
        let what = if lora {
            "velocity with LoRA"
        } else {
            "velocity"
        };
        let got = velocity(&model(device, lora), &cases, device);
        let want = velocity(&model(&reference, lora), &cases, &reference);
        assert_matches("mmdit", what, &got, &want, NETWORK.scaled_abs(&want));
        let diffusers: Vec<f64> = cases
            .values(expected)
            .0
            .into_iter()
            .map(f64::from)
            .collect();
        assert_matches(
            "mmdit",
            &format!("{what} against diffusers"),
            &got,
            &diffusers,
            NETWORK.scaled_abs(&diffusers),
        );
    }
    let want = latent_gradient(&cases, &reference);
    let got = latent_gradient(&cases, device);
    assert_matches(
        "mmdit",
        "latent gradient with LoRA",
        &got,
        &want,
        NETWORK.scaled_abs(&want),
    );
}
