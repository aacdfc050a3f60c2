use burn::config::Config;

use super::TrustRegionObjective;
use super::batch::RowBatch;
use super::evaluate::check_finite;
use super::metrics::ObjectiveOutput;
use crate::error::{Error, Result};
use crate::kernel::gaussian_kl;
use crate::tensor_util::{host_values, to_f32};

/// Configuration of [`ReferenceKl`].
#[derive(Config, Debug, PartialEq)]
pub struct ReferenceKlConfig {
    /// β, the weight of the KL to the reference policy; 0 turns the penalty off.
    #[config(default = 0.0)]
    pub beta: f64,
}

impl ReferenceKlConfig {
    /// Wraps `objective` with the penalty, checking `β ≥ 0`.
    pub fn init<O: TrustRegionObjective>(&self, objective: O) -> Result<ReferenceKl<O>> {
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::invalid("beta", self.beta, "a finite β ≥ 0"));
        }
        Ok(ReferenceKl {
            objective,
            beta: self.beta,
        })
    }
}

/// Adds the exact KL to a frozen reference policy to any objective (ALGORITHMS.md §4):
///
/// ```text
/// L += β · mean_rows( mean_N((μ_θ − μ_ref)²) / (2s²) )
/// ```
///
/// Flow-GRPO divides by `σ_t²` instead of `s² = σ_t²·(−dt)`, which is not the KL; this uses
/// `s²`. With β > 0 the batch must carry [`RowBatch::ref_mean`]. The output's
/// [`rows`](super::ObjectiveOutput::rows) are the wrapped objective's: the penalty is added
/// to the loss and the metrics only.
#[derive(Debug, Clone)]
pub struct ReferenceKl<O> {
    objective: O,
    beta: f64,
}

impl<O> ReferenceKl<O> {
    /// The wrapped objective.
    pub fn inner(&self) -> &O {
        &self.objective
    }

    /// β.
    pub fn beta(&self) -> f64 {
        self.beta
    }
}

impl<O: TrustRegionObjective> TrustRegionObjective for ReferenceKl<O> {
    fn name(&self) -> &'static str {
        self.objective.name()
    }

    fn loss(&self, batch: &RowBatch) -> Result<ObjectiveOutput> {
        let mut output = self.objective.loss(batch)?;
        if self.beta == 0.0 {
            return Ok(output);
        }
        let ref_mean = batch.ref_mean.clone().ok_or_else(|| {
            Error::invalid(
                "ref_mean",
                "None",
                "the reference policy's means (RowBatch::with_ref_mean) when β > 0",
            )
        })?;
        let per_row = gaussian_kl(
            batch.new_mean.clone(),
            to_f32(ref_mean).detach(),
            batch.std.clone().detach(),
        )?;
        let penalty = per_row.mean();
        let value = host_values(penalty.clone().detach())?;
        check_finite("reference KL", &value)?;
        output.metrics.reference_kl = Some(value[0] as f64);
        output.metrics.loss += self.beta * value[0] as f64;
        output.loss = output.loss + penalty.mul_scalar(self.beta);
        Ok(output)
    }
}
