//! An SD3-family checkpoint in either layout, and loading it into an [`Mmdit`] with every
//! mismatch reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, bridge};
use burn::tensor::{FloatDType, TensorData};

use super::files::read_transformer;
use super::keymap::{Entry, Transform, WeightLayout, entries};
use crate::error::{Error, Result, WeightProblem};
use crate::models::mmdit::Mmdit;
use crate::models::mmdit::mixed_dtypes::{prevailing_dtype, warn_cast};
use crate::models::safetensors_files::apply_pytorch_tensors;

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
    pub(super) layout: WeightLayout,
    /// The transformer's tensors by key, without the file's prefix.
    pub(super) tensors: BTreeMap<String, PackTensor>,
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
        let classified = read_transformer(path)?;
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

    /// Loads the weights into `model` (built with the checkpoint's architecture), keeping
    /// their stored dtype or casting them to `dtype`. A file that mixes float dtypes (an
    /// f32 bias among bf16 weights) is loaded in the dtype holding most of its elements,
    /// with a `log` warning naming the keys cast.
    ///
    /// Fails with [`Error::WeightMismatch`] listing every missing, unexpected or mis-shaped
    /// key (with expected and found shapes) before anything is loaded, so a partial load
    /// never happens. Base weights only: load them before applying LoRA.
    pub fn load_into(&self, model: Mmdit, dtype: Option<FloatDType>) -> Result<Mmdit> {
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
        let dtype = match dtype {
            Some(dtype) => Some(dtype),
            None => {
                if let Some(device) = &device {
                    self.check_stored_dtypes(device)?;
                }
                self.prevailing_dtype_if_mixed(&table)
            }
        };
        let tensors = table
            .iter()
            .map(|entry| transformed(&self.tensors[&entry.key], entry))
            .collect();
        apply_pytorch_tensors(model, tensors, dtype, &self.path)
    }

    /// The dtype holding most of the table's elements, where some tensors are stored in
    /// another (an f32 bias among bf16 weights): loading casts those to it, with a warning
    /// naming them, so that no layer mixes dtypes. `None` when the dtypes agree.
    fn prevailing_dtype_if_mixed(&self, table: &[Entry]) -> Option<FloatDType> {
        // A fused tensor (official `qkv`) feeds several entries but is stored once.
        let keys: BTreeSet<&str> = table.iter().map(|entry| entry.key.as_str()).collect();
        let stored = keys.into_iter().map(|key| {
            let tensor = &self.tensors[key];
            let elements = tensor.shape.to_vec().iter().product();
            (key, tensor.dtype, elements)
        });
        let (prevailing, others) = prevailing_dtype(stored)?;
        if others.is_empty() {
            return None;
        }
        let keys: Vec<String> = others
            .iter()
            .map(|key| format!("{}{key}", self.key_prefix))
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        warn_cast(&self.path, prevailing, &keys);
        Some(prevailing.into())
    }

    /// Fails where the device cannot hold the stored dtype (bf16 on lavapipe, say).
    fn check_stored_dtypes(&self, device: &Device) -> Result<()> {
        let Some(unsupported) = self
            .tensors
            .values()
            .find(|tensor| tensor.dtype.is_float() && !device.supports_dtype(tensor.dtype))
        else {
            return Ok(());
        };
        let stored: BTreeSet<String> = self
            .tensors
            .values()
            .map(|tensor| format!("{:?}", tensor.dtype))
            .collect();
        Err(Error::invalid(
            "weights dtype",
            format!(
                "{:?} (stored in {})",
                unsupported.dtype,
                self.path.display()
            ),
            format!(
                "a dtype the device {device:?} supports: load with a cast, e.g. \
                 `load_into(model, Some(FloatDType::F32))` (stored dtypes: {stored:?})"
            ),
        ))
    }

    /// [`Error::WeightMismatch`] for `problems`, whose keys (without the file's prefix) are
    /// reported as stored.
    pub(super) fn mismatch(&self, problems: Vec<WeightProblem>) -> Error {
        Error::WeightMismatch {
            path: self.path.display().to_string(),
            problems: problems
                .into_iter()
                .map(|problem| WeightProblem {
                    key: format!("{}{}", self.key_prefix, problem.key),
                    ..problem
                })
                .collect(),
        }
    }

    pub(super) fn unreadable(&self, message: String) -> Error {
        Error::Checkpoint {
            path: self.path.display().to_string(),
            message,
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
