//! The base model's file: the pre-trained MMDiT's weights as a burnpack, its architecture
//! and the text encoder it was trained with in the metadata, written atomically.
//!
//! [`load_base`] is the RL part's entry point: it rebuilds the MMDiT from the stored
//! architecture, loads every weight (refusing a file that lacks one or holds a stranger)
//! and returns the seed of the frozen text encoder whose embeddings the model expects.

use std::path::Path;

use burn::prelude::*;
use burn::store::burn_pack::Reader;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Bytes;
use flow_rl::io::write_atomically;
use flow_rl::models::mmdit::{Mmdit, MmditConfig};
use flow_rl::{Error, Result};

use crate::world::IMAGE_SIZE;

/// The metadata key of the MMDiT's architecture (its [`MmditConfig`] as JSON).
const CONFIG_KEY: &str = "shapes.mmdit_config";
/// The metadata key of the text encoder's seed.
const TEXT_SEED_KEY: &str = "shapes.text_encoder_seed";
/// The metadata key of how the model was made (free text: command, loss, wall time).
const PROVENANCE_KEY: &str = "shapes.provenance";

/// What a base model file says besides its weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseInfo {
    /// The seed of the [`TextEncoder`](crate::text::TextEncoder) whose `context` and
    /// `pooled` the model was trained on; conditions must come from the same encoder.
    pub text_encoder_seed: u64,
    /// How the model was made: the command, steps, final loss, wall time.
    pub provenance: String,
}

/// Writes `model`'s weights (f32, as trained), its architecture and `info` to `path`,
/// atomically. Fails when the folder cannot be written.
pub fn save_base(model: &Mmdit, info: &BaseInfo, path: &Path) -> Result<()> {
    let config = serde_json::to_string(model.config()).map_err(|err| Error::Checkpoint {
        path: path.display().to_string(),
        message: format!("the MMDiT configuration has no JSON form: {err}"),
    })?;
    let mut store = BurnpackStore::from_bytes(None)
        .metadata(CONFIG_KEY, config)
        .metadata(TEXT_SEED_KEY, info.text_encoder_seed.to_string())
        .metadata(PROVENANCE_KEY, info.provenance.clone());
    let error = |message: String| Error::Checkpoint {
        path: path.display().to_string(),
        message,
    };
    model
        .save_into(&mut store)
        .map_err(|err| error(format!("collecting the weights: {err:?}")))?;
    let bytes = store
        .get_bytes()
        .map_err(|err| error(format!("encoding the burnpack: {err:?}")))?;
    write_atomically(path, &bytes)
}

/// The MMDiT saved by [`save_base`] at `path`, on `device` (plain or autodiff), set to
/// 32×32 latents, with the file's [`BaseInfo`].
///
/// Fails with [`Error::Io`] when the file cannot be read, and with [`Error::Checkpoint`]
/// when it is not a burnpack, lacks or garbles the metadata, or its weights do not match
/// the stored architecture (every missing, unexpected or mis-shaped tensor is listed).
pub fn load_base(path: &Path, device: &Device) -> Result<(Mmdit, BaseInfo)> {
    let error = |message: String| Error::Checkpoint {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|err| Error::io(path, err))?;
    let reader = Reader::from_bytes(Bytes::from_bytes_vec(bytes.clone()))
        .map_err(|err| error(format!("not a burnpack file: {err:?}")))?;
    let metadata = reader.metadata();
    let entry = |key: &str| {
        metadata
            .get(key)
            .ok_or_else(|| error(format!("no `{key}` metadata; not a shapes base model")))
    };
    let config: MmditConfig = serde_json::from_str(entry(CONFIG_KEY)?).map_err(|err| {
        error(format!(
            "`{CONFIG_KEY}` is not an MMDiT configuration: {err}"
        ))
    })?;
    let seed_text = entry(TEXT_SEED_KEY)?;
    let text_encoder_seed = seed_text.parse().map_err(|_| {
        error(format!(
            "`{TEXT_SEED_KEY}` is {seed_text:?}; expected an unsigned integer"
        ))
    })?;
    let provenance = entry(PROVENANCE_KEY)?.clone();

    let mut model = config
        .init(device)?
        .with_latent_size(IMAGE_SIZE, IMAGE_SIZE);
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes))).validate(true);
    let applied = model
        .load_from(&mut store)
        .map_err(|err| error(format!("reading the weights: {err:?}")))?;
    let mut problems: Vec<String> = Vec::new();
    problems.extend(
        applied
            .missing
            .iter()
            .map(|(name, _)| format!("missing `{name}`")),
    );
    problems.extend(
        applied
            .unused
            .iter()
            .map(|name| format!("unexpected `{name}`")),
    );
    problems.extend(applied.errors.iter().map(ToString::to_string));
    if !problems.is_empty() {
        return Err(error(format!(
            "the weights do not fit the stored architecture: {}",
            problems.join("; ")
        )));
    }
    Ok((
        model,
        BaseInfo {
            text_encoder_seed,
            provenance,
        },
    ))
}
