use burn::config::Config;

use super::batch::RowBatch;
use super::evaluate::{Decision, RowValues, evaluate};
use super::metrics::ObjectiveOutput;
use super::terms::ClippedSurrogate;
use super::{TrustRegionObjective, check_epsilon};
use crate::error::Result;

/// Configuration of [`RatioClip`]; the defaults are Flow-GRPO's.
#[derive(Config, Debug, PartialEq)]
pub struct RatioClipConfig {
    /// ε_low: the ratio is clipped from below at `1 − ε_low`.
    #[config(default = 1e-4)]
    pub epsilon_low: f64,
    /// ε_high: the ratio is clipped from above at `1 + ε_high`.
    #[config(default = 1e-4)]
    pub epsilon_high: f64,
}

impl RatioClipConfig {
    /// Builds the objective, checking `0 ≤ ε_low < 1` and `ε_high ≥ 0`.
    pub fn init(&self) -> Result<RatioClip> {
        check_epsilon("epsilon_low", self.epsilon_low, true)?;
        check_epsilon("epsilon_high", self.epsilon_high, false)?;
        Ok(RatioClip {
            epsilon_low: self.epsilon_low,
            epsilon_high: self.epsilon_high,
        })
    }
}

/// PPO's ratio clipping, as in Flow-GRPO (ALGORITHMS.md §4):
///
/// ```text
/// L = mean_rows( max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high)) )
/// ```
///
/// Clipped rows contribute their constant clipped value and no gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioClip {
    epsilon_low: f64,
    epsilon_high: f64,
}

impl TrustRegionObjective for RatioClip {
    fn name(&self) -> &'static str {
        "ratio-clip"
    }

    fn loss(&self, batch: &RowBatch) -> Result<ObjectiveOutput> {
        evaluate(batch, |terms| {
            let log_ratio = terms.log_ratio();
            let surrogate = ClippedSurrogate::new(
                log_ratio.clone(),
                batch.advantages.clone(),
                self.epsilon_low,
                self.epsilon_high,
            );
            Ok(RowValues {
                log_ratio,
                row_loss: surrogate.row_loss,
                regulated_log_ratio: None,
                weighting_dt: None,
                decision: Decision::Clip {
                    high: surrogate.clipped_high,
                    low: surrogate.clipped_low,
                },
            })
        })
    }
}
