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
mod tests;
