//! Checkpoints of a [`Trainer`]: policy, optimiser state, RNG state, step counter and the
//! per-prompt tracker in one
//! file, written atomically.
//!
//! Layout: the magic `FLOWRLCK`, a format version (u32 LE), then three length-prefixed
//! (u64 LE) sections — a JSON header (configuration, step, RNG), the policy's burnpack record
//! and the optimiser's — and an FNV-1a 64 checksum of everything before it.

use std::fs;
use std::path::Path;

use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use super::{Trainer, TrainerConfig};
use crate::advantage::PromptStatTracker;
use crate::error::{Error, Result};
use crate::io::write_atomically;
use crate::policy::FlowPolicy;
use crate::rng::Rng;

const MAGIC: &[u8; 8] = b"FLOWRLCK";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    /// The configuration without `metrics_path`, which may differ between runs.
    config: String,
    step: usize,
    rng: Rng,
    tracker: Option<PromptStatTracker>,
}

impl<P: FlowPolicy> Trainer<P> {
    /// Writes the trainer's state to `path`: to a temporary file beside it, synced, then
    /// renamed over `path`, so a crash leaves the previous checkpoint intact.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let header = serde_json::to_vec(&Header {
            config: comparable_config(&self.config),
            step: self.step,
            rng: self.rng.clone(),
            tracker: self.tracker.clone(),
        })
        .map_err(|err| checkpoint_error(path, err))?;
        let policy = self
            .policy
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|err| checkpoint_error(path, format!("{err:?}")))?;
        let optimizer = self
            .optimizer
            .into_bytes()
            .map_err(|err| checkpoint_error(path, format!("{err:?}")))?;
        let mut contents = Vec::with_capacity(header.len() + policy.len() + optimizer.len() + 64);
        contents.extend_from_slice(MAGIC);
        contents.extend_from_slice(&VERSION.to_le_bytes());
        for section in [&header[..], &policy[..], &optimizer[..]] {
            contents.extend_from_slice(&(section.len() as u64).to_le_bytes());
            contents.extend_from_slice(section);
        }
        let checksum = fnv1a(&contents);
        contents.extend_from_slice(&checksum.to_le_bytes());
        write_atomically(path, &contents)
    }

    /// Restores the state saved by [`Trainer::save_checkpoint`]. The trainer must have been
    /// built with the same configuration (apart from `metrics_path`).
    ///
    /// Errors if the file is missing, truncated or corrupt, or comes from another
    /// configuration; the trainer is consumed either way, and the file is never modified.
    pub fn load_checkpoint(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let contents = fs::read(path).map_err(|err| Error::Io {
            path: path.display().to_string(),
            message: err.to_string(),
        })?;
        let [header, policy, optimizer] =
            parse(&contents).map_err(|why| checkpoint_error(path, why))?;
        let header: Header = serde_json::from_slice(header)
            .map_err(|err| checkpoint_error(path, format!("unreadable header: {err}")))?;
        let expected = comparable_config(&self.config);
        if header.config != expected {
            return Err(checkpoint_error(
                path,
                format!(
                    "it was written with another configuration\n  checkpoint: {}\n  trainer:    {expected}",
                    header.config
                ),
            ));
        }
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(policy.to_vec()))
            .map_err(|err| checkpoint_error(path, format!("policy record: {err:?}")))?;
        self.policy = self
            .policy
            .try_load_record(record)
            .map_err(|err| checkpoint_error(path, format!("policy record: {err:?}")))?;
        self.optimizer = self
            .optimizer
            .from_bytes(Bytes::from_bytes_vec(optimizer.to_vec()))
            .map_err(|err| checkpoint_error(path, format!("optimizer record: {err:?}")))?;
        self.step = header.step;
        self.rng = header.rng;
        self.tracker = header.tracker;
        Ok(self)
    }
}

fn comparable_config(config: &TrainerConfig) -> String {
    let mut config = config.clone();
    config.metrics_path = None;
    burn::config::config_to_json(&config)
}

/// The three sections of a checkpoint, after checking magic, version, lengths and checksum.
fn parse(contents: &[u8]) -> std::result::Result<[&[u8]; 3], String> {
    let body_len = contents
        .len()
        .checked_sub(8)
        .filter(|&len| len >= MAGIC.len() + 4)
        .ok_or("the file is too short to be a checkpoint (truncated?)")?;
    let (body, checksum) = contents.split_at(body_len);
    if &body[..MAGIC.len()] != MAGIC {
        return Err("not a flow-rl checkpoint (bad magic bytes)".into());
    }
    let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!(
            "format version {version}; this build reads {VERSION}"
        ));
    }
    if fnv1a(body) != u64::from_le_bytes(checksum.try_into().expect("8 bytes")) {
        return Err("checksum mismatch: the file is truncated or corrupt".into());
    }
    let mut rest = &body[12..];
    let mut sections = Vec::with_capacity(3);
    for name in ["header", "policy", "optimizer"] {
        let too_short = || format!("the {name} section is truncated");
        let len_bytes = rest.get(..8).ok_or_else(too_short)?;
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let section = rest.get(8..8 + len).ok_or_else(too_short)?;
        sections.push(section);
        rest = &rest[8 + len..];
    }
    Ok(sections.try_into().expect("three sections"))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn checkpoint_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}
