//! Per-step training metrics and their JSON-lines log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::objective::ObjectiveMetrics;

/// Mean and std of one reward over a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardStats {
    /// The reward's name.
    pub name: String,
    /// Mean over the rollout's samples.
    pub mean: f64,
    /// Population std over the rollout's samples.
    pub std: f64,
}

/// What one [`Trainer::step`](crate::trainer::Trainer::step) did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The step's index, from 0.
    pub step: usize,
    /// Statistics of each reward.
    pub rewards: Vec<RewardStats>,
    /// Fraction of groups whose rewards were all equal (zero advantages).
    pub zero_std_group_fraction: f64,
    /// The stochastic steps of this rollout.
    pub sde_steps: Vec<usize>,
    /// The objective's metrics, averaged over the applied updates.
    pub objective: ObjectiveMetrics,
    /// The first update's metrics. Its rows are replayed with the rollout's parameters, so its
    /// ratio must be 1 and its KL 0: anything else means replay disagrees with the rollout.
    pub first_update: Option<ObjectiveMetrics>,
    /// Optimiser updates applied.
    pub updates: usize,
    /// Updates skipped because the gradient norm was not finite.
    pub skipped_updates: usize,
    /// Mean global gradient norm before clipping, over the applied updates.
    pub grad_norm: f64,
    /// Wall time of the rollout, in seconds.
    pub rollout_seconds: f64,
    /// Wall time of the reward evaluation.
    pub reward_seconds: f64,
    /// Wall time of the updates.
    pub update_seconds: f64,
}

/// Appends one JSON object per line to a file, flushing after each line so that a crash
/// loses nothing already reported.
#[derive(Debug)]
pub struct JsonLinesWriter {
    path: PathBuf,
    file: File,
}

impl JsonLinesWriter {
    /// Opens (creating if needed) `path` for appending.
    pub fn append(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|err| Error::Io {
                path: path.display().to_string(),
                message: err.to_string(),
            })?;
        Ok(Self { path, file })
    }

    /// Writes `record` as one line.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let line = serde_json::to_string(record).map_err(|err| Error::Io {
            path: self.path.display().to_string(),
            message: err.to_string(),
        })?;
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|err| Error::Io {
                path: self.path.display().to_string(),
                message: err.to_string(),
            })
    }
}
