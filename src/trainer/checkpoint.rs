//! Checkpoints of a [`Trainer`]: the policy's trainable parameters, optimiser state, RNG
//! state, step counter and the per-prompt tracker in one file, written atomically.
//!
//! Frozen parameters (a LoRA policy's base weights) are not written: they are the ones the
//! trainer was built with, so a resumed run builds its policy from the same base weights.
//! For SD3.5-medium with rank-32 adapters that is 0.3 GB of checkpoint instead of 10 GB.
//!
//! Layout: the magic `FLOWRLCK`, a format version (u32 LE), then three length-prefixed
//! (u64 LE) sections — a JSON header (configuration, step, RNG), the policy's burnpack record
//! and the optimiser's — and a CRC-32 (IEEE, u32 LE) of everything before it.
//!
//! Format 1 ended in an FNV-1a 64 checksum instead; it is refused with an error that says so.

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::{ParamGroup, list_param_ids};
use burn::store::ModuleRecord;
use burn::store::burn_pack::Reader;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use super::Trainer;
use crate::advantage::PromptStatTracker;
use crate::distributed::{agree, broadcast_trainable, trainable_param_ids};
use crate::error::{Error, Result};
use crate::io::{read_regular_file, write_atomically};
use crate::policy::FlowPolicy;
use crate::rng::Rng;

const MAGIC: &[u8; 8] = b"FLOWRLCK";
const VERSION: u32 = 2;
/// The format before CRC-32 checksums.
const FNV_VERSION: u32 = 1;
/// Bytes of the magic and the version that start every checkpoint.
const PREAMBLE: usize = MAGIC.len() + 4;
/// Bytes of the CRC-32 that ends it.
const CHECKSUM: usize = 4;

#[derive(Serialize, Deserialize)]
struct Header {
    /// The configuration without the settings that may differ between runs
    /// (`TrainerConfig::comparable_json`).
    config: String,
    step: usize,
    rng: Rng,
    tracker: Option<PromptStatTracker>,
}

impl<P: FlowPolicy> Trainer<P> {
    /// Writes the trainer's state to `path` (the policy's trainable parameters, not its frozen
    /// ones: see the module docs): to a temporary file beside it, synced, then
    /// renamed over `path`, so a crash leaves the previous checkpoint intact. Temporaries
    /// that killed saves to `path` left behind are removed first (on Linux).
    ///
    /// In a data-parallel run only rank 0 writes (every worker holds the same state), and
    /// a failure to write fails every worker.
    ///
    /// Errors ([`Error::Io`]) if `path` is a folder or a device, or its folder is not writable.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let written = if self.communicator.rank() == 0 {
            self.write_checkpoint(path.as_ref())
        } else {
            Ok(())
        };
        agree(&*self.communicator, "saving the checkpoint", written)
    }

    fn write_checkpoint(&self, path: &Path) -> Result<()> {
        let header = serde_json::to_vec(&Header {
            config: self.config.comparable_json(),
            step: self.step,
            rng: self.rng.clone(),
            tracker: self.tracker.clone(),
        })
        .map_err(|err| checkpoint_error(path, err))?;
        let policy = self
            .policy
            .clone()
            .into_record_group(ParamGroup::from_ids(trainable_param_ids(&self.policy)))
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
        let checksum = crc32fast::hash(&contents);
        contents.extend_from_slice(&checksum.to_le_bytes());
        write_atomically(path, &contents)
    }

    /// Restores the state saved by [`Trainer::save_checkpoint`]. The trainer must have been
    /// built with the same configuration, apart from `metrics_path`, `rollout_batch_size` and
    /// `micro_batch_rows`, and with a policy whose frozen parameters are the saved run's (the
    /// same base weights): with those unchanged the resumed run is bit-exact. A checkpoint
    /// that lacks one of the policy's trainable parameters is refused.
    ///
    /// Errors if the path is missing or not a regular file ([`Error::Io`]), or if the file is
    /// truncated or corrupt, in the format 1 of earlier versions, comes from another
    /// configuration or holds an optimiser record that does not fit the policy
    /// ([`Error::Checkpoint`]); the trainer is consumed either way, and the file is never
    /// modified.
    ///
    /// In a data-parallel run every worker reads the file, a failure on any worker fails
    /// them all, and rank 0's trainable parameters are then broadcast.
    pub fn load_checkpoint(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let restored = self.restore(path.as_ref());
        agree(&*self.communicator, "loading the checkpoint", restored)?;
        self.policy = broadcast_trainable(&*self.communicator, self.policy)?;
        Ok(self)
    }

    fn restore(&mut self, path: &Path) -> Result<()> {
        let contents = read_regular_file(path)?;
        let [header, policy, optimizer] =
            parse(&contents).map_err(|why| checkpoint_error(path, why))?;
        let header: Header = serde_json::from_slice(header)
            .map_err(|err| checkpoint_error(path, format!("unreadable header: {err}")))?;
        let expected = self.config.comparable_json();
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
            .map_err(|err| checkpoint_error(path, format!("policy record: {err:?}")))?
            .allow_partial(true);
        self.policy = self
            .policy
            .clone()
            .try_load_record(record)
            .map_err(|err| checkpoint_error(path, format!("policy record: {err:?}")))?;
        check_policy_record(policy, &self.policy)
            .map_err(|why| checkpoint_error(path, format!("policy record: {why}")))?;
        check_optimizer_record(optimizer, &self.policy)
            .map_err(|why| checkpoint_error(path, format!("optimizer record: {why}")))?;
        self.optimizer = self
            .optimizer
            .clone()
            .from_bytes(Bytes::from_bytes_vec(optimizer.to_vec()))
            .map_err(|err| checkpoint_error(path, format!("optimizer record: {err:?}")))?;
        self.step = header.step;
        self.rng = header.rng;
        self.tracker = header.tracker;
        Ok(())
    }
}

/// The three sections of a checkpoint, after checking magic, version, lengths and checksum.
fn parse(contents: &[u8]) -> std::result::Result<[&[u8]; 3], String> {
    if contents.len() < PREAMBLE {
        return Err("the file is too short to be a checkpoint (truncated?)".into());
    }
    if &contents[..MAGIC.len()] != MAGIC {
        return Err("not a flow-rl checkpoint (bad magic bytes)".into());
    }
    let version = u32::from_le_bytes(contents[MAGIC.len()..PREAMBLE].try_into().expect("4 bytes"));
    match version {
        VERSION => {}
        FNV_VERSION => {
            return Err(format!(
                "written in checkpoint format {FNV_VERSION}, which this version of flow-rl no \
                 longer reads: format {VERSION} changed the checksum from FNV-1a to CRC-32. \
                 Resume with the flow-rl release that wrote it, or start a new run"
            ));
        }
        other => {
            return Err(format!(
                "checkpoint format {other}; this version of flow-rl reads format {VERSION}"
            ));
        }
    }
    let body_len = contents
        .len()
        .checked_sub(CHECKSUM)
        .filter(|&len| len >= PREAMBLE)
        .ok_or("the file is too short to be a checkpoint (truncated?)")?;
    let (body, checksum) = contents.split_at(body_len);
    if crc32fast::hash(body) != u32::from_le_bytes(checksum.try_into().expect("4 bytes")) {
        return Err("checksum mismatch: the file is truncated or corrupt".into());
    }
    let mut rest = &body[PREAMBLE..];
    let mut sections = Vec::with_capacity(3);
    for name in ["header", "policy", "optimizer"] {
        let too_short = || format!("the {name} section is truncated");
        let len_bytes = rest.get(..8).ok_or_else(too_short)?;
        let len = usize::try_from(u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")))
            .map_err(|_| too_short())?;
        let end = len.checked_add(8).ok_or_else(too_short)?;
        let section = rest.get(8..end).ok_or_else(too_short)?;
        sections.push(section);
        rest = &rest[end..];
    }
    Ok(sections.try_into().expect("three sections"))
}

/// Checks that every state tensor of the optimiser record belongs to a parameter of
/// `policy`; burn-optim panics on a tensor without a parameter id.
fn check_optimizer_record<P: FlowPolicy>(
    record: &[u8],
    policy: &P,
) -> std::result::Result<(), String> {
    let reader = Reader::from_bytes(Bytes::from_bytes_vec(record.to_vec()))
        .map_err(|err| format!("not a burnpack record: {err:?}"))?;
    let tensors = reader
        .into_tensors()
        .map_err(|err| format!("unreadable tensors: {err:?}"))?;
    let parameters: BTreeSet<u64> = list_param_ids(policy)
        .into_iter()
        .map(|id| id.val())
        .collect();
    for tensor in tensors {
        match tensor.param_id {
            None => {
                return Err(format!(
                    "state tensor `{}` carries no parameter id",
                    tensor.name
                ));
            }
            Some(id) if !parameters.contains(&id) => {
                return Err(format!(
                    "state tensor `{}` belongs to parameter {id}, which the policy does not have",
                    tensor.name
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks that the record held every trainable parameter of `policy`, into which it was
/// loaded as a partial record (frozen parameters are not saved): loading gives each
/// parameter the record's id, so a trainable parameter with an id the record lacks kept its
/// initial value.
fn check_policy_record<P: FlowPolicy>(
    record: &[u8],
    policy: &P,
) -> std::result::Result<(), String> {
    let reader = Reader::from_bytes(Bytes::from_bytes_vec(record.to_vec()))
        .map_err(|err| format!("not a burnpack record: {err:?}"))?;
    let stored: BTreeSet<u64> = reader
        .into_tensors()
        .map_err(|err| format!("unreadable tensors: {err:?}"))?
        .into_iter()
        .filter_map(|tensor| tensor.param_id)
        .collect();
    let missing = trainable_param_ids(policy)
        .into_iter()
        .filter(|id| !stored.contains(&id.val()))
        .count();
    if missing > 0 {
        return Err(format!(
            "it lacks {missing} of the policy's trainable parameters; expected a checkpoint of \
             this policy"
        ));
    }
    Ok(())
}

fn checkpoint_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}
