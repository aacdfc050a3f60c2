//! Value and gradient checks of the surrogates against burn's composed operations and
//! finite differences.

use burn::tensor::Distribution;
use burn::tensor::activation::gelu_approximate;
use burn::tensor::module::attention as composed_attention;

use super::*;

/// The composed-primitive LayerNorm and modulation the surrogates replace.
fn composed_modulated_norm(input: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    let (variance, mean) = input.clone().var_mean_bias(2);
    let normed = (input - mean) / (variance + NORM_EPS).sqrt();
    normed * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim::<3>(1)
}

fn composed_rms_norm(heads: Tensor<4>, weight: Tensor<1>) -> Tensor<4> {
    let inverse_rms = (heads.clone().square().mean_dim(3) + NORM_EPS)
        .sqrt()
        .recip();
    heads * inverse_rms * weight.reshape([1, 1, 1, -1])
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.5), device)
}

fn leaf<const D: usize>(tensor: &Tensor<D>) -> Tensor<D> {
    tensor.clone().detach().require_grad()
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
    tensor.into_data().convert::<f64>().try_to_vec().unwrap()
}

fn max_abs<const D: usize>(tensor: Tensor<D>) -> f64 {
    values(tensor)
        .into_iter()
        .fold(0.0, |max, value| max.max(value.abs()))
}

/// Relative maximum error of `actual` against `expected`.
fn assert_close<const D: usize>(actual: Tensor<D>, expected: Tensor<D>, what: &str) {
    let scale = max_abs(expected.clone()).max(1e-12);
    let error = max_abs(actual - expected);
    assert!(
        error / scale <= 2e-6,
        "{what}: relative error {}",
        error / scale
    );
}

/// Devices to check on: plain autodiff, and burn's op-level recomputation, which replays
/// memory-bound operations and so must see the same graph.
fn autodiff_devices() -> [Device; 2] {
    let autodiff = Device::default().autodiff();
    [autodiff.clone(), autodiff.gradient_checkpointing()]
}

#[test]
fn gelu_surrogate_matches_the_composed_gelu_in_value_and_gradient() {
    for device in autodiff_devices() {
        let input = random([3, 5, 8], &device);
        let upstream = random([3, 5, 8], &device).detach();
        let (ours, theirs) = (leaf(&input), leaf(&input));
        let ours_out = gelu_tanh(ours.clone());
        let theirs_out = gelu_approximate(theirs.clone());
        assert_close(ours_out.clone(), theirs_out.clone(), "value");
        let ours_grads = (ours_out * upstream.clone()).sum().backward();
        let theirs_grads = (theirs_out * upstream).sum().backward();
        assert_close(
            ours.grad(&ours_grads).unwrap(),
            theirs.grad(&theirs_grads).unwrap(),
            "input gradient",
        );
    }
}

#[test]
fn modulated_norm_surrogate_matches_the_composed_norm_in_value_and_gradients() {
    for device in autodiff_devices() {
        let (input, shift, scale) = (
            random([2, 7, 16], &device),
            random([2, 16], &device),
            random([2, 16], &device),
        );
        let upstream = random([2, 7, 16], &device).detach();
        let ours = (leaf(&input), leaf(&shift), leaf(&scale));
        let theirs = (leaf(&input), leaf(&shift), leaf(&scale));
        let ours_out = layer_norm(ours.0.clone()).modulate(ours.1.clone(), ours.2.clone());
        let theirs_out =
            composed_modulated_norm(theirs.0.clone(), theirs.1.clone(), theirs.2.clone());
        assert_close(ours_out.clone(), theirs_out.clone(), "value");
        let ours_grads = (ours_out * upstream.clone()).sum().backward();
        let theirs_grads = (theirs_out * upstream).sum().backward();
        assert_close(
            ours.0.grad(&ours_grads).unwrap(),
            theirs.0.grad(&theirs_grads).unwrap(),
            "input gradient",
        );
        assert_close(
            ours.1.grad(&ours_grads).unwrap(),
            theirs.1.grad(&theirs_grads).unwrap(),
            "shift gradient",
        );
        assert_close(
            ours.2.grad(&ours_grads).unwrap(),
            theirs.2.grad(&theirs_grads).unwrap(),
            "scale gradient",
        );
    }
}

/// One normalisation feeding two modulations (MMDiT-X's second attention) accumulates
/// both gradients.
#[test]
fn a_normalisation_shared_by_two_modulations_gets_both_gradients() {
    let device = Device::default().autodiff();
    let input = random([1, 4, 8], &device);
    let modulations: Vec<Tensor<2>> = (0..4).map(|_| random([1, 8], &device)).collect();
    let (ours, theirs) = (leaf(&input), leaf(&input));
    let normed = layer_norm(ours.clone());
    let ours_out = normed.modulate(modulations[0].clone(), modulations[1].clone())
        + normed
            .modulate(modulations[2].clone(), modulations[3].clone())
            .square();
    let theirs_out = composed_modulated_norm(
        theirs.clone(),
        modulations[0].clone(),
        modulations[1].clone(),
    ) + composed_modulated_norm(
        theirs.clone(),
        modulations[2].clone(),
        modulations[3].clone(),
    )
    .square();
    let ours_grads = ours_out.sum().backward();
    let theirs_grads = theirs_out.sum().backward();
    assert_close(
        ours.grad(&ours_grads).unwrap(),
        theirs.grad(&theirs_grads).unwrap(),
        "input gradient",
    );
}

#[test]
fn rms_norm_surrogate_matches_the_composed_norm_in_value_and_gradients() {
    for device in autodiff_devices() {
        let (heads, weight) = (random([2, 3, 5, 8], &device), random([8], &device));
        let upstream = random([2, 3, 5, 8], &device).detach();
        let ours = (leaf(&heads), leaf(&weight));
        let theirs = (leaf(&heads), leaf(&weight));
        let ours_out = rms_norm(ours.0.clone(), ours.1.clone());
        let theirs_out = composed_rms_norm(theirs.0.clone(), theirs.1.clone());
        assert_close(ours_out.clone(), theirs_out.clone(), "value");
        let ours_grads = (ours_out * upstream.clone()).sum().backward();
        let theirs_grads = (theirs_out * upstream).sum().backward();
        assert_close(
            ours.0.grad(&ours_grads).unwrap(),
            theirs.0.grad(&theirs_grads).unwrap(),
            "heads gradient",
        );
        assert_close(
            ours.1.grad(&ours_grads).unwrap(),
            theirs.1.grad(&theirs_grads).unwrap(),
            "weight gradient",
        );
    }
}

/// A frozen norm weight (LoRA training): the heads still get their gradient.
#[test]
fn rms_norm_surrogate_passes_the_gradient_with_a_frozen_weight() {
    let device = Device::default().autodiff();
    let (heads, weight) = (random([1, 2, 3, 4], &device), random([4], &device).detach());
    let (ours, theirs) = (leaf(&heads), leaf(&heads));
    let ours_grads = rms_norm(ours.clone(), weight.clone())
        .sin()
        .sum()
        .backward();
    let theirs_grads = composed_rms_norm(theirs.clone(), weight)
        .sin()
        .sum()
        .backward();
    assert_close(
        ours.grad(&ours_grads).unwrap(),
        theirs.grad(&theirs_grads).unwrap(),
        "heads gradient",
    );
}

#[test]
fn attention_surrogate_matches_burns_attention_in_value_and_gradients() {
    for device in autodiff_devices() {
        let shapes = ([2, 3, 6, 8], [2, 3, 9, 8]);
        let (query, key, value) = (
            random(shapes.0, &device),
            random(shapes.1, &device),
            random(shapes.1, &device),
        );
        let upstream = random(shapes.0, &device).detach();
        let ours = [leaf(&query), leaf(&key), leaf(&value)];
        let theirs = [leaf(&query), leaf(&key), leaf(&value)];
        let ours_out = attention(ours[0].clone(), ours[1].clone(), ours[2].clone());
        let theirs_out = composed_attention(
            theirs[0].clone(),
            theirs[1].clone(),
            theirs[2].clone(),
            None,
            None,
            AttentionModuleOptions::default(),
        );
        assert_close(ours_out.clone(), theirs_out.clone(), "value");
        let ours_grads = (ours_out * upstream.clone()).sum().backward();
        let theirs_grads = (theirs_out * upstream).sum().backward();
        for (name, (ours, theirs)) in ["query", "key", "value"]
            .into_iter()
            .zip(ours.iter().zip(&theirs))
        {
            assert_close(
                ours.grad(&ours_grads).unwrap(),
                theirs.grad(&theirs_grads).unwrap(),
                name,
            );
        }
    }
}

/// Central finite differences of a scalar of the attention output, per query and key
/// entry: an independent check of the surrogate's gradient.
#[test]
fn attention_surrogate_gradient_matches_finite_differences() {
    let device = Device::default().autodiff();
    let shape = [1, 1, 3, 4];
    let inputs: Vec<Tensor<4>> = (0..3).map(|_| random(shape, &device)).collect();
    let upstream = random(shape, &device).detach();
    let loss =
        |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>| (attention(q, k, v) * upstream.clone()).sum();
    let leaves: Vec<Tensor<4>> = inputs.iter().map(leaf).collect();
    let grads = loss(leaves[0].clone(), leaves[1].clone(), leaves[2].clone()).backward();
    let step = 1e-2f32;
    for (which, input) in inputs.iter().enumerate() {
        let analytic = values(leaves[which].grad(&grads).unwrap());
        let point: Vec<f32> = input.to_data().convert::<f32>().try_to_vec().unwrap();
        for entry in 0..point.len() {
            let evaluate = |offset: f32| {
                let mut moved = point.clone();
                moved[entry] += offset;
                let moved = Tensor::<4>::from_data(TensorData::new(moved, shape), &device);
                let mut args = inputs.clone();
                args[which] = moved;
                values(loss(args[0].clone(), args[1].clone(), args[2].clone()))[0]
            };
            let numeric = (evaluate(step) - evaluate(-step)) / (2.0 * f64::from(step));
            let expected = analytic[entry];
            assert!(
                (numeric - expected).abs() <= 2e-3 * (1.0 + expected.abs()),
                "input {which} entry {entry}: finite difference {numeric} vs {expected}"
            );
        }
    }
}

/// The sigmoid form saturates like the tanh form, without NaN, far into both tails.
#[test]
fn gelu_matches_the_tanh_form_across_its_range() {
    let device = Device::default();
    let values: Vec<f32> = (-60..=60)
        .map(|i| i as f32 * 0.25)
        .chain([-1e4, 1e4])
        .collect();
    let input = Tensor::<1>::from_floats(values.as_slice(), &device);
    let ours = gelu_tanh(input.clone())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let theirs = gelu_approximate(input)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for ((x, ours), theirs) in values.iter().zip(ours).zip(theirs) {
        assert!(
            (ours - theirs).abs() <= 2e-6 * (1.0 + theirs.abs()),
            "gelu({x}): {ours} vs {theirs}"
        );
    }
}

/// Untracked inputs take the plain formulas.
#[test]
fn untracked_inputs_give_the_same_values() {
    let device = Device::default();
    let input = random([2, 3, 8], &device);
    assert_close(
        gelu_tanh(input.clone()),
        gelu_approximate(input.clone()),
        "gelu",
    );
    let (shift, scale) = (random([2, 8], &device), random([2, 8], &device));
    assert_close(
        layer_norm(input.clone()).modulate(shift.clone(), scale.clone()),
        composed_modulated_norm(input, shift, scale),
        "modulated norm",
    );
}
