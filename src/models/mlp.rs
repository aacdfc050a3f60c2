//! A small time-conditioned MLP velocity model, for toy tasks, tests and examples.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;

use crate::error::{Error, Result};
use crate::policy::{FlowPolicy, Unconditional};

/// Configuration of [`MlpPolicy`].
#[derive(Config, Debug, PartialEq)]
pub struct MlpPolicyConfig {
    /// The latent dimension N (2 for a 2-D toy).
    #[config(default = 2)]
    pub latent_dims: usize,
    /// Width of the hidden layers.
    #[config(default = 128)]
    pub hidden: usize,
    /// Number of hidden layers (at least 1).
    #[config(default = 3)]
    pub depth: usize,
    /// Number of sinusoidal frequencies that encode σ.
    #[config(default = 8)]
    pub time_frequencies: usize,
}

impl MlpPolicyConfig {
    /// Builds the model on `device` with burn's default initialisation.
    pub fn init(&self, device: &Device) -> Result<MlpPolicy> {
        for (name, value) in [
            ("latent_dims", self.latent_dims),
            ("hidden", self.hidden),
            ("depth", self.depth),
        ] {
            if value == 0 {
                return Err(Error::invalid(name, value, "at least 1"));
            }
        }
        let input = self.latent_dims + 1 + 2 * self.time_frequencies;
        let mut layers = vec![LinearConfig::new(input, self.hidden).init(device)];
        for _ in 1..self.depth {
            layers.push(LinearConfig::new(self.hidden, self.hidden).init(device));
        }
        Ok(MlpPolicy {
            layers,
            output: LinearConfig::new(self.hidden, self.latent_dims).init(device),
            time_frequencies: self.time_frequencies,
        })
    }
}

/// `v_θ(x, σ) = MLP([x, σ, sin(kπσ), cos(kπσ)])` with SiLU activations; unconditional.
#[derive(Module, Debug)]
pub struct MlpPolicy {
    /// Hidden layers.
    layers: Vec<Linear>,
    /// Output projection to the latent dimension.
    output: Linear,
    /// Number of sinusoidal frequencies of σ.
    #[module(skip)]
    time_frequencies: usize,
}

impl MlpPolicy {
    /// Encodes σ `[B]` as `[B, 1 + 2F]`: σ itself and `sin`/`cos` of `kπσ`, `k = 1..F`.
    fn time_features(&self, sigma: Tensor<1>) -> Tensor<2> {
        let sigma = sigma.unsqueeze_dim::<2>(1);
        let mut features = vec![sigma.clone()];
        for k in 1..=self.time_frequencies {
            let angle = sigma.clone().mul_scalar(k as f64 * std::f64::consts::PI);
            features.push(angle.clone().sin());
            features.push(angle.cos());
        }
        Tensor::cat(features, 1)
    }
}

impl FlowPolicy for MlpPolicy {
    type Condition = Unconditional;

    fn velocity(&self, latents: Tensor<2>, sigma: Tensor<1>, _: &Unconditional) -> Tensor<2> {
        let mut hidden = Tensor::cat(vec![latents, self.time_features(sigma)], 1);
        for layer in &self.layers {
            hidden = silu(layer.forward(hidden));
        }
        self.output.forward(hidden)
    }

    /// Latents must have the model's latent dimension N, which a mismatched
    /// `TrainerConfig::latent_dims` would otherwise turn into a panic inside `Linear`.
    fn validate_input(&self, latents: [usize; 2], _: &Unconditional) -> Result<()> {
        let latent_dims = self.output.weight.val().dims()[1];
        if latents[1] != latent_dims {
            return Err(Error::shape(
                "latent_dims",
                format!("[B, {latent_dims}]: the latent dimension this MlpPolicy was built for"),
                latents,
            ));
        }
        Ok(())
    }
}
