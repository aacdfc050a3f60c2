//! The encoder layer's MLP.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid};

use crate::models::mmdit::layers::project;

/// The MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClipActivation {
    /// `x·σ(1.702·x)`: OpenAI's CLIP (CLIP-L/14); transformers' `quick_gelu`.
    QuickGelu,
    /// The exact (erf) GELU: OpenCLIP bigG/14; transformers' `gelu`.
    Gelu,
}

/// Linear → activation → Linear, computed in the weights' dtype.
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// `width → mlp_width`.
    pub fc1: Linear,
    /// `mlp_width → width`.
    pub fc2: Linear,
    /// The activation between them.
    #[module(skip)]
    activation: ClipActivation,
}

impl ClipMlp {
    /// An MLP `width → mlp_width → width`.
    pub fn new(
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

    /// `[B, T, width] → [B, T, width]`.
    pub fn forward(&self, tokens: Tensor<3>) -> Tensor<3> {
        let hidden = project(&self.fc1, tokens);
        let activated = match self.activation {
            ClipActivation::Gelu => gelu(hidden),
            ClipActivation::QuickGelu => hidden.clone() * sigmoid(hidden.mul_scalar(1.702)),
        };
        project(&self.fc2, activated)
    }
}
