use burn::config::Config;

use super::batch::RowBatch;
use super::metrics::{ClipMetrics, HostRows, ObjectiveOutput, fraction};
use super::terms::{ClippedSurrogate, RowTerms};
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
        batch.validate()?;
        let terms = RowTerms::new(batch);
        let log_ratio = terms.log_ratio();
        let surrogate = ClippedSurrogate::new(
            log_ratio.clone(),
            batch.advantages.clone(),
            self.epsilon_low,
            self.epsilon_high,
        );
        let host = HostRows::read(
            &log_ratio,
            &terms.kl,
            &terms.std,
            &batch.advantages,
            &surrogate.row_loss,
            vec![
                surrogate.clipped_high.float(),
                surrogate.clipped_low.float(),
            ],
        )?;
        let mut metrics = host.common_metrics();
        metrics.clip = Some(clip_metrics(&host.extra[0], &host.extra[1]));
        Ok(ObjectiveOutput {
            loss: surrogate.row_loss.mean(),
            metrics,
        })
    }
}

/// Clip fractions from the 0/1 columns of high and low clipping.
pub(super) fn clip_metrics(high: &[f32], low: &[f32]) -> ClipMetrics {
    let high_fraction = fraction(high);
    let low_fraction = fraction(low);
    ClipMetrics {
        fraction: high_fraction + low_fraction,
        high_fraction,
        low_fraction,
    }
}
