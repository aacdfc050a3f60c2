//! CLIP text-encoder weights: diffusers' `text_encoder/` and `text_encoder_2/` folders and
//! Stability AI's single files, in transformers' key naming.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot};
use burn::tensor::FloatDType;

use super::config::{ClipPooling, ClipTextConfig};
use super::mlp::ClipActivation;
use super::text::ClipTextModel;
use crate::error::{Error, Result, WeightProblem};
use crate::models::mmdit::mixed_dtypes::cast_if_mixed;
use crate::models::safetensors_files::{apply_pytorch_tensors, read_file, read_shards};

/// The key every CLIP text encoder holds, after the file's prefix.
const TOKEN_EMBEDDING: &str = "text_model.embeddings.token_embedding.weight";
/// A buffer older transformers versions saved; not a parameter.
const POSITION_IDS: &str = "text_model.embeddings.position_ids";
/// transformers' unsharded weights file in a diffusers `text_encoder*/` folder.
const WEIGHTS_FILE: &str = "model.safetensors";
/// transformers' shard index.
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// transformers' configuration beside the weights.
const CONFIG_FILE: &str = "config.json";

/// The weights of one CLIP text encoder, memory-mapped and read lazily.
///
/// Opens a diffusers folder (`text_encoder/` or `text_encoder_2/`: `model.safetensors`, or
/// shards listed in `model.safetensors.index.json`) or a single safetensors file in
/// transformers' naming, unprefixed (Stability AI's `text_encoders/clip_l.safetensors`,
/// `clip_g.safetensors`) or under a component prefix (`text_encoders.clip_g.transformer.` in
/// `sd3_medium_incl_clips.safetensors`; pick one with [`open_prefixed`](Self::open_prefixed)).
///
/// ```no_run
/// use burn::prelude::*;
/// use flow_rl::models::clip::ClipTextWeights;
///
/// let weights = ClipTextWeights::open("sd3.5-large/text_encoder_2")?;
/// let model = weights.infer_config()?.init(&Device::default())?;
/// let model = weights.load_into(model, None)?; // stored dtype kept
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Clone)]
pub struct ClipTextWeights {
    path: PathBuf,
    /// The encoder's tensors by key, without the file's prefix.
    tensors: BTreeMap<String, PackTensor>,
    /// The prefix the file puts before the encoder's keys.
    prefix: String,
    /// transformers' `config.json` beside the weights, when there is one.
    hf_config: Option<serde_json::Value>,
}

impl std::fmt::Debug for ClipTextWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTextWeights")
            .field("path", &self.path)
            .field("prefix", &self.prefix)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl ClipTextWeights {
    /// Opens a diffusers folder or a single file holding exactly one CLIP text encoder.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_inner(path.as_ref(), None)
    }

    /// Opens the encoder whose keys start with `prefix` (e.g.
    /// `text_encoders.clip_l.transformer.`) in a file holding several components.
    pub fn open_prefixed(path: impl AsRef<Path>, prefix: &str) -> Result<Self> {
        Self::open_inner(path.as_ref(), Some(prefix))
    }

    fn open_inner(path: &Path, prefix: Option<&str>) -> Result<Self> {
        let (tensors, hf_config) = if path.is_dir() {
            (read_folder(path)?, read_hf_config(path)?)
        } else {
            (read_file(path)?, None)
        };
        let prefixes: BTreeSet<&str> = tensors
            .keys()
            .filter_map(|key| key.strip_suffix(TOKEN_EMBEDDING))
            .collect();
        let prefix = match (prefix, prefixes.len()) {
            (Some(prefix), _) if prefixes.contains(prefix) => prefix.to_owned(),
            (None, 1) => prefixes
                .iter()
                .next()
                .copied()
                .unwrap_or_default()
                .to_owned(),
            (_, 0) => return Err(wrong_family(path, &tensors)),
            (_, _) => {
                return Err(Error::Checkpoint {
                    path: path.display().to_string(),
                    message: format!(
                        "expected one CLIP text encoder {}; the file holds encoders under the \
                         prefixes {prefixes:?}: open one with `ClipTextWeights::open_prefixed`",
                        prefix.map_or(String::new(), |p| format!("under `{p}`")),
                    ),
                });
            }
        };
        if let Some(vision_key) = tensors.keys().find(|key| {
            key.strip_prefix(&prefix).is_some_and(|key| {
                key.starts_with("vision_model.") || key == "visual_projection.weight"
            })
        }) {
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                message: format!(
                    "this looks like a whole CLIP model (transformers' `CLIPModel`: a text and                      a vision tower, e.g. `{vision_key}`), not a text encoder alone; open it                      with `ClipModelWeights::open`"
                ),
            });
        }
        let tensors = tensors
            .into_iter()
            .filter_map(|(key, tensor)| Some((key.strip_prefix(&prefix)?.to_owned(), tensor)))
            .filter(|(key, _)| key != POSITION_IDS)
            .collect();
        Ok(Self {
            path: path.to_owned(),
            tensors,
            prefix,
            hf_config,
        })
    }

    /// The prefix before the encoder's keys in the file (`""` for most files).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The architecture, from the tensors' shapes and, where a diffusers folder has one,
    /// `config.json` (heads, activation, pooling rule, epsilon). Without it, heads of 64
    /// features are assumed, QuickGELU and the highest-id pooling for width 768 (OpenAI's
    /// CLIP-L), and exact GELU with `<|endoftext|>` pooling otherwise (OpenCLIP's towers).
    pub fn infer_config(&self) -> Result<ClipTextConfig> {
        let shape = |key: &str| -> Result<Vec<usize>> {
            self.tensors
                .get(key)
                .map(|tensor| tensor.shape.to_vec())
                .ok_or_else(|| self.mismatch(vec![WeightProblem::missing(key, vec![])]))
        };
        let embedding = shape(TOKEN_EMBEDDING)?;
        let positions = shape("text_model.embeddings.position_embedding.weight")?;
        let fc1 = shape("text_model.encoder.layers.0.mlp.fc1.weight")?;
        let projection = shape("text_projection.weight")?;
        let layers = self
            .tensors
            .keys()
            .filter_map(|key| {
                let rest = key.strip_prefix("text_model.encoder.layers.")?;
                rest.split('.').next()?.parse::<usize>().ok()
            })
            .max()
            .map_or(0, |last| last + 1);
        let [vocab_size, width] = embedding[..] else {
            return Err(self.unreadable(format!("{TOKEN_EMBEDDING} is {embedding:?}, not 2-D")));
        };
        let hf = |name: &str| {
            self.hf_config
                .as_ref()
                .and_then(|config| config.get(name))
                .and_then(|value| value.as_u64())
                .map(|value| value as usize)
        };
        let heads = hf("num_attention_heads").unwrap_or(width / 64);
        let activation = match self
            .hf_config
            .as_ref()
            .and_then(|config| config.get("hidden_act"))
            .and_then(|value| value.as_str())
        {
            Some("quick_gelu") => ClipActivation::QuickGelu,
            Some("gelu") => ClipActivation::Gelu,
            Some(other) => {
                return Err(Error::invalid(
                    "hidden_act",
                    other,
                    "`quick_gelu` or `gelu` in config.json",
                ));
            }
            None if width == 768 => ClipActivation::QuickGelu,
            None => ClipActivation::Gelu,
        };
        let pooling = match hf("eos_token_id") {
            Some(2) => ClipPooling::HighestId,
            Some(eos) => ClipPooling::FirstId(eos),
            None if width == 768 => ClipPooling::HighestId,
            None => ClipPooling::FirstId(vocab_size - 1),
        };
        let eps = self
            .hf_config
            .as_ref()
            .and_then(|config| config.get("layer_norm_eps"))
            .and_then(|value| value.as_f64())
            .unwrap_or(1e-5);
        let config = ClipTextConfig::new(
            width,
            layers,
            heads,
            fc1[0],
            activation,
            projection[0],
            pooling,
        )
        .with_vocab_size(vocab_size)
        .with_max_positions(positions[0])
        .with_layer_norm_eps(eps);
        config.validate()?;
        Ok(config)
    }

    /// Loads the weights into `model`, keeping their stored dtype or casting them to
    /// `dtype`. A file mixing float dtypes is loaded in the one holding most elements, with
    /// a `log` warning naming the keys cast.
    ///
    /// Fails with [`Error::WeightMismatch`] listing every missing, unexpected or mis-shaped
    /// key before anything is loaded.
    pub fn load_into(
        &self,
        model: ClipTextModel,
        dtype: Option<FloatDType>,
    ) -> Result<ClipTextModel> {
        let expected: BTreeMap<String, Vec<usize>> = model
            .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
            .into_iter()
            .map(|tensor| (tensor.name.clone(), tensor.shape.to_vec()))
            .collect();
        let table: Vec<(&str, String)> = expected
            .keys()
            .map(|param| (param.as_str(), stored_key(param)))
            .collect();
        let mut problems = Vec::new();
        for (param, key) in &table {
            let shape = &expected[*param];
            match self.tensors.get(key) {
                None => problems.push(WeightProblem::missing(key.clone(), shape.clone())),
                Some(tensor) if &tensor.shape.to_vec() != shape => problems.push(
                    WeightProblem::mis_shaped(key.clone(), shape.clone(), tensor.shape.to_vec()),
                ),
                Some(_) => {}
            }
        }
        let known: BTreeSet<&str> = table.iter().map(|(_, key)| key.as_str()).collect();
        for (key, tensor) in &self.tensors {
            if !known.contains(key.as_str()) {
                problems.push(WeightProblem::unexpected(
                    key.clone(),
                    tensor.shape.to_vec(),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(self.mismatch(problems));
        }
        let dtype = dtype.or_else(|| {
            cast_if_mixed(
                &self.path,
                self.tensors
                    .iter()
                    .map(|(key, tensor)| (key.as_str(), tensor)),
            )
        });
        let tensors = table
            .iter()
            .map(|(param, key)| {
                let mut tensor = self.tensors[key].clone();
                tensor.name = (*param).to_owned();
                tensor
            })
            .collect();
        apply_pytorch_tensors(model, tensors, dtype, &self.path)
    }

    fn mismatch(&self, problems: Vec<WeightProblem>) -> Error {
        prefixed_mismatch(&self.path, &self.prefix, problems)
    }

    fn unreadable(&self, message: String) -> Error {
        Error::Checkpoint {
            path: self.path.display().to_string(),
            message,
        }
    }
}

/// [`Error::WeightMismatch`] at `path` with each problem's key as the file stores it, behind
/// `prefix`.
pub(crate) fn prefixed_mismatch(path: &Path, prefix: &str, problems: Vec<WeightProblem>) -> Error {
    Error::WeightMismatch {
        path: path.display().to_string(),
        problems: problems
            .into_iter()
            .map(|problem| WeightProblem {
                key: format!("{prefix}{}", problem.key),
                ..problem
            })
            .collect(),
    }
}

/// The transformers key of a parameter path of [`ClipTextModel`] (in PyTorch naming).
pub(crate) fn stored_key(param: &str) -> String {
    if param.starts_with("token_embedding.") || param.starts_with("position_embedding.") {
        format!("text_model.embeddings.{param}")
    } else if param.starts_with("layers.") {
        format!("text_model.encoder.{param}")
    } else if param.starts_with("text_projection.") {
        param.to_owned()
    } else {
        format!("text_model.{param}")
    }
}

/// A diffusers `text_encoder*/` folder: sharded through the index, or one file.
fn read_folder(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
    let index = path.join(WEIGHTS_INDEX);
    if index.is_file() {
        return read_shards(path, &index);
    }
    let single = path.join(WEIGHTS_FILE);
    if single.is_file() {
        return read_file(&single);
    }
    Err(Error::Checkpoint {
        path: path.display().to_string(),
        message: format!(
            "expected a diffusers text-encoder folder (`text_encoder/`, `text_encoder_2/`) \
             holding `{WEIGHTS_INDEX}` with its shards or `{WEIGHTS_FILE}`"
        ),
    })
}

/// transformers' `config.json` in `folder`, when there is one.
pub(crate) fn read_hf_config(folder: &Path) -> Result<Option<serde_json::Value>> {
    let path = folder.join(CONFIG_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|err| Error::io(&path, err))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| Error::Checkpoint {
            path: path.display().to_string(),
            message: format!("not JSON: {err}"),
        })
}

/// The error for a file without a CLIP text encoder, naming what it looks like.
fn wrong_family(path: &Path, tensors: &BTreeMap<String, PackTensor>) -> Error {
    let family = [
        (
            "visual.conv1.weight",
            "a whole OpenCLIP model (open it with `ClipModelWeights::open`)",
        ),
        (
            "transformer.resblocks.",
            "an OpenCLIP model in open_clip's own naming",
        ),
        ("encoder.block.", "a T5 text encoder"),
        ("joint_blocks.", "an SD3-family MMDiT (official layout)"),
        ("transformer_blocks.", "a diffusers transformer"),
        ("double_blocks.", "a FLUX transformer"),
        ("down_blocks.", "a diffusers UNet"),
        ("input_blocks.", "a UNet (SD 1.x/2.x/SDXL)"),
        ("encoder.down.", "a VAE"),
        (
            "vision_model.",
            "a CLIP vision tower (whole CLIP models open with `ClipModelWeights::open`)",
        ),
    ]
    .into_iter()
    .find(|(marker, _)| tensors.keys().any(|key| key.contains(marker)))
    .map_or("not a CLIP text encoder", |(_, family)| family);
    let sample: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
    Error::Checkpoint {
        path: path.display().to_string(),
        message: format!(
            "this looks like {family} (keys such as {sample:?}); expected a CLIP text encoder \
             in transformers' naming (`{TOKEN_EMBEDDING}`, `text_model.encoder.layers.*`, \
             `text_projection.weight`)"
        ),
    }
}
