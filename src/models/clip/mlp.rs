//! The encoder layer's feed-forward network.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::{gelu, sigmoid};

use super::config::ClipActivation;
use crate::models::mmdit::layers::project;

/// Linear → activation → Linear.
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// `width → mlp_width`.
    pub fc1: Linear,
    /// `mlp_width → width`.
    pub fc2: Linear,
    #[module(skip)]
    activation: ClipActivation,
}

impl ClipMlp {
    pub(crate) fn new(
        width: usize,
        mlp_width: usize,
        activation: ClipActivation,
        device: &Device,
    ) -> Self {
        Self {
            fc1: LinearConfig::new(width, mlp_width).init(device),
            fc2: LinearConfig::new(mlp_width, width).init(device),
            activation,
        }
    }

    /// `[B, T, width] → [B, T, width]`; the activation is computed in f32.
    pub fn forward(&self, tokens: Tensor<3>) -> Tensor<3> {
        let hidden = project(&self.fc1, tokens);
        let dtype = hidden.dtype();
        let hidden = hidden.cast(FloatDType::F32);
        let activated = match self.activation {
            ClipActivation::QuickGelu => hidden.clone() * sigmoid(hidden.mul_scalar(1.702)),
            ClipActivation::Gelu => gelu(hidden),
        };
        project(&self.fc2, activated.cast(dtype))
    }
}
