//! The update phase of a step: epochs × mini-batches, each mini-batch one optimiser step
//! computed as micro-batches whose gradients accumulate.

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use super::grad_norm::{global_grad_norm, scale_grads};
use super::workers::merge_worker_metrics;
use super::{StepState, TrainerConfig};
use crate::buffer::{InMemoryBuffer, TrajectoryBuffer, split_minibatches};
use crate::distributed::{Communicator, RolloutShard, reduce_trainable_grads};
use crate::error::Result;
use crate::kernel::StepKernel;
use crate::objective::{ObjectiveMetrics, RowBatch, TrustRegionObjective};
use crate::policy::{ConditionBatch, FlowPolicy, checked_velocity};
use crate::rollout::TrajectoryRows;
use crate::tensor_util::{vector, vector_f32};

/// What the update phase did.
pub(super) struct UpdateSummary {
    /// The metrics of every applied update.
    pub applied: Vec<ObjectiveMetrics>,
    /// The first update's metrics, applied or not (its ratio must be 1: replay check).
    pub first: Option<ObjectiveMetrics>,
    /// The global gradient norm of every applied update, before clipping.
    pub grad_norms: Vec<f64>,
    /// Updates skipped for a non-finite gradient norm.
    pub skipped: usize,
}

/// One mini-batch's accumulated gradient and the metrics of all its rows (`None` for a
/// worker that holds none of them).
struct Accumulated {
    grads: GradientsParams,
    metrics: Option<ObjectiveMetrics>,
}

/// Replays the rollout's rows with the current policy and applies the optimiser steps.
pub(super) struct Updater<'a, P: FlowPolicy> {
    pub config: &'a TrainerConfig,
    pub kernel: &'a dyn StepKernel,
    pub objective: &'a dyn TrustRegionObjective,
    pub reference: Option<&'a P>,
    pub device: &'a Device,
    /// The trainer's step, for logs.
    pub step: usize,
    /// The workers whose gradients are summed.
    pub communicator: &'a dyn Communicator,
    /// This worker's share of the rollout's rows.
    pub shard: &'a RolloutShard,
}

impl<P: FlowPolicy> Updater<'_, P> {
    /// `inner_epochs` passes over the rollout's rows, each split into
    /// `minibatches_per_rollout` shuffled mini-batches, one optimiser step each. Mini-batches
    /// are drawn over the whole rollout's rows with the shared RNG; `buffer` holds this
    /// worker's rows, and each worker works on its rows of each mini-batch.
    pub(super) fn run(
        &self,
        state: &mut StepState<P>,
        buffer: &InMemoryBuffer,
        conditions: &P::Condition,
    ) -> Result<UpdateSummary> {
        let mut summary = UpdateSummary {
            applied: Vec::new(),
            first: None,
            grad_norms: Vec::new(),
            skipped: 0,
        };
        let total_rows = buffer.len() * self.communicator.world_size();
        for _ in 0..self.config.inner_epochs {
            let minibatches = split_minibatches(
                total_rows,
                self.config.minibatches_per_rollout,
                &mut state.rng,
            )?;
            for rows in minibatches {
                let (mut grads, metrics) =
                    self.minibatch_gradient(&state.policy, buffer, conditions, &rows)?;
                let metrics = metrics.unwrap_or_default();
                summary.first.get_or_insert_with(|| metrics.clone());
                let norm = global_grad_norm(&state.policy, &grads)?;
                if !norm.is_finite() {
                    summary.skipped += 1;
                    log::warn!(
                        "step {}: skipped an update with gradient norm {norm} ({} rows)",
                        self.step,
                        rows.len()
                    );
                    continue;
                }
                if let Some(max_norm) = self.config.grad_clip_norm {
                    // As PyTorch's clip_grad_norm_: scale by max_norm / (norm + 1e-6) if < 1.
                    let factor = max_norm / (norm + 1e-6);
                    if factor < 1.0 {
                        scale_grads(&state.policy, &mut grads, factor);
                    }
                }
                state.policy =
                    state
                        .optimizer
                        .step(self.config.learning_rate, state.policy.clone(), grads);
                summary.applied.push(metrics);
                summary.grad_norms.push(norm);
            }
        }
        Ok(summary)
    }

    /// The gradient of the mean loss over the mini-batch of global `rows`, summed over the
    /// workers, and the metrics of all its rows. On one worker nothing is exchanged.
    fn minibatch_gradient(
        &self,
        policy: &P,
        buffer: &InMemoryBuffer,
        conditions: &P::Condition,
        rows: &[usize],
    ) -> Result<(GradientsParams, Option<ObjectiveMetrics>)> {
        if self.communicator.world_size() == 1 {
            let Accumulated { grads, metrics } =
                self.accumulate(policy, buffer, conditions, rows, rows.len())?;
            return Ok((grads, metrics));
        }
        let local_rows = self.shard.local_rows(rows);
        let (grads, metrics) =
            match self.accumulate(policy, buffer, conditions, &local_rows, rows.len()) {
                Ok(Accumulated { grads, metrics }) => (Ok(grads), metrics),
                Err(err) => (Err(err), None),
            };
        let grads = reduce_trainable_grads(self.communicator, policy, grads)?;
        Ok((grads, merge_worker_metrics(self.communicator, metrics)?))
    }

    /// This worker's part of the gradient of the mean loss over a mini-batch of
    /// `minibatch_rows` rows, from its rows `indices` of it, computed in passes of at most
    /// `micro_batch_rows` rows. Micro-batch j's mean loss L_j is weighted by |m_j| / M, so
    /// the sum over micro-batches and workers is the mini-batch mean and its gradient the
    /// one-pass gradient (ALGORITHMS.md §7).
    fn accumulate(
        &self,
        policy: &P,
        buffer: &InMemoryBuffer,
        conditions: &P::Condition,
        indices: &[usize],
        minibatch_rows: usize,
    ) -> Result<Accumulated> {
        let rows = indices.len();
        if rows == 0 {
            return Ok(Accumulated {
                grads: GradientsParams::new(),
                metrics: None,
            });
        }
        let micro_batch_rows = self.config.micro_batch_rows.unwrap_or(rows).min(rows);
        let mut accumulator = GradientsAccumulator::<P>::new();
        let mut parts = Vec::with_capacity(rows.div_ceil(micro_batch_rows));
        for micro_batch in indices.chunks(micro_batch_rows) {
            let (micro_rows, advantages) = buffer.gather(micro_batch)?;
            let batch = self.replay(policy, &micro_rows, conditions, &advantages)?;
            let output = self.objective.loss(&batch)?;
            let loss = if micro_batch.len() == minibatch_rows {
                output.loss
            } else {
                output
                    .loss
                    .mul_scalar(micro_batch.len() as f64 / minibatch_rows as f64)
            };
            accumulator.accumulate(policy, GradientsParams::from_grads(loss.backward(), policy));
            parts.push(output.metrics);
        }
        let metrics = match parts.len() {
            1 => parts.pop(),
            _ => ObjectiveMetrics::merge(&parts),
        };
        Ok(Accumulated {
            grads: accumulator.grads(),
            metrics,
        })
    }

    /// The objective's batch for replayed rows: the current policy's means (with gradient)
    /// against the rollout's frozen anchor.
    fn replay(
        &self,
        policy: &P,
        rows: &TrajectoryRows,
        conditions: &P::Condition,
        advantages: &[f32],
    ) -> Result<RowBatch> {
        let device = self.device;
        let row_conditions = conditions.pick(&rows.sample);
        let latents = rows.latents.clone().to_device(device);
        let sigma = vector(&rows.sigma, device);
        let velocity = checked_velocity(policy, latents.clone(), sigma, &row_conditions)?;
        let new = self
            .kernel
            .transition(latents, velocity, &rows.sigma, &rows.sigma_next)?;
        let mut batch = RowBatch::new(
            new.mean,
            rows.old_mean.clone().to_device(device),
            rows.next.clone().to_device(device),
            new.std,
            vector(&rows.dt(), device),
            vector_f32(advantages, device),
        )
        .with_velocity_scale(vector(&rows.velocity_scale, device));
        if let Some(reference) = self.reference {
            let sigma = vector(&rows.sigma, &rows.latents.device());
            let velocity =
                checked_velocity(reference, rows.latents.clone(), sigma, &row_conditions)?;
            let reference_mean = self.kernel.transition(
                rows.latents.clone(),
                velocity,
                &rows.sigma,
                &rows.sigma_next,
            )?;
            batch = batch.with_ref_mean(reference_mean.mean.to_device(device));
        }
        Ok(batch)
    }
}
