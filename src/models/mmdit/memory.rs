//! An estimate of the memory LoRA fine-tuning of an MMDiT needs, by part.

use burn::tensor::{DType, FloatDType};
use serde::Serialize;

use super::MmditConfig;
use super::lora::MmditLoraConfig;
use super::weights::diffusers_linear_names;

/// Values autodiff keeps per token, per stream and per block, for the backward pass of one
/// joint block as this crate computes it: LayerNorm and RMSNorm inputs and outputs in f32
/// (counted twice, as f32 is twice the bf16 width), the modulated inputs, q/k/v, the
/// attention output, residuals and gates, and the MLP's `4·hidden`-wide input, GELU
/// intermediates and output.
const VALUES_PER_TOKEN: u64 = 46;

/// The shapes of one LoRA training step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoraWorkload {
    /// Latent height and width (image side / 8 for the SD3 VAE).
    pub latent_size: [usize; 2],
    /// Context tokens per sample (SD3: 77 CLIP + 256 T5 = 333).
    pub context_tokens: usize,
    /// Rows per forward/backward pass (samples × trained steps in one mini-batch).
    pub batch: usize,
    /// The dtype of the frozen base weights and of the activations.
    pub weight_dtype: FloatDType,
}

impl LoraWorkload {
    /// SD3.5 at `resolution`² with 333 context tokens, bf16 weights.
    pub fn sd35(resolution: usize, batch: usize) -> Self {
        Self {
            latent_size: [resolution / 8, resolution / 8],
            context_tokens: 333,
            batch,
            weight_dtype: FloatDType::BF16,
        }
    }
}

/// Estimated bytes of LoRA fine-tuning, by part. Activations are an estimate from the
/// structure of the backward graph, not a measurement; `docs/sd35.md` compares it with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LoraMemoryEstimate {
    /// The frozen base weights, in their dtype.
    pub base_weights: u64,
    /// The adapter factors.
    pub adapters: u64,
    /// The factors' gradients.
    pub adapter_gradients: u64,
    /// AdamW's two moments per factor value.
    pub optimizer_state: u64,
    /// The dense weights `W + (α/r)·A·B` that burn's LoRA composes for every adapted layer
    /// and autodiff keeps for the backward pass, in the factors' dtype.
    pub composed_weights: u64,
    /// Activations kept for the backward pass, attention probabilities included.
    pub activations: u64,
}

impl LoraMemoryEstimate {
    /// The sum of every part.
    pub fn total(&self) -> u64 {
        self.base_weights
            + self.adapters
            + self.adapter_gradients
            + self.optimizer_state
            + self.composed_weights
            + self.activations
    }
}

impl MmditConfig {
    /// Estimates the memory of one LoRA training step (forward and backward with
    /// gradients kept until the optimiser step).
    pub fn estimate_lora_memory(
        &self,
        lora: &MmditLoraConfig,
        workload: &LoraWorkload,
    ) -> LoraMemoryEstimate {
        let weight_bytes = dtype_bytes(workload.weight_dtype);
        let factor_bytes = lora.dtype.map_or(weight_bytes, dtype_bytes);
        let hidden = self.hidden() as u64;
        let (mut factors, mut composed) = (0u64, 0u64);
        for (module, _) in diffusers_linear_names(self) {
            if !lora.targets.iter().any(|target| target.matches(&module)) {
                continue;
            }
            let (d_in, d_out) = self.linear_shape(&module);
            factors += (lora.rank * (d_in + d_out)) as u64;
            composed += (d_in * d_out) as u64;
        }
        let patch = self.patch_size;
        let image_tokens =
            ((workload.latent_size[0] / patch) * (workload.latent_size[1] / patch)) as u64;
        let context_tokens = workload.context_tokens as u64;
        let joint = image_tokens + context_tokens;
        let batch = workload.batch as u64;
        let per_block = |dual: bool, last: bool| {
            let context = if last {
                context_tokens / 2
            } else {
                context_tokens
            };
            let mut values = VALUES_PER_TOKEN * hidden * (image_tokens + context);
            // Attention probabilities in f32: two activation widths per value.
            let mut probabilities = 2 * self.heads as u64 * joint * joint;
            if dual {
                values += VALUES_PER_TOKEN / 2 * hidden * image_tokens;
                probabilities += 2 * self.heads as u64 * image_tokens * image_tokens;
            }
            (values + probabilities) * weight_bytes
        };
        let activations: u64 = (0..self.depth)
            .map(|block| per_block(self.is_dual(block), block + 1 == self.depth))
            .sum::<u64>()
            * batch;
        LoraMemoryEstimate {
            base_weights: self.num_params() as u64 * weight_bytes,
            adapters: factors * factor_bytes,
            adapter_gradients: factors * factor_bytes,
            optimizer_state: 2 * factors * factor_bytes,
            composed_weights: composed * factor_bytes,
            activations,
        }
    }

    /// `(in, out)` of the Linear layer at a module path.
    fn linear_shape(&self, module: &str) -> (usize, usize) {
        let hidden = self.hidden();
        if module.ends_with("mlp.fc1") {
            (hidden, self.mlp_ratio * hidden)
        } else if module.ends_with("mlp.fc2") {
            (self.mlp_ratio * hidden, hidden)
        } else {
            (hidden, hidden)
        }
    }
}

fn dtype_bytes(dtype: FloatDType) -> u64 {
    DType::from(dtype).size() as u64
}
