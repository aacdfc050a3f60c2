//! LoRA on the MMDiT through burn's built-in adapters: which layers, saving and loading the
//! adapters alone (PEFT/diffusers key names), and merging them into the base weights.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::config::Config;
use burn::module::{Lora, Module, ParamGroup};
use burn::store::{ModuleSnapshot, PathFilter, bridge};
use burn::tensor::{DType, FloatDType, TensorData};
use serde::{Deserialize, Serialize};

use super::Mmdit;
use super::mixed_dtypes::{prevailing_dtype, warn_cast};
use super::safetensors_io::{SafetensorsFile, write_file_atomically};
use super::weights::diffusers_linear_names;
use crate::error::{Error, Result, WeightProblem};
use crate::io::write_atomically;
use crate::rng::Rng;

/// A family of the MMDiT's Linear layers that LoRA can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoraTarget {
    /// q, k, v and output projections of both streams' joint attention and of MMDiT-X's
    /// self-attention (PEFT names `to_q, to_k, to_v, to_out.0, add_q_proj, add_k_proj,
    /// add_v_proj, to_add_out`).
    Attention,
    /// Both MLP layers of both streams (`ff.net.0.proj`, `ff.net.2`, and `ff_context.*`).
    Mlp,
}

impl LoraTarget {
    pub(crate) fn matches(self, module: &str) -> bool {
        match self {
            LoraTarget::Attention => {
                module.contains(".attention.") || module.contains(".self_attention.")
            }
            LoraTarget::Mlp => module.contains(".mlp."),
        }
    }
}

/// The largest LoRA scale `alpha/rank` accepted. Published recipes use 0.5 to 4; far larger
/// scales only amplify the factors' rounding, and beyond about 1e30 the update overflows f32.
pub const MAX_LORA_SCALE: f64 = 1e4;

/// LoRA on an [`Mmdit`]: `W + (alpha/rank)·A·B` on the selected Linear layers, everything
/// else frozen. The adapters are burn's (`Param::adapter()` of each adapted weight), but the
/// forward pass computes them unmerged, `x·W + (alpha/rank)·(x·A)·B`, and never forms the
/// dense sum; [`Mmdit::merge_lora`] does. Defaults follow the Flow-DPPO recipe (rank 32, alpha 64, attention
/// projections) with f32 factors, so that small updates are not lost to a bf16 base.
#[derive(Config, Debug, PartialEq)]
pub struct MmditLoraConfig {
    /// The rank r of the factors.
    #[config(default = 32)]
    pub rank: usize,
    /// The scale numerator: the update is `(alpha / rank)·A·B`, with `alpha/rank` in
    /// `(0, MAX_LORA_SCALE]`.
    #[config(default = 64.0)]
    pub alpha: f64,
    /// The layer families to adapt.
    #[config(default = "vec![LoraTarget::Attention]")]
    pub targets: Vec<LoraTarget>,
    /// The factors' dtype; `None` builds them in each base weight's dtype.
    #[config(default = "Some(FloatDType::F32)")]
    pub dtype: Option<FloatDType>,
    /// Where the `A` factors' values come from: `Some(seed)` draws them from
    /// [`Rng::seed_from`]`(seed)` alone, factor by factor in the model's traversal order, so
    /// the same seed gives the same factors bit for bit on every backend, whatever else has
    /// used the device's generator (which every thread on the device shares). `None` draws
    /// them from the device's generator.
    #[config(default = "None")]
    pub seed: Option<u64>,
}

impl MmditLoraConfig {
    /// Attaches adapters to `model`'s target layers and freezes every base parameter.
    ///
    /// Factors start as `A ~ N(0, σ²)` with `σ = 1/r` and `B = 0`, so the adapted model's
    /// outputs are the base model's until it is trained.
    pub fn apply(&self, model: Mmdit) -> Result<Mmdit> {
        let modules: Vec<String> = diffusers_linear_names(model.config())
            .into_iter()
            .map(|(module, _)| module)
            .filter(|module| self.targets.iter().any(|target| target.matches(module)))
            .collect();
        self.apply_to(model, &modules)
    }

    fn apply_to(&self, model: Mmdit, modules: &[String]) -> Result<Mmdit> {
        if self.rank == 0 {
            return Err(Error::invalid("rank", self.rank, "at least 1"));
        }
        let scale = self.alpha / self.rank as f64;
        if !(self.alpha.is_finite() && scale > 0.0 && scale <= MAX_LORA_SCALE) {
            return Err(Error::invalid(
                "alpha",
                format!("{:e}", self.alpha),
                format!(
                    "a positive scale with alpha/rank at most MAX_LORA_SCALE = \
                     {MAX_LORA_SCALE:e} (rank {})",
                    self.rank
                ),
            ));
        }
        if modules.is_empty() {
            return Err(Error::invalid(
                "targets",
                format!("{:?}", self.targets),
                "at least one target layer family",
            ));
        }
        if model.lora.is_some() {
            return Err(Error::invalid(
                "model",
                "a model that already has LoRA adapters",
                "a base model (merge or drop the existing adapters first)",
            ));
        }
        let weights: Vec<String> = modules.iter().map(|m| format!("{m}.weight")).collect();
        let mut lora =
            Lora::new(self.rank, self.alpha).set_param_group(ParamGroup::from_paths(weights));
        lora.dtype = self.dtype;
        let mut model = model.apply_lora(lora);
        if let Some(seed) = self.seed {
            model = redraw_down_factors(model, seed, 1.0 / self.rank as f64)?;
        }
        model.lora = Some(LoraState {
            rank: self.rank,
            alpha: self.alpha,
            modules: modules.to_vec(),
        });
        Ok(model)
    }
}

/// The adapters an [`Mmdit`] carries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoraState {
    rank: usize,
    alpha: f64,
    /// Adapted Linear layers, by module path.
    modules: Vec<String>,
}

/// The safetensors metadata `format` value of adapter files.
const LORA_FORMAT: &str = "flow-rl/lora";
/// Key prefix of diffusers' pipeline-level LoRA files.
const PIPELINE_PREFIX: &str = "transformer.";
/// The adapter weights' file in a PEFT adapter folder.
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The adapter configuration's file in a PEFT adapter folder.
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
/// The safetensors metadata key under which diffusers stores the LoRA configuration (a JSON
/// object of PEFT `LoraConfig` fields, each prefixed with the component, `transformer.`).
pub const DIFFUSERS_LORA_METADATA: &str = "lora_adapter_metadata";
/// The component prefix of the transformer's keys in diffusers' LoRA files.
const TRANSFORMER_PREFIX: &str = "transformer.";

/// PEFT's `LoraConfig` of the adapters, as `adapter_config.json` holds it.
fn peft_lora_config(state: &LoraState, targets: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "peft_type": "LORA",
        "r": state.rank,
        "lora_alpha": state.alpha,
        "target_modules": targets,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": "gaussian",
        "inference_mode": true,
        "task_type": null,
        "base_model_name_or_path": null,
    })
}

/// `config`'s fields under the transformer's prefix, as diffusers' `save_lora_weights`
/// writes them (sorted, as its `json.dumps(sort_keys=True)` does).
fn diffusers_lora_metadata(config: &serde_json::Value) -> String {
    let fields = config
        .as_object()
        .expect("the LoRA config is a JSON object");
    let prefixed: BTreeMap<String, &serde_json::Value> = fields
        .iter()
        .map(|(field, value)| (format!("{TRANSFORMER_PREFIX}{field}"), value))
        .collect();
    serde_json::to_string_pretty(&prefixed).expect("JSON values serialise")
}

/// `transformer.lora_alpha` (or an unprefixed `lora_alpha`) in diffusers' metadata.
fn alpha_in_diffusers_metadata(text: &str) -> std::result::Result<f64, String> {
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|err| format!("metadata {DIFFUSERS_LORA_METADATA} is not a JSON object: {err}"))?;
    let key = format!("{TRANSFORMER_PREFIX}lora_alpha");
    let value = fields.get(&key).or_else(|| fields.get("lora_alpha"));
    match value {
        Some(value) => value.as_f64().ok_or_else(|| {
            format!("metadata {DIFFUSERS_LORA_METADATA}: {key} = {value} is not a number")
        }),
        None => Err(format!(
            "metadata {DIFFUSERS_LORA_METADATA} has no {key}; expected the adapters' alpha"
        )),
    }
}

impl Mmdit {
    /// The adapters' `(rank, alpha)`, if the model has any.
    pub fn lora(&self) -> Option<(usize, f64)> {
        self.lora.as_ref().map(|state| (state.rank, state.alpha))
    }

    /// Writes the adapters alone as safetensors, atomically, with PEFT/diffusers names:
    /// `transformer.<module>.lora_A.weight` `[r, in]` and `.lora_B.weight` `[out, r]` (so
    /// the update is `(alpha/r)·B·A` in PyTorch layout), and metadata `format`,
    /// `lora_rank`, `lora_alpha`, `target_modules` (a JSON array of module names) and
    /// diffusers' [`DIFFUSERS_LORA_METADATA`]: PEFT's `LoraConfig` with `transformer.`
    /// before each field, which is where diffusers' `load_lora_weights` reads alpha (without
    /// it, diffusers takes alpha = rank).
    pub fn save_lora(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let state = self.lora.as_ref().ok_or_else(|| {
            Error::invalid(
                "model",
                "a model without LoRA adapters",
                "adapters attached with MmditLoraConfig::apply or load_lora",
            )
        })?;
        let names: BTreeMap<String, String> =
            diffusers_linear_names(self.config()).into_iter().collect();
        let mut file = SafetensorsFile::new();
        for tensor in self.collect(Some(lora_filter()), None, false) {
            let Some((module, factor)) = split_factor(&tensor.name) else {
                continue;
            };
            let key = peft_key(&names[module], factor);
            let data =
                bridge::into_data(tensor).map_err(|err| Error::TensorRead(err.to_string()))?;
            file.insert(key, transpose(&data));
        }
        let targets: Vec<&str> = state.modules.iter().map(|m| names[m].as_str()).collect();
        file.metadata("format", LORA_FORMAT);
        file.metadata("lora_rank", state.rank.to_string());
        file.metadata("lora_alpha", state.alpha.to_string());
        file.metadata(
            "target_modules",
            serde_json::to_string(&targets).expect("strings serialise"),
        );
        file.metadata(
            DIFFUSERS_LORA_METADATA,
            diffusers_lora_metadata(&peft_lora_config(state, &targets)),
        );
        write_file_atomically(path, &file)
    }

    /// Writes the adapters as a PEFT adapter folder: [`PEFT_WEIGHTS_FILE`] (the file of
    /// [`Mmdit::save_lora`]) and [`PEFT_CONFIG_FILE`] (PEFT's `LoraConfig`: `r`,
    /// `lora_alpha`, `target_modules`, no dropout, no bias), each written atomically. Load it
    /// in diffusers with
    /// `pipe.load_lora_weights(folder, weight_name="adapter_model.safetensors")`.
    pub fn save_peft_adapter(&self, folder: impl AsRef<Path>) -> Result<()> {
        let folder = folder.as_ref();
        std::fs::create_dir_all(folder).map_err(|err| Error::io(folder, err))?;
        self.save_lora(folder.join(PEFT_WEIGHTS_FILE))?;
        let state = self.lora.as_ref().expect("save_lora checked the adapters");
        let names: BTreeMap<String, String> =
            diffusers_linear_names(self.config()).into_iter().collect();
        let targets: Vec<&str> = state.modules.iter().map(|m| names[m].as_str()).collect();
        let text = serde_json::to_vec_pretty(&peft_lora_config(state, &targets))
            .expect("JSON values serialise");
        write_atomically(&folder.join(PEFT_CONFIG_FILE), &text)
    }

    /// Attaches the adapters stored at `path` (written by [`Mmdit::save_lora`], or any
    /// PEFT/diffusers LoRA file for SD3 with these key names) to this base model.
    ///
    /// The adapted layers are the file's; the rank comes from the factors' shapes, alpha
    /// from the `lora_alpha` metadata, else from diffusers' [`DIFFUSERS_LORA_METADATA`]
    /// (both absent, alpha = rank, as diffusers assumes; alpha/rank
    /// at most [`MAX_LORA_SCALE`]). The factors are kept in `dtype` (`None`: as stored, or
    /// in the dtype holding most of the file's elements where the file mixes dtypes, with a
    /// `log` warning naming the factors cast). Fails if the model already has
    /// adapters or a key names no layer of this model, and with
    /// [`Error::WeightMismatch`] (PEFT-layout shapes) if a factor is missing or mis-shaped.
    pub fn load_lora(self, path: impl AsRef<Path>, dtype: Option<FloatDType>) -> Result<Mmdit> {
        let path = path.as_ref();
        let file = SafetensorsFile::read(path)?;
        let error = |message: String| Error::Checkpoint {
            path: path.display().to_string(),
            message,
        };
        let names = diffusers_linear_names(self.config());
        let modules: BTreeMap<&str, &str> = names
            .iter()
            .map(|(module, stored)| (stored.as_str(), module.as_str()))
            .collect();
        // Factor path in the module → (key in the file, data in burn's layout).
        let mut factors: BTreeMap<String, (String, TensorData)> = BTreeMap::new();
        for (key, data) in file.tensors() {
            let stored = key.strip_prefix(PIPELINE_PREFIX).unwrap_or(key);
            let (stored_module, factor) = stored
                .strip_suffix(".lora_A.weight")
                .map(|m| (m, "a"))
                .or_else(|| stored.strip_suffix(".lora_B.weight").map(|m| (m, "b")))
                .ok_or_else(|| {
                    error(format!(
                        "`{key}` is not a LoRA factor (`*.lora_A.weight` or `*.lora_B.weight`)"
                    ))
                })?;
            let module = modules.get(stored_module).ok_or_else(|| {
                error(format!(
                    "`{key}` names `{stored_module}`, which is no Linear layer of this model"
                ))
            })?;
            if data.shape().num_dims() != 2 {
                return Err(error(format!(
                    "`{key}` has shape {:?}; LoRA factors are matrices",
                    data.shape()
                )));
            }
            factors.insert(
                format!("{module}.weight.lora.{factor}"),
                (key.clone(), transpose(data)),
            );
        }
        let adapted: BTreeSet<&str> = factors
            .keys()
            .filter_map(|name| split_factor(name).map(|(module, _)| module))
            .collect();
        // In burn's layout A is `[in, r]` and B is `[r, out]`; either kind gives the rank, so
        // a file that lacks some A factor still has its other factors checked against it.
        let rank = factors
            .iter()
            .next()
            .map(|(name, (_, data))| {
                let axis = if name.ends_with(".a") { 1 } else { 0 };
                data.shape()[axis]
            })
            .ok_or_else(|| error("no LoRA factors in the file".into()))?;
        let alpha = match file.metadata_value("lora_alpha") {
            Some(text) => text
                .parse::<f64>()
                .map_err(|_| error(format!("metadata lora_alpha = {text:?} is not a number")))?,
            None => match file.metadata_value(DIFFUSERS_LORA_METADATA) {
                Some(text) => alpha_in_diffusers_metadata(text).map_err(error)?,
                None => rank as f64,
            },
        };
        let scale = alpha / rank as f64;
        if !(scale.is_finite() && scale > 0.0 && scale <= MAX_LORA_SCALE) {
            return Err(error(format!(
                "metadata lora_alpha = {alpha:e} gives the scale alpha/rank = {scale:e} at rank \
                 {rank}; expected a positive scale of at most MAX_LORA_SCALE = \
                 {MAX_LORA_SCALE:e}"
            )));
        }
        let adapted: Vec<String> = adapted.iter().map(|m| m.to_string()).collect();
        let config = MmditLoraConfig::new()
            .with_rank(rank)
            .with_alpha(alpha)
            .with_dtype(dtype);
        let mut model = config.apply_to(self, &adapted)?;
        let stored_names: BTreeMap<&str, &str> = names
            .iter()
            .map(|(module, stored)| (module.as_str(), stored.as_str()))
            .collect();
        let mut problems = Vec::new();
        for tensor in model.collect(Some(lora_filter()), None, false) {
            let expected = peft_shape(&tensor.shape);
            match factors.get(&tensor.name) {
                None => {
                    let (module, factor) = split_factor(&tensor.name).expect("a factor path");
                    problems.push(WeightProblem::missing(
                        peft_key(stored_names[module], factor),
                        expected,
                    ));
                }
                Some((key, data)) if data.shape().to_vec() != tensor.shape.to_vec() => problems
                    .push(WeightProblem::mis_shaped(
                        key.clone(),
                        expected,
                        peft_shape(data.shape()),
                    )),
                Some(_) => {}
            }
        }
        if !problems.is_empty() {
            return Err(Error::WeightMismatch {
                path: path.display().to_string(),
                problems,
            });
        }
        // A file that mixes float dtypes is kept in the one holding most of its elements.
        let dtype = dtype.map(DType::from).or_else(|| {
            let stored = factors
                .values()
                .map(|(key, data)| (key.as_str(), data.dtype(), data.num_elements()));
            let (prevailing, others) = prevailing_dtype(stored)?;
            (!others.is_empty()).then(|| {
                warn_cast(path, prevailing, &others);
                prevailing
            })
        });
        let tensors = factors
            .into_iter()
            .map(|(name, (_, data))| {
                let data = match dtype {
                    Some(target) => data.convert_dtype(target),
                    None => data,
                };
                bridge::from_data(data, name, None)
            })
            .collect();
        let result = model.apply(tensors, Some(lora_filter()), None, false);
        if !result.errors.is_empty() || !result.unused.is_empty() {
            return Err(error(format!(
                "applying the factors failed: errors {:?}, unused {:?}",
                result.errors, result.unused
            )));
        }
        Ok(model)
    }

    /// The model with its adapters merged into the base weights (`W + (alpha/r)·A·B`),
    /// no longer carrying adapters, with every weight cast back to the base dtype (the
    /// patch convolution's).
    pub fn merge_lora(self) -> Mmdit {
        let dtype = self.activation_dtype();
        let mut merged = self.materialize();
        merged.lora = None;
        merged.with_dtype(dtype.into())
    }
}

/// The file key of factor `a` or `b` of the diffusers module `stored`.
fn peft_key(stored: &str, factor: &str) -> String {
    let suffix = if factor == "a" { "lora_A" } else { "lora_B" };
    format!("{PIPELINE_PREFIX}{stored}.{suffix}.weight")
}

/// A factor's shape in PEFT's layout (the transpose of burn's).
fn peft_shape(shape: &[usize]) -> Vec<usize> {
    shape.iter().rev().copied().collect()
}

/// `model` with every `A` factor replaced by draws `N(0, std²)` from one
/// [`Rng::seed_from`]`(seed)`, in the factors' traversal order and their own dtype.
fn redraw_down_factors(mut model: Mmdit, seed: u64, std: f64) -> Result<Mmdit> {
    let filter = || PathFilter::new().with_regex(r"\.lora\.a$");
    let mut rng = Rng::seed_from(seed);
    let factors = model
        .collect(Some(filter()), None, false)
        .into_iter()
        .map(|factor| {
            let values: Vec<f32> = (0..factor.shape.num_elements())
                .map(|_| (std * rng.normal()) as f32)
                .collect();
            let data = TensorData::new(values, factor.shape.to_vec()).convert_dtype(factor.dtype);
            bridge::from_data(data, factor.name, None)
        })
        .collect();
    let result = model.apply(factors, Some(filter()), None, false);
    if !result.errors.is_empty() || !result.unused.is_empty() {
        return Err(Error::TensorRead(format!(
            "redrawing the LoRA A factors failed: errors {:?}, unused {:?}",
            result.errors, result.unused
        )));
    }
    Ok(model)
}

/// Only the LoRA factors.
fn lora_filter() -> PathFilter {
    PathFilter::new().with_regex(r"\.lora\.(a|b)$")
}

/// `(module, "a" | "b")` of a factor path `<module>.weight.lora.<a|b>`.
fn split_factor(name: &str) -> Option<(&str, &str)> {
    let (head, factor) = name.rsplit_once(".lora.")?;
    Some((head.strip_suffix(".weight")?, factor))
}

/// A 2-D tensor's transpose (burn's `[in, r]`/`[r, out]` ↔ PEFT's `[r, in]`/`[out, r]`).
fn transpose(data: &TensorData) -> TensorData {
    let [rows, columns] = [data.shape()[0], data.shape()[1]];
    let size = data.dtype().size();
    let bytes = data.as_bytes();
    let mut out = vec![0u8; bytes.len()];
    for row in 0..rows {
        for column in 0..columns {
            let from = (row * columns + column) * size;
            let to = (column * rows + row) * size;
            out[to..to + size].copy_from_slice(&bytes[from..from + size]);
        }
    }
    TensorData::from_bytes_vec(out, vec![columns, rows], data.dtype())
}
