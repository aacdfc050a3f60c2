//! Whole-CLIP weights (both towers and the logit scale) in transformers' `CLIPModel` layout
//! or OpenCLIP's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot};
use burn::tensor::FloatDType;

use super::config::{ClipPooling, ClipTextConfig};
use super::mlp::ClipActivation;
use super::model::ClipModel;
use super::model_config::ClipModelConfig;
use super::model_keys::{Source, Transform, open_clip_source, transformers_source};
use super::vision_config::ClipVisionConfig;
use super::weights::{prefixed_mismatch, read_hf_config};
use crate::error::{Error, Result, WeightProblem};
use crate::models::mmdit::mixed_dtypes::cast_if_mixed;
use crate::models::safetensors_files::{
    apply_pytorch_tensors, read_file, read_shards, read_weights_file,
};

/// transformers' vision-tower marker.
const HF_VISION: &str = "vision_model.embeddings.patch_embedding.weight";
/// transformers' text-tower marker.
const HF_TEXT: &str = "text_model.embeddings.token_embedding.weight";
/// OpenCLIP's vision-tower marker.
const OPEN_CLIP_VISION: &str = "visual.conv1.weight";
/// OpenCLIP's text-tower marker.
const OPEN_CLIP_TEXT: &str = "token_embedding.weight";
/// Buffers some files carry that are not parameters: transformers' position ids (older
/// versions saved them) and OpenCLIP's causal mask (older versions kept it persistent).
const BUFFERS: [&str; 3] = [
    "text_model.embeddings.position_ids",
    "vision_model.embeddings.position_ids",
    "attn_mask",
];
/// transformers' unsharded weights file in a model folder.
const WEIGHTS_FILE: &str = "model.safetensors";
/// transformers' shard index.
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// The two key layouts of a whole-CLIP checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipLayout {
    /// transformers' `CLIPModel`: `text_model.*`, `vision_model.*`, `text_projection.weight`,
    /// `visual_projection.weight`, `logit_scale` (PickScore_v1,
    /// `openai/clip-vit-large-patch14`, `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`).
    Transformers,
    /// OpenCLIP's `CLIP.state_dict()`: `visual.*` (fused `attn.in_proj_weight`, `visual.proj`
    /// `[width, projection]`), `token_embedding.weight`, `positional_embedding`,
    /// `transformer.resblocks.*`, `ln_final.*`, `text_projection`, `logit_scale` (HPSv2,
    /// HPSv2.1, whose `.pt` files hold it under `state_dict`).
    OpenClip,
}

/// The weights of a whole CLIP model, memory-mapped and read lazily.
///
/// Opens a safetensors file, a PyTorch checkpoint (`.pt`, `.pth`, `.bin`, `.ckpt`: HPSv2's
/// `HPS_v2_compressed.pt` and `HPS_v2.1_compressed.pt`, whose weights lie under
/// `state_dict`), or a transformers model folder (`model.safetensors` or shards listed in
/// `model.safetensors.index.json`, with `config.json`), in either [`ClipLayout`], detected
/// from the keys. All keys may share one prefix: `state_dict.` for a training checkpoint's
/// dictionary, `module.` from a `DistributedDataParallel` save.
///
/// ```no_run
/// use burn::prelude::*;
/// use burn::tensor::FloatDType;
/// use flow_rl::models::clip::ClipModelWeights;
///
/// let weights = ClipModelWeights::open("PickScore_v1")?;
/// let model = weights.load(Some(FloatDType::BF16), &Device::default())?;
/// println!("logit scale {}", model.logit_scale());
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Clone)]
pub struct ClipModelWeights {
    path: PathBuf,
    /// The model's tensors by key, without the file's prefix.
    tensors: BTreeMap<String, PackTensor>,
    /// The prefix the file puts before the model's keys.
    prefix: String,
    layout: ClipLayout,
    /// transformers' `config.json` beside the weights, when there is one.
    hf_config: Option<serde_json::Value>,
}

impl std::fmt::Debug for ClipModelWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModelWeights")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .field("prefix", &self.prefix)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl ClipModelWeights {
    /// Opens a file or a transformers folder holding one whole CLIP model.
    ///
    /// Fails with [`Error::Checkpoint`] saying what the file looks like when it holds no
    /// whole CLIP: a text encoder alone, a vision tower alone, another model family.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (tensors, hf_config) = if path.is_dir() {
            (read_folder(path)?, read_hf_config(path)?)
        } else {
            (read_weights_file(path)?, None)
        };
        let (prefix, layout) = detect_layout(path, &tensors)?;
        let tensors = tensors
            .into_iter()
            .filter_map(|(key, tensor)| Some((key.strip_prefix(&prefix)?.to_owned(), tensor)))
            .filter(|(key, _)| !BUFFERS.contains(&key.as_str()))
            .collect();
        Ok(Self {
            path: path.to_owned(),
            tensors,
            prefix,
            layout,
            hf_config,
        })
    }

    /// The detected key layout.
    pub fn layout(&self) -> ClipLayout {
        self.layout
    }

    /// The prefix before the model's keys in the file (`""` for most files).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The architecture, from the tensors' shapes and, where a transformers folder has one,
    /// `config.json` (heads, activations, pooling rule, epsilons: `text_config_dict` and
    /// `vision_config_dict` over `text_config` and `vision_config`, transformers' defaults for
    /// what none gives). Without it (a single file, OpenCLIP's layout):
    /// heads of 64 features, except 16 heads for vision widths 1280 and 1664 (OpenCLIP's
    /// ViT-H/14 and ViT-bigG/14); QuickGELU in both towers for OpenAI's ViT-L/14 shape
    /// (text width 768, vision width 1024) and exact GELU otherwise; pooling at the highest
    /// id; epsilon 1e-5. Where these guesses do not fit, build a [`ClipModelConfig`] and use
    /// [`load_into`](Self::load_into).
    pub fn infer_config(&self) -> Result<ClipModelConfig> {
        let text_width = self.param_shape("text.token_embedding.weight")?[1];
        let vision_width = self.param_shape("vision.patch_embedding.weight")?[0];
        let openai_l14 = text_width == 768 && vision_width == 1024;
        let guessed_activation = if openai_l14 {
            ClipActivation::QuickGelu
        } else {
            ClipActivation::Gelu
        };
        let text = self.infer_text(guessed_activation)?;
        let vision = self.infer_vision(guessed_activation)?;
        let config = ClipModelConfig::new(text, vision);
        config.validate()?;
        Ok(config)
    }

    /// [`infer_config`](Self::infer_config), a model of that architecture and
    /// [`load_into`](Self::load_into) it, on `device`.
    pub fn load(&self, dtype: Option<FloatDType>, device: &Device) -> Result<ClipModel> {
        let model = self.infer_config()?.init(device)?;
        self.load_into(model, dtype)
    }

    /// Loads the weights into `model`, keeping their stored dtype or casting them to
    /// `dtype`. A file mixing float dtypes is loaded in the one holding most elements, with
    /// a `log` warning naming the keys cast.
    ///
    /// Fails with [`Error::WeightMismatch`] listing every missing, unexpected or mis-shaped
    /// key (in the file's naming, fused tensors by their fused shape) before anything is
    /// loaded.
    pub fn load_into(&self, model: ClipModel, dtype: Option<FloatDType>) -> Result<ClipModel> {
        let params: Vec<(String, Vec<usize>, Source)> = model
            .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
            .into_iter()
            .map(|tensor| {
                let source = self.source(&tensor.name);
                (tensor.name.clone(), tensor.shape.to_vec(), source)
            })
            .collect();
        let mut problems = Vec::new();
        let mut checked = BTreeSet::new();
        for (_, shape, source) in &params {
            if !checked.insert(source.key.as_str()) {
                continue;
            }
            let accepted = source.stored_shapes(shape);
            match self.tensors.get(&source.key) {
                None => problems.push(WeightProblem::missing(
                    source.key.clone(),
                    accepted[0].clone(),
                )),
                Some(tensor) if !accepted.contains(&tensor.shape.to_vec()) => {
                    problems.push(WeightProblem::mis_shaped(
                        source.key.clone(),
                        accepted[0].clone(),
                        tensor.shape.to_vec(),
                    ))
                }
                Some(_) => {}
            }
        }
        for (key, tensor) in &self.tensors {
            if !checked.contains(key.as_str()) {
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
        let tensors = params
            .iter()
            .map(|(name, shape, source)| {
                source.extract(self.tensors[&source.key].clone(), name, shape)
            })
            .collect();
        apply_pytorch_tensors(model, tensors, dtype, &self.path)
    }

    /// Where parameter `param` of a [`ClipModel`] lies in this file.
    fn source(&self, param: &str) -> Source {
        match self.layout {
            ClipLayout::Transformers => transformers_source(param),
            ClipLayout::OpenClip => open_clip_source(param),
        }
    }

    /// The shape parameter `param` would have (PyTorch layout), from its stored tensor.
    fn param_shape(&self, param: &str) -> Result<Vec<usize>> {
        let source = self.source(param);
        let stored = self
            .tensors
            .get(&source.key)
            .map(|tensor| tensor.shape.to_vec())
            .ok_or_else(|| self.mismatch(vec![WeightProblem::missing(&source.key, vec![])]))?;
        let shape = match source.transform {
            Transform::Transposed => stored.into_iter().rev().collect(),
            _ => stored,
        };
        let rank = match param.rsplit('.').next() {
            Some("bias") => 1,
            _ if param.ends_with("patch_embedding.weight") => 4,
            _ => 2,
        };
        if shape.len() != rank {
            return Err(self.unreadable(format!(
                "`{}{}` is {shape:?}, expected {rank} dimensions",
                self.prefix, source.key
            )));
        }
        Ok(shape)
    }

    /// The number of encoder layers of `tower` (`text` or `vision`): the first index whose
    /// first LayerNorm is absent.
    fn layer_count(&self, tower: &str) -> usize {
        (0..)
            .find(|index| {
                let key = self
                    .source(&format!("{tower}.layers.{index}.layer_norm1.weight"))
                    .key;
                !self.tensors.contains_key(&key)
            })
            .unwrap_or(0)
    }

    /// A field of `config.json`'s `text_config` or `vision_config`, where the
    /// `text_config_dict`/`vision_config_dict` of older files (OpenAI's and LAION's) override
    /// it, as transformers reads them.
    fn hf_field(&self, tower: &str, name: &str) -> Option<&serde_json::Value> {
        let config = self.hf_config.as_ref()?;
        [format!("{tower}_config_dict"), format!("{tower}_config")]
            .iter()
            .find_map(|section| config.get(section)?.get(name))
    }

    /// The heads, activation and epsilon of `tower`: `config.json`'s (with transformers'
    /// defaults: 8 text heads, 12 vision heads, QuickGELU, 1e-5) or the guesses.
    fn hf_or_guess(
        &self,
        tower: &str,
        width: usize,
        guessed_activation: ClipActivation,
    ) -> Result<(usize, ClipActivation, f64)> {
        if self.hf_config.is_none() {
            let heads = match (tower, width) {
                ("vision", 1280 | 1664) => 16,
                _ if width >= 64 && width.is_multiple_of(64) => width / 64,
                _ => {
                    return Err(Error::invalid(
                        format!("{tower} heads"),
                        format!("unknown for width {width}"),
                        "a width that is a multiple of 64 (heads of 64 features), or an explicit \
                         ClipModelConfig given to `ClipModelWeights::load_into`",
                    ));
                }
            };
            return Ok((heads, guessed_activation, 1e-5));
        }
        let default_heads = if tower == "text" { 8 } else { 12 };
        let heads = self
            .hf_field(tower, "num_attention_heads")
            .and_then(|value| value.as_u64())
            .map_or(default_heads, |value| value as usize);
        let activation = match self
            .hf_field(tower, "hidden_act")
            .and_then(|value| value.as_str())
        {
            None | Some("quick_gelu") => ClipActivation::QuickGelu,
            Some("gelu") => ClipActivation::Gelu,
            Some(other) => {
                return Err(Error::invalid(
                    format!("{tower}_config.hidden_act"),
                    other,
                    "`quick_gelu` or `gelu` in config.json",
                ));
            }
        };
        let eps = self
            .hf_field(tower, "layer_norm_eps")
            .and_then(|value| value.as_f64())
            .unwrap_or(1e-5);
        Ok((heads, activation, eps))
    }

    fn infer_text(&self, guessed_activation: ClipActivation) -> Result<ClipTextConfig> {
        let embedding = self.param_shape("text.token_embedding.weight")?;
        let (vocab_size, width) = (embedding[0], embedding[1]);
        let positions = self.param_shape("text.position_embedding.weight")?[0];
        let mlp_width = self.param_shape("text.layers.0.mlp.fc1.weight")?[0];
        let projection = self.param_shape("text.text_projection.weight")?[0];
        let (heads, activation, eps) = self.hf_or_guess("text", width, guessed_activation)?;
        let pooling = match self
            .hf_field("text", "eos_token_id")
            .and_then(|value| value.as_u64())
        {
            Some(eos) if eos != 2 => ClipPooling::FirstId(eos as usize),
            _ => ClipPooling::HighestId,
        };
        Ok(ClipTextConfig::new(
            width,
            self.layer_count("text"),
            heads,
            mlp_width,
            activation,
            projection,
            pooling,
        )
        .with_vocab_size(vocab_size)
        .with_max_positions(positions)
        .with_layer_norm_eps(eps))
    }

    fn infer_vision(&self, guessed_activation: ClipActivation) -> Result<ClipVisionConfig> {
        let conv = self.param_shape("vision.patch_embedding.weight")?;
        let (width, channels, patch) = (conv[0], conv[1], conv[2]);
        let positions = self.param_shape("vision.position_embedding.weight")?[0];
        let grid = (1..=positions)
            .find(|grid| grid * grid + 1 >= positions)
            .unwrap_or(0);
        if grid * grid + 1 != positions || conv[3] != patch {
            return Err(self.unreadable(format!(
                "the vision tower's {positions} positions and {:?} patch kernel do not make a \
                 class token and a square grid of square patches",
                &conv[2..]
            )));
        }
        let mlp_width = self.param_shape("vision.layers.0.mlp.fc1.weight")?[0];
        let projection = self.param_shape("vision.visual_projection.weight")?[0];
        let (heads, activation, eps) = self.hf_or_guess("vision", width, guessed_activation)?;
        Ok(ClipVisionConfig::new(
            patch,
            width,
            self.layer_count("vision"),
            heads,
            mlp_width,
            activation,
            projection,
        )
        .with_image_size(grid * patch)
        .with_channels(channels)
        .with_layer_norm_eps(eps))
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

/// The prefix and layout of the one whole CLIP in `tensors`, or an error saying what the
/// file holds instead.
fn detect_layout(
    path: &Path,
    tensors: &BTreeMap<String, PackTensor>,
) -> Result<(String, ClipLayout)> {
    let error = |message: String| Error::Checkpoint {
        path: path.display().to_string(),
        message,
    };
    let prefixes = |marker: &str| -> BTreeSet<String> {
        tensors
            .keys()
            .filter_map(|key| key.strip_suffix(marker))
            .map(str::to_owned)
            .collect()
    };
    let mut found: Vec<(String, ClipLayout, &str)> = Vec::new();
    for (vision, text, layout) in [
        (HF_VISION, HF_TEXT, ClipLayout::Transformers),
        (OPEN_CLIP_VISION, OPEN_CLIP_TEXT, ClipLayout::OpenClip),
    ] {
        for prefix in prefixes(vision) {
            found.push((prefix, layout, text));
        }
    }
    let sample: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
    let expected = "expected a whole CLIP model (text and vision towers) in transformers' \
                    `CLIPModel` naming (`text_model.*`, `vision_model.*`, `logit_scale`) or \
                    OpenCLIP's (`visual.*`, `transformer.resblocks.*`, `logit_scale`)";
    match &found[..] {
        [] => {
            let looks_like = if !prefixes(HF_TEXT).is_empty() {
                "a CLIP text encoder alone (transformers' `CLIPTextModel`): open it with \
                 `ClipTextWeights::open`"
            } else if tensors
                .keys()
                .any(|key| key.starts_with("transformer.resblocks."))
            {
                "an OpenCLIP text tower without its vision tower"
            } else {
                "not a CLIP model"
            };
            Err(error(format!(
                "this looks like {looks_like} (keys such as {sample:?}); {expected}"
            )))
        }
        [(prefix, layout, text)] => {
            if tensors.contains_key(&format!("{prefix}{text}")) {
                return Ok((prefix.clone(), *layout));
            }
            let tower = match layout {
                ClipLayout::Transformers => {
                    "a CLIP vision tower alone (transformers' `CLIPVisionModel`)"
                }
                ClipLayout::OpenClip => "an OpenCLIP vision tower without its text tower",
            };
            Err(error(format!(
                "this looks like {tower} (keys such as {sample:?}); {expected}"
            )))
        }
        several => Err(error(format!(
            "the file holds several CLIP vision towers, under the prefixes {:?}; {expected}, \
             one per file",
            several
                .iter()
                .map(|(prefix, _, _)| prefix.as_str())
                .collect::<Vec<_>>()
        ))),
    }
}

/// A transformers model folder: sharded through the index, or one file.
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
            "expected a transformers CLIP model folder holding `{WEIGHTS_INDEX}` with its \
             shards or `{WEIGHTS_FILE}`"
        ),
    })
}

#[cfg(test)]
mod tests {
    use burn::store::bridge::deferred;
    use burn::tensor::{DType, Shape};

    use super::*;

    /// Every parameter of a model of `config`, in PyTorch naming and layout, as
    /// `ClipModel::collect` with `BurnToPyTorchAdapter` names them, built from the config
    /// alone so that released sizes cost nothing.
    fn params(config: &ClipModelConfig) -> Vec<(String, Vec<usize>)> {
        let mut params = vec![("logit_scale".to_owned(), vec![1])];
        let mut push = |name: String, shape: Vec<usize>| params.push((name, shape));
        let (text, vision) = (&config.text, &config.vision);
        let towers = [
            (
                "text",
                text.width,
                text.mlp_width,
                text.layers,
                text.projection,
            ),
            (
                "vision",
                vision.width,
                vision.mlp_width,
                vision.layers,
                vision.projection,
            ),
        ];
        for (tower, width, mlp, layers, projection) in towers {
            for layer in 0..layers {
                let prefix = format!("{tower}.layers.{layer}");
                for linear in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    push(
                        format!("{prefix}.self_attn.{linear}.weight"),
                        vec![width, width],
                    );
                    push(format!("{prefix}.self_attn.{linear}.bias"), vec![width]);
                }
                for norm in ["layer_norm1", "layer_norm2"] {
                    push(format!("{prefix}.{norm}.weight"), vec![width]);
                    push(format!("{prefix}.{norm}.bias"), vec![width]);
                }
                push(format!("{prefix}.mlp.fc1.weight"), vec![mlp, width]);
                push(format!("{prefix}.mlp.fc1.bias"), vec![mlp]);
                push(format!("{prefix}.mlp.fc2.weight"), vec![width, mlp]);
                push(format!("{prefix}.mlp.fc2.bias"), vec![width]);
            }
            let norms: &[&str] = if tower == "text" {
                &["final_layer_norm"]
            } else {
                &["pre_layrnorm", "post_layernorm"]
            };
            for norm in norms {
                push(format!("{tower}.{norm}.weight"), vec![width]);
                push(format!("{tower}.{norm}.bias"), vec![width]);
            }
            let projection_name = if tower == "text" {
                "text.text_projection.weight"
            } else {
                "vision.visual_projection.weight"
            };
            push(projection_name.to_owned(), vec![projection, width]);
        }
        push(
            "text.token_embedding.weight".to_owned(),
            vec![text.vocab_size, text.width],
        );
        push(
            "text.position_embedding.weight".to_owned(),
            vec![text.max_positions, text.width],
        );
        let patch = vision.patch_size;
        push(
            "vision.patch_embedding.weight".to_owned(),
            vec![vision.width, vision.channels, patch, patch],
        );
        push("vision.class_embedding".to_owned(), vec![vision.width]);
        push(
            "vision.position_embedding.weight".to_owned(),
            vec![vision.positions(), vision.width],
        );
        params
    }

    /// A checkpoint of `config` in `layout` whose tensors have shapes but no data (reading
    /// one fails), as infer_config and the key checks need no more.
    fn shapes_only(config: &ClipModelConfig, layout: ClipLayout) -> ClipModelWeights {
        let mut tensors = BTreeMap::new();
        for (param, shape) in params(config) {
            let source = match layout {
                ClipLayout::Transformers => transformers_source(&param),
                ClipLayout::OpenClip => open_clip_source(&param),
            };
            let stored = source.stored_shapes(&shape).remove(0);
            let tensor = deferred(
                source.key.clone(),
                DType::F32,
                Shape::from(stored),
                None,
                || {
                    Err(burn::store::burn_pack::Error::ValidationError(
                        "a shapes-only test tensor".into(),
                    ))
                },
            );
            tensors.insert(source.key, tensor);
        }
        ClipModelWeights {
            path: PathBuf::from("shapes-only"),
            tensors,
            prefix: String::new(),
            layout,
            hf_config: None,
        }
    }

    #[test]
    fn the_parameter_list_is_the_models() {
        let config = ClipModelConfig::new(
            ClipTextConfig::new(8, 2, 2, 16, ClipActivation::Gelu, 4, ClipPooling::HighestId)
                .with_vocab_size(50),
            ClipVisionConfig::new(4, 8, 1, 2, 16, ClipActivation::Gelu, 4).with_image_size(8),
        );
        let model = config.init(&Device::default()).unwrap();
        let collected: BTreeMap<String, Vec<usize>> = model
            .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
            .into_iter()
            .map(|tensor| (tensor.name.clone(), tensor.shape.to_vec()))
            .collect();
        assert_eq!(collected, params(&config).into_iter().collect());
    }

    #[test]
    fn config_json_dicts_override_their_configs_and_defaults_fill_the_rest() {
        let preset = ClipModelConfig::vit_h14();
        let mut weights = shapes_only(&preset, ClipLayout::Transformers);
        // LAION's layout of config.json: the overrides in `*_config_dict`, a stale
        // `text_config`, and a vision section without activation (transformers' default
        // QuickGELU then applies).
        weights.hf_config = Some(serde_json::json!({
            "text_config": {"hidden_act": "quick_gelu", "num_attention_heads": 8},
            "text_config_dict": {"hidden_act": "gelu", "num_attention_heads": 16},
            "vision_config": {"num_attention_heads": 16},
        }));
        let config = weights.infer_config().unwrap();
        assert_eq!(config.text, preset.text);
        assert_eq!(
            (config.vision.heads, config.vision.activation),
            (16, ClipActivation::QuickGelu)
        );
    }

    #[test]
    fn released_shapes_infer_the_presets_without_config_json() {
        // OpenAI's ViT-L/14 and LAION's ViT-H/14 (PickScore, HPSv2), each in both layouts.
        for preset in [ClipModelConfig::vit_l14(), ClipModelConfig::vit_h14()] {
            for layout in [ClipLayout::Transformers, ClipLayout::OpenClip] {
                let weights = shapes_only(&preset, layout);
                assert_eq!(weights.infer_config().unwrap(), preset, "{layout:?}");
            }
        }
    }
}
