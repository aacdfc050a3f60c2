//! Activation-lean forms of the MMDiT's tanh-GELU, LayerNorm, RMSNorm and attention.
//!
//! Written from burn's primitives, these operations make autodiff keep two or three tensors
//! of their input's size for the backward pass: the tanh-GELU keeps its input, `tanh` and
//! `1 + tanh`; a LayerNorm keeps two centred copies of its input and its output; attention
//! keeps the softmax's exponentials and its probabilities, two `T×T` matrices per head.
//! burn 0.22 offers no custom backward through its public tensor API, so each operation here
//! computes its value off the graph and adds a linear *surrogate* of value zero whose
//! gradient is the operation's exact gradient at that point:
//!
//! `f(x) ≈ f(x₀) + J(x₀)·(x − x₀)` with `x₀ = x.detach()`,
//!
//! which equals `f(x)` exactly in value (the surrogate term is an exact zero) and in
//! gradient (the Jacobian of a linear map is its matrix). Autodiff then keeps only what
//! `J(x₀)` multiplies: the GELU's derivative, the normalised tokens, the probabilities.
//!
//! When the input is not tracked (sampling, or no autodiff backend), each operation is its
//! plain formula and costs nothing extra.

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::ops::AttentionModuleOptions;

/// The epsilon of every LayerNorm and RMSNorm in the SD3 family.
const NORM_EPS: f64 = 1e-6;

/// `√(2/π)`, the scale inside the tanh approximation of GELU.
const SQRT_2_OVER_PI: f64 = core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
/// The cubic coefficient of the tanh approximation of GELU.
const GELU_CUBIC: f64 = 0.044715;

/// `x − x.detach()`: an exact zero whose gradient is the identity; the direction every
/// surrogate is linear in.
fn displacement<const D: usize>(input: Tensor<D>) -> Tensor<D> {
    input.clone() - input.detach()
}

/// The tanh approximation of GELU, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, of any
/// shape. Under autodiff it keeps one tensor (the derivative) instead of three.
///
/// Computed as `x·σ(2u)` for `u = √(2/π)·(x + 0.044715·x³)`, the same function
/// (`½(1 + tanh u) = σ(2u)`), with `x³` as `x·x²`: on flex an element's `tanh` and `powf`
/// are scalar libm calls (`tanhf` through `expm1f`, and `powf` for the cube), which took 22 %
/// of the mid-size MMDiT's forward pass, against one `expf` for the sigmoid.
pub(crate) fn gelu_tanh<const D: usize>(input: Tensor<D>) -> Tensor<D> {
    let tracked = input.is_tracked();
    let point = if tracked {
        input.clone().detach()
    } else {
        input.clone()
    };
    let square = point.clone().square();
    let doubled_inner =
        (square.clone() * GELU_CUBIC + 1.0) * point.clone() * (2.0 * SQRT_2_OVER_PI);
    let gate = sigmoid(doubled_inner);
    let value = point.clone() * gate.clone();
    if !tracked {
        return value;
    }
    // d/dx x·σ(2u) = σ + 2x·σ(1 − σ)·u', with u' = √(2/π)·(1 + 3·0.044715·x²).
    let inner_slope = (square * (3.0 * GELU_CUBIC) + 1.0) * (2.0 * SQRT_2_OVER_PI);
    let derivative = gate.clone() + point * (gate.clone().neg() + 1.0) * gate * inner_slope;
    value + derivative * displacement(input)
}

/// Tokens `[B, T, D]` after a LayerNorm over `D` without affine parameters, kept as a value
/// off the graph and, under autodiff, a tangent of value zero that carries the gradient.
///
/// [`NormalizedTokens::modulate`] applies adaLN's `x·(1 + scale) + shift` to both parts, so
/// that autodiff keeps the normalised tokens once for the norm and the modulation together.
#[derive(Clone, Debug)]
pub(crate) struct NormalizedTokens {
    /// The normalised tokens `[B, T, D]`, detached.
    value: Tensor<3>,
    /// `J(x₀)·(x − x₀)` `[B, T, D]`, an exact zero; `None` when the input was not tracked.
    tangent: Option<Tensor<3>>,
}

/// LayerNorm of tokens `[B, T, D]` over `D` without affine parameters, computed in f32 and
/// returned in the input's dtype.
pub(crate) fn layer_norm(input: Tensor<3>) -> NormalizedTokens {
    let dtype = input.dtype();
    let tracked = input.is_tracked();
    let input = input.cast(DType::F32);
    let point = input.clone().detach();
    let (variance, mean) = point.clone().var_mean_bias(2);
    let inverse_std = (variance + NORM_EPS).sqrt().recip();
    let value = (point - mean) * inverse_std.clone();
    let tangent = tracked.then(|| {
        // J·δ = (δ − mean(δ) − y·mean(y⊙δ)) / σ for y the normalised tokens.
        let delta = displacement(input);
        let along_value = (value.clone() * delta.clone()).mean_dim(2);
        ((delta.clone() - delta.mean_dim(2) - value.clone() * along_value) * inverse_std)
            .cast(dtype)
    });
    NormalizedTokens {
        value: value.cast(dtype),
        tangent,
    }
}

impl NormalizedTokens {
    /// adaLN modulation `y·(1 + scale) + shift` `[B, T, D]` by per-sample `shift` and
    /// `scale` `[B, D]`.
    ///
    /// The tangent's product takes `1 + scale` detached: the tangent is zero, so the
    /// product's gradient with respect to the scale is zero too, and autodiff need not keep
    /// the tangent.
    pub(crate) fn modulate(&self, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
        let factor = scale.unsqueeze_dim::<3>(1) + 1.0;
        let shift = shift.unsqueeze_dim::<3>(1);
        let modulated = self.value.clone() * factor.clone() + shift;
        match &self.tangent {
            Some(tangent) => modulated + tangent.clone() * factor.detach(),
            None => modulated,
        }
    }
}

/// RMSNorm of attention heads `[B, heads, T, head_dim]` over `head_dim`, times `weight`
/// `[head_dim]`, computed in f32 and returned in the input's dtype. Under autodiff it keeps
/// the normalised heads once instead of the input and the normalised heads.
pub(crate) fn rms_norm(heads: Tensor<4>, weight: Tensor<1>) -> Tensor<4> {
    let dtype = heads.dtype();
    let tracked = heads.is_tracked();
    let heads = heads.cast(DType::F32);
    let weight = weight.cast(DType::F32).reshape([1, 1, 1, -1]);
    let point = heads.clone().detach();
    let inverse_rms = (point.clone().square().mean_dim(3) + NORM_EPS)
        .sqrt()
        .recip();
    let normalized = point * inverse_rms.clone();
    let value = normalized.clone() * weight.clone();
    if !tracked {
        return value.cast(dtype);
    }
    // J·δ = (δ − n·mean(n⊙δ)) / rms for n the normalised heads.
    let delta = displacement(heads);
    let along_value = (normalized.clone() * delta.clone()).mean_dim(3);
    let tangent = (delta - normalized * along_value) * inverse_rms;
    (value + tangent * weight.detach()).cast(dtype)
}

/// `softmax(q·kᵀ/√d)·v` for queries `[B, heads, Tq, d]`, keys and values `[B, heads, Tk, d]`.
///
/// Under autodiff it keeps the probabilities `P₀` once (`[B, heads, Tq, Tk]`) instead of
/// the exponentials and the probabilities. The surrogate is `P₀·v + L(s) − L(s₀)` with
/// `L(s) = (P₀⊙s)·v₀ − rowsum(P₀⊙s)⊙(P₀·v₀)`, linear in the scores `s`: its Jacobian is that
/// of `softmax(s)·v` at `s₀`, and `L(s) − L(s₀)` is an exact zero.
///
/// Each `Tq×Tk` tensor costs a pass and, at the sizes of a real model, a fresh allocation,
/// so the surrogate forms as few as it can: subtracting `L(s₀)`, a `[B, heads, Tq, d]`
/// tensor, instead of the scores' displacement `s − s₀`; the query scaled by `1/√d`, not
/// the scores; and `(P₀⊙s)·v₀` and `rowsum(P₀⊙s)` as one product with `[v₀ | 1]`, whose
/// backward is one `Tq×Tk` product where a row sum's backward would fill and multiply a
/// `Tq×Tk` tensor of ones and add it to the product's gradient.
///
/// Untracked, it is burn's `attention`, which a backend may fuse.
pub(crate) fn attention(query: Tensor<4>, key: Tensor<4>, value: Tensor<4>) -> Tensor<4> {
    if !(query.is_tracked() || key.is_tracked() || value.is_tracked()) {
        let options = AttentionModuleOptions::default();
        return burn::tensor::module::attention(query, key, value, None, None, options);
    }
    let head_dim = query.dims()[3];
    let scores = (query * (head_dim as f64).sqrt().recip()).matmul(key.swap_dims(2, 3));
    let probabilities = softmax(scores.clone().detach(), 3);
    let attended = probabilities.clone().matmul(value.clone());
    let value_point = value.detach();
    let ones = value_point.clone().slice(s![.., .., .., 0..1]).ones_like();
    let values_and_ones = Tensor::cat(vec![value_point, ones], 3);
    let weighted_products = (probabilities * scores).matmul(values_and_ones);
    let weighted_values = weighted_products.clone().slice(s![.., .., .., 0..head_dim]);
    let weighted_mass = weighted_products.slice(s![.., .., .., head_dim..]);
    let linearised = weighted_values - weighted_mass * attended.clone().detach();
    // Parenthesised so that the zero is formed before the sum: `(a + l) − l` would round.
    attended + (linearised.clone() - linearised.detach())
}

#[cfg(test)]
mod tests {
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
        let loss = |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>| {
            (attention(q, k, v) * upstream.clone()).sum()
        };
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
}
