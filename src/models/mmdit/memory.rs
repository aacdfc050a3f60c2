//! An estimate of the memory LoRA fine-tuning of an MMDiT needs, by part.

use burn::tensor::{DType, FloatDType};
use serde::Serialize;

use super::MmditConfig;
use super::lora::MmditLoraConfig;
use super::weights::diffusers_linear_names;
use crate::error::{Error, Result};

/// Hidden-wide values autodiff keeps per token, per stream and per block, in the activation
/// dtype, for the backward pass of one joint block as this crate computes it (the
/// activation-lean ops of `surrogate.rs`): the two modulated inputs, q/k/v and the two
/// normalised q/k, the attention output and its projection, the gated MLP output, and the
/// MLP's `4·hidden`-wide GELU derivative and GELU output.
const ACTIVATION_VALUES_PER_TOKEN: u64 = 19;

/// Hidden-wide values kept per token, per stream and per block in f32 whatever the
/// activation dtype: the normalised tokens of the two LayerNorms and of the q/k RMSNorms.
const F32_VALUES_PER_TOKEN: u64 = 4;

/// `T×T` matrices per head that autodiff keeps for one attention, in the activation dtype:
/// the probabilities alone (the softmax's exponentials are not kept, see `surrogate.rs`).
const ATTENTION_MATRICES: u64 = 1;

/// Hidden-wide values alive per token at the peak of a no-grad forward pass (inside the
/// MLP: its input, the `4·hidden` projection and its GELU, and the residual streams).
const FORWARD_VALUES_PER_TOKEN: u64 = 12;

/// `T×T` matrices per head alive at once in a no-grad attention (scores and probabilities).
const FORWARD_ATTENTION_MATRICES: u64 = 2;

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

    /// The same shapes with `batch` rows.
    pub fn with_batch(&self, batch: usize) -> Self {
        Self { batch, ..*self }
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
    /// Activations kept for the backward pass, attention probabilities and the adapters'
    /// low-rank path (`x·A` and, where the factors' dtype differs from the base's, the input
    /// in the factors' dtype) included. The adapted projections are unmerged, so no dense
    /// `W + (α/r)·A·B` is kept.
    pub activations: u64,
}

impl LoraMemoryEstimate {
    /// The sum of every part.
    pub fn total(&self) -> u64 {
        self.base_weights
            + self.adapters
            + self.adapter_gradients
            + self.optimizer_state
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
        let widened_input = lora
            .dtype
            .is_some_and(|dtype| dtype != workload.weight_dtype);
        let tokens = Tokens::of(self, workload);
        // Per token of the layer's stream: `x·A` and, in a wider dtype, the input again.
        let (mut factors, mut low_rank_bytes_per_token) = (0u64, 0u64);
        for (module, _) in diffusers_linear_names(self) {
            if !lora.targets.iter().any(|target| target.matches(&module)) {
                continue;
            }
            let (d_in, d_out) = self.linear_shape(&module);
            factors += (lora.rank * (d_in + d_out)) as u64;
            let input = if widened_input { d_in as u64 } else { 0 };
            let stream_tokens = if module.contains(".context.") {
                tokens.context
            } else {
                tokens.image
            };
            low_rank_bytes_per_token += (input + lora.rank as u64) * factor_bytes * stream_tokens;
        }
        let hidden = self.hidden() as u64;
        let per_token = ACTIVATION_VALUES_PER_TOKEN * weight_bytes + F32_VALUES_PER_TOKEN * 4;
        let attention = |length: u64| ATTENTION_MATRICES * self.heads as u64 * length * length;
        let per_block = |dual: bool, last: bool| {
            let context = if last {
                tokens.context / 2
            } else {
                tokens.context
            };
            let mut bytes = per_token * hidden * (tokens.image + context)
                + attention(tokens.image + tokens.context) * weight_bytes;
            if dual {
                bytes +=
                    per_token / 2 * hidden * tokens.image + attention(tokens.image) * weight_bytes;
            }
            bytes
        };
        let activations = ((0..self.depth)
            .map(|block| per_block(self.is_dual(block), block + 1 == self.depth))
            .sum::<u64>()
            + low_rank_bytes_per_token)
            * workload.batch as u64;
        LoraMemoryEstimate {
            base_weights: self.num_params() as u64 * weight_bytes,
            adapters: factors * factor_bytes,
            adapter_gradients: factors * factor_bytes,
            optimizer_state: 2 * factors * 4,
            activations,
        }
    }

    /// Estimates the peak bytes of a no-grad forward pass (a rollout) over `workload.batch`
    /// rows: the base weights and adapters, and the largest transient activations of one
    /// block (nothing is kept across blocks).
    pub fn estimate_forward_memory(&self, lora: &MmditLoraConfig, workload: &LoraWorkload) -> u64 {
        let weight_bytes = dtype_bytes(workload.weight_dtype);
        let training = self.estimate_lora_memory(lora, &workload.with_batch(0));
        let tokens = Tokens::of(self, workload);
        let joint = tokens.image + tokens.context;
        let per_row = FORWARD_VALUES_PER_TOKEN * self.hidden() as u64 * joint * weight_bytes
            + FORWARD_ATTENTION_MATRICES * self.heads as u64 * joint * joint * weight_bytes;
        training.base_weights + training.adapters + per_row * workload.batch as u64
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

/// The rows of LoRA training and of rollouts that fit in a device's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchPlan {
    /// The most rows of one LoRA forward + backward pass (a micro-batch), with the weights,
    /// adapters, their gradients and AdamW's moments resident.
    pub micro_batch_rows: usize,
    /// The most rows of one no-grad forward pass (a rollout chunk).
    pub rollout_batch_size: usize,
}

/// The largest micro-batch and rollout chunk of `workload`'s shapes (its `batch` is ignored)
/// that fit in `gpu_memory_bytes`, by [`MmditConfig::estimate_lora_memory`] and
/// [`MmditConfig::estimate_forward_memory`].
///
/// Fails with [`Error::InvalidArgument`] naming `gpu_memory_bytes` if not even one row of
/// training fits.
pub fn plan_batches(
    config: &MmditConfig,
    lora: &MmditLoraConfig,
    workload: &LoraWorkload,
    gpu_memory_bytes: u64,
) -> Result<BatchPlan> {
    let fixed = config
        .estimate_lora_memory(lora, &workload.with_batch(0))
        .total();
    let per_row = config
        .estimate_lora_memory(lora, &workload.with_batch(1))
        .total()
        - fixed;
    let forward_fixed = config.estimate_forward_memory(lora, &workload.with_batch(0));
    let forward_per_row =
        config.estimate_forward_memory(lora, &workload.with_batch(1)) - forward_fixed;
    let rows = |fixed: u64, per_row: u64| {
        (gpu_memory_bytes.saturating_sub(fixed) / per_row.max(1)) as usize
    };
    let plan = BatchPlan {
        micro_batch_rows: rows(fixed, per_row),
        rollout_batch_size: rows(forward_fixed, forward_per_row),
    };
    if plan.micro_batch_rows == 0 {
        return Err(Error::invalid(
            "gpu_memory_bytes",
            gpu_memory_bytes,
            format!(
                "at least {} bytes: one row of LoRA training at this workload",
                fixed + per_row
            ),
        ));
    }
    Ok(plan)
}

/// Tokens per sample of each stream.
struct Tokens {
    image: u64,
    context: u64,
}

impl Tokens {
    fn of(config: &MmditConfig, workload: &LoraWorkload) -> Self {
        let patch = config.patch_size;
        Self {
            image: ((workload.latent_size[0] / patch) * (workload.latent_size[1] / patch)) as u64,
            context: workload.context_tokens as u64,
        }
    }
}

fn dtype_bytes(dtype: FloatDType) -> u64 {
    DType::from(dtype).size() as u64
}
