use burn::config::Config;

use super::batch::RowBatch;
use super::evaluate::{Decision, RowValues, evaluate};
use super::metrics::ObjectiveOutput;
use super::terms::ClippedSurrogate;
use super::{TrustRegionObjective, check_epsilon};
use crate::error::Result;
use crate::tensor_util::to_f32;

/// Configuration of [`GrpoGuard`].
#[derive(Config, Debug, PartialEq)]
pub struct GrpoGuardConfig {
    /// ε: the regulated ratio is clipped to `[1 − ε, 1 + ε]`.
    #[config(default = 1e-4)]
    pub epsilon: f64,
    /// Weight each row by `1/|dt|` (the references disagree; on by default).
    #[config(default = true)]
    pub dt_reweighting: bool,
}

impl GrpoGuardConfig {
    /// Builds the objective, checking `0 ≤ ε < 1`.
    pub fn init(&self) -> Result<GrpoGuard> {
        check_epsilon("epsilon", self.epsilon, true)?;
        Ok(GrpoGuard {
            epsilon: self.epsilon,
            dt_reweighting: self.dt_reweighting,
        })
    }
}

/// GRPO-Guard's regulated clipping (ALGORITHMS.md §4):
///
/// ```text
/// log r̂ = (log π_new − log π_old + KL)·s  =  mean_N(ε·d)
/// L     = mean_rows( max(−A·r̂, −A·clip(r̂, 1 − ε, 1 + ε)) · w ),   w = 1/|dt|
/// ```
///
/// Removing the `−KL` drift makes `log r̂` zero-mean, and scaling by `s` makes its spread
/// comparable across steps, so one ε fits every step. The metrics' `ratio` describes the true
/// ratio r; the clip fractions describe r̂.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoGuard {
    epsilon: f64,
    dt_reweighting: bool,
}

impl TrustRegionObjective for GrpoGuard {
    fn name(&self) -> &'static str {
        "grpo-guard"
    }

    fn loss(&self, batch: &RowBatch) -> Result<ObjectiveOutput> {
        evaluate(batch, |terms| {
            let projected_noise = terms.projected_noise();
            // log r = mean_N(e·d)/s² − KL: the true ratio for the metrics, without another pass.
            let log_ratio = projected_noise.clone().detach() - terms.kl.clone();
            let regulated_log_ratio = projected_noise * terms.std.clone();
            let surrogate = ClippedSurrogate::new(
                regulated_log_ratio.clone(),
                batch.advantages.clone(),
                self.epsilon,
                self.epsilon,
            );
            let dt = self
                .dt_reweighting
                .then(|| to_f32(batch.dt.clone()).detach());
            let row_loss = match &dt {
                Some(dt) => surrogate.row_loss / dt.clone().abs(),
                None => surrogate.row_loss,
            };
            Ok(RowValues {
                log_ratio,
                row_loss,
                regulated_log_ratio: Some(regulated_log_ratio),
                weighting_dt: dt,
                decision: Decision::Clip {
                    high: surrogate.clipped_high,
                    low: surrogate.clipped_low,
                },
            })
        })
    }
}
