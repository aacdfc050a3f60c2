//! Opening SD3-family checkpoints in either layout, reading the architecture off them, and
//! loading them into an [`Mmdit`] with every mismatch reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore,
    PyTorchToBurnAdapter, SafetensorsStore, bridge,
};
use burn::tensor::{FloatDType, TensorData};

use super::keymap::{Entry, Transform, WeightLayout, entries};
use crate::error::{Error, Result, WeightProblem};
use crate::models::mmdit::{Mmdit, MmditConfig};

/// The key prefix of the transformer in Stability AI's single files.
const OFFICIAL_PREFIX: &str = "model.diffusion_model.";
/// diffusers' unsharded weights file.
const DIFFUSERS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// diffusers' shard index.
const DIFFUSERS_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";

/// An SD3-family transformer checkpoint, memory-mapped and read lazily.
///
/// Opens Stability AI's single files (`sd3.5_medium.safetensors`: the transformer under
/// `model.diffusion_model.`; other components such as the VAE are ignored) and diffusers'
/// layout (a `transformer/` folder holding `diffusion_pytorch_model.safetensors` or shards
/// listed in `diffusion_pytorch_model.safetensors.index.json`).
///
/// ```no_run
/// use burn::prelude::*;
/// use flow_rl::models::mmdit::MmditCheckpoint;
///
/// let checkpoint = MmditCheckpoint::open("sd3.5_medium.safetensors")?;
/// let config = checkpoint.infer_config()?; // or MmditConfig::sd35_medium()
/// let model = config.init(&Device::default())?;
/// let model = checkpoint.load_into(model, None)?; // bf16 kept as stored
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Clone)]
pub struct MmditCheckpoint {
    path: PathBuf,
    layout: WeightLayout,
    /// The transformer's tensors by key, without the file's prefix.
    tensors: BTreeMap<String, PackTensor>,
    /// The prefix the file puts before the transformer's keys.
    key_prefix: &'static str,
    /// Tensors of other components in the same file.
    other_components: usize,
}

impl std::fmt::Debug for MmditCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmditCheckpoint")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .field("tensors", &self.tensors.len())
            .field("other_components", &self.other_components)
            .finish()
    }
}

impl MmditCheckpoint {
    /// Opens a single `.safetensors` file, a diffusers `transformer/` folder, or a diffusers
    /// pipeline folder that contains one.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let tensors = if path.is_dir() {
            read_folder(path)?
        } else {
            read_file(path)?
        };
        let classified = classify(path, tensors)?;
        Ok(Self {
            path: path.to_owned(),
            layout: classified.layout,
            tensors: classified.tensors,
            key_prefix: classified.key_prefix,
            other_components: classified.other_components,
        })
    }

    /// The layout the file uses.
    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    /// The number of tensors outside the transformer (a single file's VAE, text encoders),
    /// which loading ignores.
    pub fn other_components(&self) -> usize {
        self.other_components
    }

    /// The transformer's keys, without the file's prefix.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The architecture the stored shapes describe.
    ///
    /// The head width is read off the qk-norm weights where there are any; without qk-norm
    /// (SD3-medium) it is taken to be 64, as in every released SD3-family model.
    pub fn infer_config(&self) -> Result<MmditConfig> {
        let names = Names::of(self.layout);
        let shape = |key: &str| -> Result<Vec<usize>> {
            self.tensors
                .get(key)
                .map(|tensor| tensor.shape.to_vec())
                .ok_or_else(|| self.unreadable(format!("no tensor `{key}`")))
        };
        let context = shape(names.context_embed)?;
        let pooled = shape(names.pooled_embed)?;
        let timestep = shape(names.time_embed)?;
        let patch = shape(names.patch_embed)?;
        let position = shape(names.position)?;
        let output = shape(names.final_proj)?;
        let (hidden, context_dim) = (context[0], context[1]);
        let depth = self.count_blocks(names.block_prefix);
        if depth == 0 || patch.len() != 4 || position.len() != 3 {
            return Err(self.unreadable("no joint blocks, or a malformed patch embedding".into()));
        }
        let head_norm = (0..depth)
            .map(|block| names.query_norm(block))
            .find_map(|key| self.tensors.get(&key));
        let head_dim = head_norm.map_or(64, |tensor| tensor.shape[0]);
        let mlp = self
            .tensors
            .get(&names.mlp(0))
            .map_or(4 * hidden, |tensor| tensor.shape[0]);
        let grid = (position[1] as f64).sqrt().round() as usize;
        let patch_size = patch[2];
        let config = MmditConfig::new(depth, hidden / head_dim.max(1))
            .with_head_dim(head_dim)
            .with_in_channels(patch[1])
            .with_out_channels(output[0] / (patch_size * patch_size).max(1))
            .with_patch_size(patch_size)
            .with_pos_embed_max_size(grid)
            .with_context_dim(context_dim)
            .with_pooled_dim(pooled[1])
            .with_mlp_ratio(mlp / hidden.max(1))
            .with_timestep_channels(timestep[1])
            .with_qk_norm(head_norm.is_some())
            .with_dual_attention_layers(
                (0..depth)
                    .filter(|&block| self.tensors.contains_key(&names.dual(block)))
                    .collect(),
            );
        config.validate()?;
        if config.hidden() != hidden || grid * grid != position[1] {
            return Err(self.unreadable(format!(
                "hidden width {hidden} is not a multiple of the head width {head_dim}, or the \
                 positional table of {} entries is not square",
                position[1]
            )));
        }
        Ok(config)
    }

    /// Loads the weights into `model` (built with the checkpoint's architecture), keeping
    /// their stored dtype or casting them to `dtype`.
    ///
    /// Fails with [`Error::WeightMismatch`] listing every missing, unexpected or mis-shaped
    /// key (with expected and found shapes) before anything is loaded, so a partial load
    /// never happens. Base weights only: load them before applying LoRA.
    pub fn load_into(&self, mut model: Mmdit, dtype: Option<FloatDType>) -> Result<Mmdit> {
        let device = model.devices().into_iter().next();
        let table = entries(self.layout, model.config());
        let expected = pytorch_shapes(&model);
        let prefix = self.key_prefix;
        let mut problems = Vec::new();
        let mut used = BTreeSet::new();
        for entry in &table {
            let param_shape = expected
                .get(&entry.param)
                .unwrap_or_else(|| panic!("key table names unknown parameter {}", entry.param));
            let stored_shape = entry.transform.stored_shape(param_shape);
            used.insert(entry.key.as_str());
            match self.tensors.get(&entry.key) {
                None => problems.push(WeightProblem::missing(
                    format!("{prefix}{}", entry.key),
                    stored_shape,
                )),
                Some(tensor) if tensor.shape.to_vec() != stored_shape => {
                    problems.push(WeightProblem::mis_shaped(
                        format!("{prefix}{}", entry.key),
                        stored_shape,
                        tensor.shape.to_vec(),
                    ))
                }
                Some(_) => {}
            }
        }
        problems.sort_by(|a, b| a.key.cmp(&b.key));
        problems.dedup();
        for (key, tensor) in &self.tensors {
            if !used.contains(key.as_str()) {
                problems.push(WeightProblem::unexpected(
                    format!("{prefix}{key}"),
                    tensor.shape.to_vec(),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Error::WeightMismatch {
                path: self.path.display().to_string(),
                problems,
            });
        }
        if let (Some(device), None) = (&device, dtype) {
            self.check_stored_dtypes(device)?;
        }
        let tensors = table
            .iter()
            .map(|entry| transformed(&self.tensors[&entry.key], entry))
            .collect();
        let adapter: Box<dyn ModuleAdapter> = match dtype {
            Some(dtype) => Box::new(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(dtype.into()))),
            None => Box::new(PyTorchToBurnAdapter),
        };
        let result = model.apply(tensors, None, Some(adapter), false);
        if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
            return Err(self.unreadable(format!(
                "loading failed after the shape checks passed: errors {:?}, missing {:?}, \
                 unused {:?}",
                result.errors, result.missing, result.unused
            )));
        }
        Ok(model)
    }

    /// Fails where the device cannot hold the stored dtype (bf16 on lavapipe, say).
    fn check_stored_dtypes(&self, device: &Device) -> Result<()> {
        let dtypes: BTreeSet<String> = self
            .tensors
            .values()
            .map(|tensor| format!("{:?}", tensor.dtype))
            .collect();
        for tensor in self.tensors.values() {
            if tensor.dtype.is_float() && !device.supports_dtype(tensor.dtype) {
                return Err(Error::invalid(
                    "weights dtype",
                    format!("{:?} (stored in {})", tensor.dtype, self.path.display()),
                    format!(
                        "a dtype the device {device:?} supports: load with a cast, e.g. \
                         `load_into(model, Some(FloatDType::F32))` (stored dtypes: {dtypes:?})"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn count_blocks(&self, prefix: &str) -> usize {
        self.tensors
            .keys()
            .filter_map(|key| {
                key.strip_prefix(prefix)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |last| last + 1)
    }

    fn unreadable(&self, message: String) -> Error {
        Error::Checkpoint {
            path: self.path.display().to_string(),
            message,
        }
    }
}

/// The keys `infer_config` reads, per layout.
struct Names {
    layout: WeightLayout,
    context_embed: &'static str,
    pooled_embed: &'static str,
    time_embed: &'static str,
    patch_embed: &'static str,
    position: &'static str,
    final_proj: &'static str,
    block_prefix: &'static str,
}

impl Names {
    fn of(layout: WeightLayout) -> Self {
        match layout {
            WeightLayout::Official => Self {
                layout,
                context_embed: "context_embedder.weight",
                pooled_embed: "y_embedder.mlp.0.weight",
                time_embed: "t_embedder.mlp.0.weight",
                patch_embed: "x_embedder.proj.weight",
                position: "pos_embed",
                final_proj: "final_layer.linear.weight",
                block_prefix: "joint_blocks.",
            },
            WeightLayout::Diffusers => Self {
                layout,
                context_embed: "context_embedder.weight",
                pooled_embed: "time_text_embed.text_embedder.linear_1.weight",
                time_embed: "time_text_embed.timestep_embedder.linear_1.weight",
                patch_embed: "pos_embed.proj.weight",
                position: "pos_embed.pos_embed",
                final_proj: "proj_out.weight",
                block_prefix: "transformer_blocks.",
            },
        }
    }

    fn query_norm(&self, block: usize) -> String {
        match self.layout {
            WeightLayout::Official => format!("joint_blocks.{block}.x_block.attn.ln_q.weight"),
            WeightLayout::Diffusers => format!("transformer_blocks.{block}.attn.norm_q.weight"),
        }
    }

    fn dual(&self, block: usize) -> String {
        match self.layout {
            WeightLayout::Official => format!("joint_blocks.{block}.x_block.attn2.proj.weight"),
            WeightLayout::Diffusers => format!("transformer_blocks.{block}.attn2.to_out.0.weight"),
        }
    }

    fn mlp(&self, block: usize) -> String {
        match self.layout {
            WeightLayout::Official => format!("joint_blocks.{block}.x_block.mlp.fc1.weight"),
            WeightLayout::Diffusers => format!("transformer_blocks.{block}.ff.net.0.proj.weight"),
        }
    }
}

/// Every parameter's shape in PyTorch layout (Linear weights `[out, in]`), by path.
fn pytorch_shapes(model: &Mmdit) -> BTreeMap<String, Vec<usize>> {
    model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
        .into_iter()
        .filter(|tensor| !tensor.name.contains(".lora."))
        .map(|tensor| (tensor.name.clone(), tensor.shape.to_vec()))
        .collect()
}

/// The stored tensor, transformed and renamed to its parameter's path; still lazy.
fn transformed(stored: &PackTensor, entry: &Entry) -> PackTensor {
    let name = entry.param.clone();
    let dtype = stored.dtype;
    let shape = stored.shape.to_vec();
    match entry.transform {
        Transform::AsStored => {
            let mut tensor = stored.clone();
            tensor.name = name;
            tensor
        }
        Transform::DropLeadingAxis => {
            let target = shape[1..].to_vec();
            let reshaped = target.clone();
            bridge::map_data(stored.clone(), name, dtype, target.into(), move |data| {
                TensorData::from_bytes_vec(data.as_bytes().to_vec(), reshaped.clone(), data.dtype())
            })
        }
        Transform::Chunk { index, count } => {
            let mut target = shape.clone();
            target[0] /= count;
            let rows = target[0];
            bridge::map_data(
                stored.clone(),
                name,
                dtype,
                target.clone().into(),
                move |data| {
                    let bytes = row_bytes(&data, index * rows, rows);
                    TensorData::from_bytes_vec(bytes, target.clone(), data.dtype())
                },
            )
        }
        Transform::SwapHalves => bridge::map_data(
            stored.clone(),
            name,
            dtype,
            shape.clone().into(),
            move |data| {
                let half = shape[0] / 2;
                let mut bytes = row_bytes(&data, half, shape[0] - half);
                bytes.extend(row_bytes(&data, 0, half));
                TensorData::from_bytes_vec(bytes, shape.clone(), data.dtype())
            },
        ),
    }
}

/// The bytes of `count` rows (slices along the first axis) from row `start`.
fn row_bytes(data: &TensorData, start: usize, count: usize) -> Vec<u8> {
    let rows = data.shape()[0].max(1);
    let row = data.as_bytes().len() / rows;
    data.as_bytes()[start * row..(start + count) * row].to_vec()
}

fn read_file(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
    if !path.is_file() {
        return Err(Error::Io {
            path: path.display().to_string(),
            message: "no such file or folder".into(),
        });
    }
    let mut store = SafetensorsStore::from_file(path);
    store
        .get_all_tensors()
        .cloned()
        .map_err(|err| Error::Checkpoint {
            path: path.display().to_string(),
            message: format!("not a readable safetensors file: {err}"),
        })
}

/// A diffusers folder: sharded through the index, or one file; a pipeline root descends
/// into `transformer/`.
fn read_folder(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
    let transformer = path.join("transformer");
    if transformer.is_dir() && !path.join(DIFFUSERS_INDEX).exists() {
        return read_folder(&transformer);
    }
    let index = path.join(DIFFUSERS_INDEX);
    if index.is_file() {
        return read_shards(path, &index);
    }
    let single = path.join(DIFFUSERS_FILE);
    if single.is_file() {
        return read_file(&single);
    }
    Err(Error::Checkpoint {
        path: path.display().to_string(),
        message: format!(
            "expected a diffusers transformer folder holding `{DIFFUSERS_INDEX}` with its \
             shards or `{DIFFUSERS_FILE}`, or a pipeline folder with `transformer/`"
        ),
    })
}

fn read_shards(folder: &Path, index: &Path) -> Result<BTreeMap<String, PackTensor>> {
    let io = |message: String| Error::Checkpoint {
        path: index.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(index).map_err(|err| io(err.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| io(format!("not JSON: {err}")))?;
    let weight_map = json
        .get("weight_map")
        .and_then(|map| map.as_object())
        .ok_or_else(|| io("no `weight_map` object".into()))?;
    let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, file) in weight_map {
        let file = file
            .as_str()
            .ok_or_else(|| io(format!("the shard of `{key}` is not a file name")))?;
        shards.entry(file).or_default().push(key);
    }
    let mut tensors = BTreeMap::new();
    for (file, keys) in shards {
        let mut shard = read_file(&folder.join(file))?;
        for key in keys {
            let tensor = shard.remove(key).ok_or_else(|| {
                io(format!(
                    "`{key}` is indexed in {file} but the shard does not hold it"
                ))
            })?;
            tensors.insert(key.to_owned(), tensor);
        }
    }
    Ok(tensors)
}

/// A file's tensors sorted out: the transformer's, by key without prefix.
struct Classified {
    layout: WeightLayout,
    tensors: BTreeMap<String, PackTensor>,
    key_prefix: &'static str,
    other_components: usize,
}

/// Which layout the keys follow; or an error naming the family the file looks like.
fn classify(path: &Path, tensors: BTreeMap<String, PackTensor>) -> Result<Classified> {
    let has = |prefix: &str| tensors.keys().any(|key| key.starts_with(prefix));
    let unprefixed = |layout, tensors| Classified {
        layout,
        tensors,
        key_prefix: "",
        other_components: 0,
    };
    if has(&format!("{OFFICIAL_PREFIX}joint_blocks.")) {
        let total = tensors.len();
        let model: BTreeMap<String, PackTensor> = tensors
            .into_iter()
            .filter_map(|(key, tensor)| {
                Some((key.strip_prefix(OFFICIAL_PREFIX)?.to_owned(), tensor))
            })
            .collect();
        return Ok(Classified {
            layout: WeightLayout::Official,
            other_components: total - model.len(),
            tensors: model,
            key_prefix: OFFICIAL_PREFIX,
        });
    }
    if has("joint_blocks.") && has("x_embedder.") {
        return Ok(unprefixed(WeightLayout::Official, tensors));
    }
    if has("transformer_blocks.") && has("context_embedder.") && has("pos_embed.proj.") {
        return Ok(unprefixed(WeightLayout::Diffusers, tensors));
    }
    let family = [
        ("double_blocks.", "a FLUX transformer (official layout)"),
        (
            "single_transformer_blocks.",
            "a FLUX transformer (diffusers layout)",
        ),
        ("input_blocks.", "a UNet (SD 1.x/2.x/SDXL)"),
        ("down_blocks.", "a diffusers UNet"),
        ("encoder.down.", "a VAE"),
        ("text_model.", "a CLIP text encoder"),
        ("encoder.block.", "a T5 text encoder"),
    ]
    .into_iter()
    .find(|(marker, _)| tensors.keys().any(|key| key.contains(marker)))
    .map_or("not an SD3-family transformer", |(_, family)| family);
    let sample: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
    Err(Error::Checkpoint {
        path: path.display().to_string(),
        message: format!(
            "this looks like {family} (keys such as {sample:?}); expected an SD3-family \
             MMDiT: `{OFFICIAL_PREFIX}joint_blocks.*` (official single file) or \
             `transformer_blocks.*` with `context_embedder.*` (diffusers)"
        ),
    })
}
