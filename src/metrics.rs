//! Per-step training metrics and their JSON-lines log.

pub(crate) mod non_finite;

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::{check_replaceable, read_regular_file};
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
///
/// JSON has no NaN or infinity: non-finite floats are written as the strings `"NaN"`, `"inf"`
/// and `"-inf"` (serde_json alone would write `null`), and [`read_json_lines`] reads them back.
///
/// ```
/// use flow_rl::metrics::{JsonLinesWriter, read_json_lines};
///
/// let folder = tempfile::tempdir()?;
/// let path = folder.path().join("losses.jsonl");
/// let mut log = JsonLinesWriter::append(&path)?;
/// log.write(&(1, 0.5))?;
/// log.write(&(2, f64::NAN))?;
/// assert_eq!(std::fs::read_to_string(&path)?, "[1,0.5]\n[2,\"NaN\"]\n");
/// let lines: Vec<(usize, f64)> = read_json_lines(&path)?;
/// assert!(lines[1].1.is_nan());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct JsonLinesWriter {
    path: PathBuf,
    file: File,
}

impl JsonLinesWriter {
    /// Opens (creating if needed) `path` for appending.
    ///
    /// Errors ([`Error::Io`]) if `path` is a folder or a device, where lines would be lost,
    /// or cannot be opened.
    pub fn append(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        check_replaceable(&path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|err| Error::io(&path, err))?;
        Ok(Self { path, file })
    }

    /// Writes `record` as one line.
    ///
    /// Errors if `record` has no JSON form (a map with keys that are not strings, numbers or
    /// bools) or if the line cannot be written.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let line = non_finite::to_value(record)
            .and_then(|value| serde_json::to_string(&value))
            .map_err(|err| Error::invalid("record", err, "a value with a JSON form"))?;
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|err| Error::io(&self.path, err))
    }
}

/// Reads every line of a JSON-lines file written by [`JsonLinesWriter`], with `"NaN"`, `"inf"`
/// and `"-inf"` read as floats where `T` holds one.
///
/// Errors ([`Error::Io`]) if the path is not a readable regular file or a line is not a `T`;
/// the error names the line (from 1).
pub fn read_json_lines<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<Vec<T>> {
    let path = path.as_ref();
    let text = String::from_utf8(read_regular_file(path)?)
        .map_err(|err| Error::io(path, std::io::Error::new(ErrorKind::InvalidData, err)))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line)
                .and_then(non_finite::from_value)
                .map_err(|err| {
                    let why = format!("line {}: {err}", index + 1);
                    Error::io(path, std::io::Error::new(ErrorKind::InvalidData, why))
                })
        })
        .collect()
}
