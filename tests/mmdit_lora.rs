//! Unmerged LoRA: the MMDiT's adapted projections compute `x·W + (α/r)·(x·A)·B` without
//! forming the dense `W + (α/r)·A·B`. Their outputs and factor gradients must be those of the
//! dense composition, which `merge_lora` builds.

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PathFilter, bridge};
use burn::tensor::Distribution;
use flow_rl::models::mmdit::{
    AttentionProjections, LoraTarget, Mlp, Mmdit, MmditConfig, MmditLoraConfig,
};

const TOLERANCE: f32 = 1e-5;

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().try_to_vec().unwrap()
}

/// `max |a − b|` over `max |b|`, or over 1 where `b` is zero (the last block's context
/// queries, whose output is discarded, get no gradient).
fn scaled_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let largest = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if largest > 0.0 { largest } else { 1.0 };
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Every factor replaced by `N(0, 0.1²)` values, so that `B ≠ 0` and both factors' gradients
/// are non-zero.
fn random_factors(model: Mmdit) -> Mmdit {
    let filter = || PathFilter::new().with_regex(r"\.lora\.(a|b)$");
    let plain = Device::default();
    let tensors = model
        .collect(Some(filter()), None, false)
        .into_iter()
        .map(|snapshot| {
            let [rows, columns] = [snapshot.shape[0], snapshot.shape[1]];
            let data = Tensor::<2>::random([rows, columns], Distribution::Normal(0.0, 0.1), &plain)
                .into_data();
            bridge::from_data(data, snapshot.name.clone(), None)
        })
        .collect();
    let mut model = model;
    let result = model.apply(tensors, Some(filter()), None, false);
    assert!(result.errors.is_empty() && result.unused.is_empty());
    model
}

fn attention_layers(attention: &AttentionProjections) -> Vec<&Linear> {
    let mut layers = vec![&attention.query, &attention.key, &attention.value];
    layers.extend(attention.output.as_ref());
    layers
}

fn mlp_layers(mlp: &Mlp) -> Vec<&Linear> {
    vec![&mlp.fc1, &mlp.fc2]
}

/// The adapted Linear layers of the joint blocks (attention and MLP), in a fixed order.
fn block_layers(model: &Mmdit) -> Vec<&Linear> {
    let mut layers = Vec::new();
    for block in &model.blocks {
        for stream in [&block.context, &block.image] {
            layers.extend(attention_layers(&stream.attention));
            if let Some(attention) = &stream.self_attention {
                layers.extend(attention_layers(attention));
            }
            if let Some(mlp) = &stream.mlp {
                layers.extend(mlp_layers(mlp));
            }
        }
    }
    layers
}

fn loss(model: &Mmdit, device: &Device) -> Tensor<1> {
    device.seed(7);
    let normal = Distribution::Normal(0.0, 1.0);
    model
        .forward(
            Tensor::random([2, 16, 4, 4], normal, device),
            Tensor::from_floats([900.0, 250.0], device),
            Tensor::random([2, 3, 64], normal, device),
            Tensor::random([2, 32], normal, device),
        )
        .unwrap()
        .powf_scalar(2.0)
        .mean()
}

#[test]
fn unmerged_lora_matches_the_dense_composition_and_its_factor_gradients() {
    let device = Device::default().autodiff();
    device.seed(3);
    let base = MmditConfig::tiny().init(&device).unwrap();
    let adapted = random_factors(
        MmditLoraConfig::new()
            .with_rank(4)
            .with_alpha(8.0)
            .with_targets(vec![LoraTarget::Attention, LoraTarget::Mlp])
            .apply(base)
            .unwrap(),
    );
    // The dense reference: `W + (α/r)·A·B` merged into trainable leaves.
    let merged = adapted.clone().merge_lora().set_require_grad(true);

    let unmerged_loss = loss(&adapted, &device);
    let merged_loss = loss(&merged, &device);
    let (unmerged_value, merged_value) = (
        unmerged_loss.clone().into_scalar::<f32>(),
        merged_loss.clone().into_scalar::<f32>(),
    );
    assert!(
        (unmerged_value - merged_value).abs() <= TOLERANCE * merged_value.abs().max(1.0),
        "loss {unmerged_value} vs {merged_value}"
    );
    let grads = unmerged_loss.backward();
    let dense_grads = merged_loss.backward();

    // Errors are relative to the largest reference value: the gradients are small (~1e-4).
    // With `W_eff = W + s·A·B` and `G = dL/dW_eff`: `dL/dA = s·G·Bᵀ`, `dL/dB = s·Aᵀ·G`.
    let plain = Device::default();
    let host = |tensor: Tensor<2>| Tensor::<2>::from_data(tensor.into_data(), &plain);
    let adapted_layers = block_layers(&adapted);
    let merged_layers = block_layers(&merged);
    assert_eq!(adapted_layers.len(), 19 + 6);
    let mut layers_with_gradients = 0;
    for (index, (layer, dense)) in adapted_layers.iter().zip(&merged_layers).enumerate() {
        let adapter = layer
            .weight
            .adapter()
            .expect("every block layer is adapted");
        let (a, b) = (adapter.a.val(), adapter.b.val());
        let dense_gradient = host(dense.weight.val().grad(&dense_grads).expect("G"));
        let expected_a = dense_gradient
            .clone()
            .matmul(host(b.clone()).transpose())
            .mul_scalar(adapter.scale);
        let expected_b = host(a.clone())
            .transpose()
            .matmul(dense_gradient)
            .mul_scalar(adapter.scale);
        let actual_a = values(a.grad(&grads).expect("dL/dA"));
        let actual_b = values(b.grad(&grads).expect("dL/dB"));
        let expected_a = values(expected_a);
        let expected_b = values(expected_b);
        if expected_a.iter().chain(&expected_b).any(|g| *g != 0.0) {
            layers_with_gradients += 1;
        }
        let error_a = scaled_difference(&actual_a, &expected_a);
        let error_b = scaled_difference(&actual_b, &expected_b);
        assert!(
            error_a <= TOLERANCE,
            "layer {index}: dL/dA off by {error_a:e}"
        );
        assert!(
            error_b <= TOLERANCE,
            "layer {index}: dL/dB off by {error_b:e}"
        );
        assert!(
            layer.weight.base().grad(&grads).is_none(),
            "layer {index}: the frozen base gets no gradient"
        );
    }
    // All but the last block's context query.
    assert_eq!(layers_with_gradients, 19 + 6 - 1);
}
