//! CLIP text-encoder weights in transformers' naming: diffusers' `text_encoder/` and
//! `text_encoder_2/` folders (one file or shards) and Stability AI's single files
//! `text_encoders/clip_l.safetensors` / `clip_g.safetensors`, with or without a prefix
//! such as `text_encoders.clip_g.transformer.`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter,
};
use burn::tensor::FloatDType;

use super::config::{ClipActivation, ClipTextConfig, EosPooling};
use super::text::ClipTextModel;
use crate::error::{Error, Result, WeightProblem};
use crate::models::safetensors_files::{read_file, read_shards};

/// The key every CLIP text encoder holds, after its file's prefix.
const TOKEN_EMBEDDING: &str = "text_model.embeddings.token_embedding.weight";
/// A buffer that older transformers saves hold and no parameter needs.
const POSITION_IDS: &str = "text_model.embeddings.position_ids";
/// diffusers' and transformers' unsharded file and shard index.
const SINGLE_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

/// A CLIP text-encoder checkpoint, memory-mapped and read lazily.
///
/// ```no_run
/// /// use flow_rl::models::clip::ClipTextCheckpoint;
///
/// let checkpoint = ClipTextCheckpoint::open("sd3.5/text_encoder_2")?;
/// let model = checkpoint.infer_config()?.init(&Device::default())?;
/// let model = checkpoint.load_into(model, None)?;
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Clone)]
pub struct ClipTextCheckpoint {
    path: PathBuf,
    /// The encoder's tensors by key, without the file's prefix.
    tensors: BTreeMap<String, PackTensor>,
    /// The prefix the file puts before the encoder's keys.
    prefix: String,
    /// transformers' `config.json` beside the weights, when there is one.
    hf_config: Option<serde_json::Value>,
}

impl std::fmt::Debug for ClipTextCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTextCheckpoint")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl ClipTextCheckpoint {
    /// Opens a `.safetensors` file or a folder holding `model.safetensors` or its shards
    /// with `model.safetensors.index.json`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (tensors, hf_config) = if path.is_dir() {
            let index = path.join(INDEX_FILE);
            let tensors = if index.is_file() {
                read_shards(path, &index)?
            } else if path.join(SINGLE_FILE).is_file() {
                read_file(&path.join(SINGLE_FILE))?
            } else {
                return Err(Error::Checkpoint {
                    path: path.display().to_string(),
                    message: format!(
                        "expected a CLIP text-encoder folder holding `{SINGLE_FILE}` or \
                         `{INDEX_FILE}` with its shards"
                    ),
                });
            };
            (tensors, read_hf_config(&path.join("config.json"))?)
        } else {
            (read_file(path)?, None)
        };
        let Some(prefix) = tensors
            .keys()
            .find_map(|key| key.strip_suffix(TOKEN_EMBEDDING))
            .map(str::to_owned)
        else {
            return Err(wrong_family(path, &tensors));
        };
        let tensors = tensors
            .into_iter()
            .filter_map(|(key, tensor)| Some((key.strip_prefix(&prefix)?.to_owned(), tensor)))
            .collect();
        Ok(Self {
            path: path.to_owned(),
            tensors,
            prefix,
            hf_config,
        })
    }

    /// The architecture, from tensor shapes; the head count, activation and pooling rule
    /// come from `config.json` where the folder has one, else from CLIP's conventions
    /// (64-wide heads; QuickGELU at width 768 as OpenAI's ViT-L/14, exact GELU otherwise
    /// as OpenCLIP's ViT-bigG/14; transformers' legacy highest-id pooling).
    pub fn infer_config(&self) -> Result<ClipTextConfig> {
        let shape = |key: &str| -> Result<Vec<usize>> {
            self.tensors
                .get(key)
                .map(|tensor| tensor.shape.to_vec())
                .ok_or_else(|| self.mismatch(vec![WeightProblem::missing(key, vec![])]))
        };
        let embedding = shape(TOKEN_EMBEDDING)?;
        let positions = shape("text_model.embeddings.position_embedding.weight")?;
        let mlp = shape("text_model.encoder.layers.0.mlp.fc1.weight")?;
        let projection = shape("text_projection.weight")?;
        let layers = (0..)
            .take_while(|layer| {
                self.tensors
                    .contains_key(&format!("text_model.encoder.layers.{layer}.mlp.fc1.weight"))
            })
            .count();
        let (vocab_size, width) = (embedding[0], embedding[1]);
        let field = |name: &str| self.hf_config.as_ref().and_then(|config| config.get(name));
        let heads = field("num_attention_heads")
            .and_then(serde_json::Value::as_u64)
            .map_or(width / 64, |heads| heads as usize);
        let activation = match field("hidden_act").and_then(serde_json::Value::as_str) {
            Some("quick_gelu") => ClipActivation::QuickGelu,
            Some("gelu") => ClipActivation::Gelu,
            Some(other) => {
                return Err(Error::invalid(
                    "hidden_act",
                    other,
                    "`quick_gelu` or `gelu` (CLIP's activations)",
                ));
            }
            None if width == 768 => ClipActivation::QuickGelu,
            None => ClipActivation::Gelu,
        };
        let pooling = match field("eos_token_id").and_then(serde_json::Value::as_u64) {
            None | Some(2) => EosPooling::HighestId,
            Some(eos) => EosPooling::FirstOf(eos as usize),
        };
        let mut config = ClipTextConfig::new(
            vocab_size,
            positions[0],
            width,
            layers,
            heads,
            mlp[0],
            activation,
            projection[0],
        )
        .with_pooling(pooling);
        if let Some(eps) = field("layer_norm_eps").and_then(serde_json::Value::as_f64) {
            config = config.with_layer_norm_eps(eps);
        }
        config.validate()?;
        Ok(config)
    }

    /// Loads the weights into `model`, keeping their stored dtype or casting them to
    /// `dtype`. Every missing, unexpected or mis-shaped key is listed in one
    /// [`Error::WeightMismatch`] before anything is loaded.
    pub fn load_into(
        &self,
        mut model: ClipTextModel,
        dtype: Option<FloatDType>,
    ) -> Result<ClipTextModel> {
        let expected: BTreeMap<String, Vec<usize>> = model
            .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
            .into_iter()
            .map(|tensor| (tensor.name.clone(), tensor.shape.to_vec()))
            .collect();
        let table = key_table(model.config().layers);
        let mut problems = Vec::new();
        for (key, param) in &table {
            let Some(param_shape) = expected.get(param) else {
                unreachable!("the key table names parameter {param}, which the model lacks")
            };
            match self.tensors.get(key) {
                None => problems.push(WeightProblem::missing(key, param_shape.clone())),
                Some(tensor) if tensor.shape.to_vec() != *param_shape => problems.push(
                    WeightProblem::mis_shaped(key, param_shape.clone(), tensor.shape.to_vec()),
                ),
                Some(_) => {}
            }
        }
        let known: BTreeSet<&str> = table.keys().map(String::as_str).collect();
        for (key, tensor) in &self.tensors {
            if !known.contains(key.as_str()) && key != POSITION_IDS {
                problems.push(WeightProblem::unexpected(key, tensor.shape.to_vec()));
            }
        }
        if !problems.is_empty() {
            return Err(self.mismatch(problems));
        }
        let tensors = table
            .iter()
            .map(|(key, param)| {
                let mut tensor = self.tensors[key].clone();
                tensor.name = param.clone();
                tensor
            })
            .collect();
        let adapter: Box<dyn ModuleAdapter> = match dtype {
            Some(dtype) => Box::new(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(dtype.into()))),
            None => Box::new(PyTorchToBurnAdapter),
        };
        let result = model.apply(tensors, None, Some(adapter), false);
        if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
            return Err(Error::Checkpoint {
                path: self.path.display().to_string(),
                message: format!(
                    "loading failed after the shape checks passed: errors {:?}, missing {:?}, \
                     unused {:?}",
                    result.errors, result.missing, result.unused
                ),
            });
        }
        Ok(model)
    }

    fn mismatch(&self, problems: Vec<WeightProblem>) -> Error {
        Error::WeightMismatch {
            path: self.path.display().to_string(),
            problems: problems
                .into_iter()
                .map(|problem| WeightProblem {
                    key: format!("{}{}", self.prefix, problem.key),
                    ..problem
                })
                .collect(),
        }
    }
}

/// Stored key (without prefix) → the parameter's path in PyTorch naming.
fn key_table(layers: usize) -> BTreeMap<String, String> {
    let mut table = BTreeMap::new();
    let mut entry = |key: String, param: String| {
        table.insert(key, param);
    };
    entry(TOKEN_EMBEDDING.into(), "token_embedding.weight".into());
    entry(
        "text_model.embeddings.position_embedding.weight".into(),
        "position_embedding".into(),
    );
    for layer in 0..layers {
        let stored = format!("text_model.encoder.layers.{layer}");
        let ours = format!("layers.{layer}");
        for suffix in ["weight", "bias"] {
            for (theirs, mine) in [
                ("self_attn.q_proj", "attention.query"),
                ("self_attn.k_proj", "attention.key"),
                ("self_attn.v_proj", "attention.value"),
                ("self_attn.out_proj", "attention.output"),
                ("layer_norm1", "norm1"),
                ("layer_norm2", "norm2"),
                ("mlp.fc1", "mlp.fc1"),
                ("mlp.fc2", "mlp.fc2"),
            ] {
                entry(
                    format!("{stored}.{theirs}.{suffix}"),
                    format!("{ours}.{mine}.{suffix}"),
                );
            }
        }
    }
    for suffix in ["weight", "bias"] {
        entry(
            format!("text_model.final_layer_norm.{suffix}"),
            format!("final_norm.{suffix}"),
        );
    }
    entry(
        "text_projection.weight".into(),
        "text_projection.weight".into(),
    );
    table
}

/// transformers' `config.json`, when present.
fn read_hf_config(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|err| Error::io(path, err))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| Error::Checkpoint {
            path: path.display().to_string(),
            message: format!("not JSON: {err}"),
        })
}

/// The error for weights without a CLIP text encoder, naming what they look like.
fn wrong_family(path: &Path, tensors: &BTreeMap<String, PackTensor>) -> Error {
    let family = [
        ("joint_blocks.", "an SD3-family MMDiT (official layout)"),
        ("transformer_blocks.", "a diffusers transformer"),
        ("encoder.block.", "a T5 encoder"),
        ("vision_model.", "a CLIP vision tower"),
        (
            "transformer.resblocks.",
            "an OpenCLIP checkpoint (not supported: convert it with transformers)",
        ),
        ("encoder.down.", "a VAE"),
        ("down_blocks.", "a diffusers UNet or VAE"),
    ]
    .into_iter()
    .find(|(marker, _)| tensors.keys().any(|key| key.contains(marker)))
    .map_or("not a CLIP text encoder", |(_, family)| family);
    let sample: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
    Error::Checkpoint {
        path: path.display().to_string(),
        message: format!(
            "this looks like {family} (keys such as {sample:?}); expected a CLIP text encoder \
             with `[prefix]{TOKEN_EMBEDDING}`"
        ),
    }
}
