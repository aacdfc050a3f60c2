//! Small building blocks shared by the MMDiT's embeddings and blocks.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;

use super::surrogate;

/// `x·W + b` for input `[.., in]` and a Linear `in → out`, computed in the weight's dtype
/// and returned in the input's dtype.
///
/// A layer carrying a burn LoRA adapter computes `x·W + b + (α/r)·(x·A)·B` unmerged: the
/// frozen base path in the base's dtype, the low-rank path in the factors' dtype (f32 factors
/// over a bf16 base), summed in the factors' dtype. `linear.weight.val()` would compose the
/// dense `W + (α/r)·A·B` in the factors' dtype, which autodiff then keeps for the backward
/// pass alongside a dense weight gradient: 2.1 GiB of composed weights for SD3.5-medium's
/// attention at rank 32. Here autodiff keeps only the base (already resident), the input and
/// the `[.., r]` intermediate, and the factors' gradients are computed at rank width.
pub(crate) fn project<const D: usize>(linear: &Linear, input: Tensor<D>) -> Tensor<D> {
    if D > 2 {
        let dims = input.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let output = project(linear, input.reshape([rows, dims[D - 1]]));
        let mut output_dims = dims;
        output_dims[D - 1] = output.dims()[1];
        return output.reshape(output_dims);
    }
    let dtype = input.dtype();
    let weight = linear.weight.base();
    let weight_dtype = weight.dtype();
    let bias = linear
        .bias
        .as_ref()
        .map(|bias| bias.val().cast(weight_dtype));
    let Some(adapter) = linear.weight.adapter() else {
        return burn::tensor::module::linear(input.cast(weight_dtype), weight, bias).cast(dtype);
    };
    let (down, up) = (adapter.a.val(), adapter.b.val());
    let factor_dtype = down.dtype();
    let frozen = burn::tensor::module::linear(input.clone().cast(weight_dtype), weight, bias)
        .cast(factor_dtype);
    let reduced = burn::tensor::module::linear(input.cast(factor_dtype), down, None)
        .mul_scalar(adapter.scale);
    (frozen + burn::tensor::module::linear(reduced, up, None)).cast(dtype)
}

/// Per-sample vectors `[B, D]` scaling tokens `[B, T, D]`.
pub(crate) fn gate(tokens: Tensor<3>, gate: &Tensor<2>) -> Tensor<3> {
    tokens * gate.clone().unsqueeze_dim::<3>(1)
}

/// Linear → SiLU → Linear: the timestep and pooled-text embedders.
#[derive(Module, Debug)]
pub struct EmbedderMlp {
    /// The first projection.
    pub linear_1: Linear,
    /// The second projection.
    pub linear_2: Linear,
}

impl EmbedderMlp {
    pub(crate) fn new(d_input: usize, hidden: usize, device: &Device) -> Self {
        Self {
            linear_1: LinearConfig::new(d_input, hidden).init(device),
            linear_2: LinearConfig::new(hidden, hidden).init(device),
        }
    }

    /// `[B, d_input] → [B, hidden]`.
    pub(crate) fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        project(&self.linear_2, silu(project(&self.linear_1, input)))
    }
}

/// The transformer MLP: Linear → tanh-GELU → Linear.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `hidden → mlp_ratio·hidden`.
    pub fc1: Linear,
    /// `mlp_ratio·hidden → hidden`.
    pub fc2: Linear,
}

impl Mlp {
    pub(crate) fn new(hidden: usize, ratio: usize, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(hidden, ratio * hidden).init(device),
            fc2: LinearConfig::new(ratio * hidden, hidden).init(device),
        }
    }

    /// `[B, T, hidden] → [B, T, hidden]`.
    pub(crate) fn forward(&self, tokens: Tensor<3>) -> Tensor<3> {
        let hidden = surrogate::gelu_tanh(project(&self.fc1, tokens));
        project(&self.fc2, hidden)
    }
}

/// The adaLN projection `Linear(SiLU(c))` split into `chunks` vectors `[B, hidden]`.
pub(crate) fn modulation(
    linear: &Linear,
    conditioning: &Tensor<2>,
    chunks: usize,
) -> Vec<Tensor<2>> {
    project(linear, silu(conditioning.clone())).chunk(chunks, 1)
}
