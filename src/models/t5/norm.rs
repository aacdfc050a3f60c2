//! T5's RMS layer norm.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

/// T5's layer norm: `x / sqrt(mean(x²) + ε) · weight`, without mean subtraction or bias.
///
/// The variance and the scaling are computed in f32 whatever the input's dtype, with the
/// weight kept in f32; the result is returned in the input's dtype.
#[derive(Module, Debug)]
pub struct T5LayerNorm {
    /// The per-channel scale `[d_model]`, in f32.
    pub weight: Param<Tensor<1>>,
    /// The epsilon added to the variance.
    #[module(skip)]
    pub eps: f64,
}

impl T5LayerNorm {
    /// A norm of width `d_model` with unit weight.
    pub(crate) fn new(d_model: usize, eps: f64, device: &Device) -> Self {
        Self::from_weight(Tensor::ones([d_model], (device, DType::F32)), eps)
    }

    /// A norm with the given weight `[d_model]`, cast to f32.
    pub(crate) fn from_weight(weight: Tensor<1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight.cast(FloatDType::F32)),
            eps,
        }
    }

    /// `[P, S, d_model] → [P, S, d_model]`, in the input's dtype.
    pub fn forward(&self, input: Tensor<3>) -> Tensor<3> {
        let dtype = input.dtype();
        let input = input.cast(FloatDType::F32);
        let variance = input.clone().square().mean_dim(2);
        let normalized = input * variance.add_scalar(self.eps).sqrt().recip();
        let weight = self.weight.val().cast(FloatDType::F32).unsqueeze::<3>();
        (normalized * weight).cast(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_by_the_root_mean_square_without_centring() {
        let device = Device::default();
        let weight = Tensor::<1>::from_floats([1.0, 2.0], &device);
        let norm = T5LayerNorm::from_weight(weight, 0.0);
        // rms([3, 4]) = sqrt(12.5): no mean is subtracted, unlike LayerNorm.
        let input = Tensor::<3>::from_floats([[[3.0, 4.0]]], &device);
        let output: Vec<f32> = norm.forward(input).into_data().try_to_vec().unwrap();
        let rms = 12.5f32.sqrt();
        assert!((output[0] - 3.0 / rms).abs() < 1e-6);
        assert!((output[1] - 8.0 / rms).abs() < 1e-6);
    }
}
