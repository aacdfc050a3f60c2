//! SD3 VAE decoder weights: diffusers' `vae/` folder and the ldm keys of Stability AI's
//! single files, read lazily and mapped onto [`VaeDecoder`]'s (diffusers') parameter names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, bridge};
use burn::tensor::{FloatDType, TensorData};

use super::config::VaeDecoderConfig;
use super::decoder::VaeDecoder;
use crate::error::{Error, Result, WeightProblem};
use crate::models::mmdit::mixed_dtypes::cast_if_mixed;
use crate::models::safetensors_files::{apply_pytorch_tensors, read_file, read_shards};

/// diffusers' unsharded weights file in a `vae/` folder.
const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// diffusers' shard index.
const WEIGHTS_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";
/// diffusers' configuration beside the weights.
const CONFIG_FILE: &str = "config.json";
/// The key every decoder holds, after the file's prefix, in both namings.
const CONV_IN: &str = "decoder.conv_in.weight";
/// The prefixes a single file may put before `decoder.`, most specific first.
const SINGLE_FILE_PREFIXES: [&str; 3] = ["first_stage_model.", "vae.", ""];
/// The convolution SD1/SDXL VAEs apply before decoding; SD3's has none.
const POST_QUANT_CONV: &str = "post_quant_conv.";

/// How a file names the decoder's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    /// diffusers' `mid_block.resnets.0`, `up_blocks.i.resnets.j`, …
    Diffusers,
    /// The original (ldm) `mid.block_1`, `up.{n-1-i}.block.j`, 1×1-conv attention, …
    Ldm,
}

/// One stored decoder tensor, under the parameter name it fills.
#[derive(Clone)]
struct Stored {
    /// The key in the file, prefix included (for error messages).
    key: String,
    tensor: PackTensor,
}

/// The decoder weights of an SD3-family VAE, memory-mapped and read lazily.
///
/// Opens a diffusers `vae/` folder (`diffusion_pytorch_model.safetensors` or its shards,
/// with `config.json`), a diffusers pipeline root (its `vae/` is used), or a single
/// safetensors file whose VAE keys are in the original (ldm) naming under
/// `first_stage_model.` (SD3.5's official single files), `vae.` or no prefix; a single
/// file in diffusers' naming is read too. Encoder keys (`encoder.*`, `quant_conv.*`) and
/// other components' keys (`model.diffusion_model.*`, `text_encoders.*`) are ignored. A
/// file with a `post_quant_conv` (an SD1/SDXL VAE) is refused: SD3's decoder has none.
///
/// ```no_run
/// use burn::prelude::*;
/// use flow_rl::models::vae::VaeWeights;
///
/// let weights = VaeWeights::open("stable-diffusion-3.5-medium")?; // uses vae/
/// let vae = weights.load(None, &Device::default())?; // stored dtype kept
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Clone)]
pub struct VaeWeights {
    path: PathBuf,
    /// The decoder's tensors by diffusers parameter name (without `decoder.`).
    tensors: BTreeMap<String, Stored>,
    /// The file's prefix before `decoder.`.
    prefix: String,
    naming: Naming,
    /// diffusers' `config.json`, when there is one.
    hf_config: Option<serde_json::Value>,
}

impl std::fmt::Debug for VaeWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaeWeights")
            .field("path", &self.path)
            .field("prefix", &self.prefix)
            .field("naming", &self.naming)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl VaeWeights {
    /// Opens a diffusers `vae/` folder, a diffusers root holding one, or a single file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (path, tensors, hf_config, prefixes): (PathBuf, _, _, &[&str]) = if path.is_dir() {
            let folder = if !path.join(WEIGHTS_FILE).is_file()
                && !path.join(WEIGHTS_INDEX).is_file()
                && path.join("vae").is_dir()
            {
                path.join("vae")
            } else {
                path.to_owned()
            };
            let tensors = read_folder(&folder)?;
            let config = read_hf_config(&folder)?;
            (folder, tensors, config, &[""])
        } else {
            (
                path.to_owned(),
                read_file(path)?,
                None,
                &SINGLE_FILE_PREFIXES,
            )
        };
        let Some(prefix) = prefixes
            .iter()
            .find(|prefix| tensors.contains_key(&format!("{prefix}{CONV_IN}")))
        else {
            let sample: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                message: format!(
                    "no VAE decoder (keys such as {sample:?}); expected `{CONV_IN}` under one \
                     of the prefixes {prefixes:?}"
                ),
            });
        };
        let vae_keys: Vec<(&str, &PackTensor)> = tensors
            .iter()
            .filter_map(|(key, tensor)| Some((key.strip_prefix(prefix)?, tensor)))
            .collect();
        if let Some((key, _)) = vae_keys
            .iter()
            .find(|(key, _)| key.starts_with(POST_QUANT_CONV))
        {
            return Err(Error::Checkpoint {
                path: path.display().to_string(),
                message: format!(
                    "`{prefix}{key}`: this VAE has a post-quant convolution (SD1.x/SDXL); \
                     only SD3-family VAEs (16 latent channels, no post_quant_conv) are supported"
                ),
            });
        }
        let naming = if vae_keys
            .iter()
            .any(|(key, _)| key.starts_with("decoder.mid_block."))
        {
            Naming::Diffusers
        } else {
            Naming::Ldm
        };
        let levels = vae_keys
            .iter()
            .filter_map(|(key, _)| {
                let rest = key.strip_prefix("decoder.up.")?;
                rest.split('.').next()?.parse::<usize>().ok()
            })
            .max()
            .map_or(0, |last| last + 1);
        let mut decoder = BTreeMap::new();
        for (key, tensor) in vae_keys {
            // The encoder, quant_conv and other components' keys are not the decoder's.
            let Some(rest) = key.strip_prefix("decoder.") else {
                continue;
            };
            let name = match naming {
                Naming::Diffusers => rest.to_owned(),
                Naming::Ldm => ldm_to_diffusers(rest, levels),
            };
            decoder.insert(
                name,
                Stored {
                    key: format!("{prefix}{key}"),
                    tensor: tensor.clone(),
                },
            );
        }
        Ok(Self {
            path,
            tensors: decoder,
            prefix: (*prefix).to_owned(),
            naming,
            hf_config,
        })
    }

    /// The architecture: from diffusers' `config.json` when the folder has one, else from
    /// the tensors' shapes. A single file stores neither the group count nor the scaling and
    /// shift, so those are SD3's (32, 1.5305, 0.0609); pass a [`VaeDecoderConfig`] to
    /// [`load_into`](Self::load_into) for anything else.
    pub fn infer_config(&self) -> Result<VaeDecoderConfig> {
        let shape = |name: &str| -> Result<Vec<usize>> {
            self.tensors
                .get(name)
                .map(|stored| stored.tensor.shape.to_vec())
                .ok_or_else(|| {
                    let key = self.stored_key(name, self.levels());
                    self.mismatch(vec![WeightProblem::missing(key, vec![])])
                })
        };
        let conv_in = shape("conv_in.weight")?;
        let conv_out = shape("conv_out.weight")?;
        let levels = self.levels();
        let mut reversed = Vec::with_capacity(levels);
        for level in 0..levels {
            reversed.push(shape(&format!("up_blocks.{level}.resnets.0.conv1.weight"))?[0]);
        }
        let resnets = self
            .tensors
            .keys()
            .filter_map(|name| {
                let rest = name.strip_prefix("up_blocks.0.resnets.")?;
                rest.split('.').next()?.parse::<usize>().ok()
            })
            .max()
            .unwrap_or(0);
        let from_shapes = VaeDecoderConfig::new(reversed.into_iter().rev().collect())
            .with_latent_channels(conv_in[1])
            .with_out_channels(conv_out[0])
            .with_layers_per_block(resnets.max(1));
        let config = match &self.hf_config {
            None => from_shapes,
            Some(hf) => {
                let size = |name: &str| hf.get(name).and_then(|v| v.as_u64()).map(|v| v as usize);
                let number = |name: &str| hf.get(name).and_then(|v| v.as_f64());
                let blocks = hf
                    .get("block_out_channels")
                    .and_then(|v| v.as_array())
                    .map(|values| {
                        values
                            .iter()
                            .filter_map(|v| v.as_u64().map(|v| v as usize))
                            .collect()
                    })
                    .unwrap_or(from_shapes.block_out_channels.clone());
                VaeDecoderConfig::new(blocks)
                    .with_latent_channels(size("latent_channels").unwrap_or(conv_in[1]))
                    .with_out_channels(size("out_channels").unwrap_or(conv_out[0]))
                    .with_layers_per_block(
                        size("layers_per_block").unwrap_or(from_shapes.layers_per_block),
                    )
                    .with_norm_groups(size("norm_num_groups").unwrap_or(32))
                    .with_scaling_factor(number("scaling_factor").unwrap_or(1.5305))
                    // diffusers reads a null shift as none.
                    .with_shift_factor(number("shift_factor").unwrap_or(0.0))
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// A decoder of [`infer_config`](Self::infer_config)'s architecture with these weights,
    /// in their stored dtype or cast to `dtype`.
    pub fn load(
        &self,
        dtype: Option<FloatDType>,
        device: &burn::prelude::Device,
    ) -> Result<VaeDecoder> {
        self.load_into(self.infer_config()?.init(device)?, dtype)
    }

    /// Loads the weights into `decoder`, keeping their stored dtype or casting them to
    /// `dtype`. A file mixing float dtypes is loaded in the one holding most elements, with
    /// a `log` warning naming the keys cast.
    ///
    /// Fails with [`Error::WeightMismatch`] listing every missing, unexpected or mis-shaped
    /// decoder key (in the file's naming) before anything is loaded.
    pub fn load_into(&self, decoder: VaeDecoder, dtype: Option<FloatDType>) -> Result<VaeDecoder> {
        let levels = decoder.config().block_out_channels.len();
        let expected: BTreeMap<String, Vec<usize>> = decoder
            .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
            .into_iter()
            .map(|tensor| (tensor.name.clone(), tensor.shape.to_vec()))
            .collect();
        let mut problems = Vec::new();
        for (name, shape) in &expected {
            match self.tensors.get(name) {
                None => problems.push(WeightProblem::missing(
                    self.stored_key(name, levels),
                    shape.clone(),
                )),
                Some(stored) if !fits(&stored.tensor, shape) => {
                    problems.push(WeightProblem::mis_shaped(
                        stored.key.clone(),
                        shape.clone(),
                        stored.tensor.shape.to_vec(),
                    ))
                }
                Some(_) => {}
            }
        }
        for (name, stored) in &self.tensors {
            if !expected.contains_key(name) {
                problems.push(WeightProblem::unexpected(
                    stored.key.clone(),
                    stored.tensor.shape.to_vec(),
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
                    .values()
                    .map(|stored| (stored.key.as_str(), &stored.tensor)),
            )
        });
        let tensors = expected
            .iter()
            .map(|(name, shape)| renamed(&self.tensors[name].tensor, name, shape))
            .collect();
        apply_pytorch_tensors(decoder, tensors, dtype, &self.path)
    }

    /// The number of resolution levels the file's keys show.
    fn levels(&self) -> usize {
        self.tensors
            .keys()
            .filter_map(|name| {
                let rest = name.strip_prefix("up_blocks.")?;
                rest.split('.').next()?.parse::<usize>().ok()
            })
            .max()
            .map_or(0, |last| last + 1)
    }

    /// The file key a decoder parameter is stored under, for error messages.
    fn stored_key(&self, name: &str, levels: usize) -> String {
        let rest = match self.naming {
            Naming::Diffusers => name.to_owned(),
            Naming::Ldm => diffusers_to_ldm(name, levels),
        };
        format!("{}decoder.{rest}", self.prefix)
    }

    fn mismatch(&self, problems: Vec<WeightProblem>) -> Error {
        Error::WeightMismatch {
            path: self.path.display().to_string(),
            problems,
        }
    }
}

/// Whether a stored tensor fills a parameter of `shape`: the same shape, or ldm's 1×1
/// attention convolution `[C, C, 1, 1]` for a `[C, C]` projection.
fn fits(tensor: &PackTensor, shape: &[usize]) -> bool {
    let stored = tensor.shape.to_vec();
    stored == shape || (shape.len() == 2 && stored == [shape[0], shape[1], 1, 1])
}

/// The stored tensor named by its parameter, reshaped to `shape` (a no-op but for ldm's 1×1
/// attention convolutions, whose bytes are already a `[C, C]` matrix); still lazy.
fn renamed(stored: &PackTensor, name: &str, shape: &[usize]) -> PackTensor {
    if stored.shape.to_vec() == shape {
        let mut tensor = stored.clone();
        tensor.name = name.to_owned();
        return tensor;
    }
    let target = shape.to_vec();
    bridge::map_data(
        stored.clone(),
        name.to_owned(),
        stored.dtype,
        target.clone().into(),
        move |data| {
            TensorData::from_bytes_vec(data.as_bytes().to_vec(), target.clone(), data.dtype())
        },
    )
}

/// ldm's attention projection names and diffusers'.
const ATTENTION_NAMES: [(&str, &str); 5] = [
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
];

/// A decoder key in ldm naming (after `decoder.`) as the diffusers parameter it fills, for
/// a decoder of `levels` resolution levels (ldm's `up.0` is the last, highest-resolution
/// level; diffusers' `up_blocks.0` the first). Keys it does not know come back unchanged.
fn ldm_to_diffusers(key: &str, levels: usize) -> String {
    let renamed = if let Some(rest) = key.strip_prefix("mid.block_1.") {
        format!("mid_block.resnets.0.{rest}")
    } else if let Some(rest) = key.strip_prefix("mid.block_2.") {
        format!("mid_block.resnets.1.{rest}")
    } else if let Some(rest) = key.strip_prefix("mid.attn_1.") {
        match ATTENTION_NAMES
            .iter()
            .find_map(|(ldm, ours)| Some((ours, rest.strip_prefix(ldm)?)))
        {
            Some((ours, tail)) => format!("mid_block.attentions.0.{ours}{tail}"),
            None => key.to_owned(),
        }
    } else if let Some(rest) = key.strip_prefix("norm_out.") {
        format!("conv_norm_out.{rest}")
    } else if let Some(rest) = key.strip_prefix("up.") {
        let mut parts = rest.splitn(2, '.');
        let level = parts.next().and_then(|level| level.parse::<usize>().ok());
        match (level, parts.next()) {
            (Some(level), Some(tail)) if level < levels => {
                let block = levels - 1 - level;
                if let Some(tail) = tail.strip_prefix("block.") {
                    format!("up_blocks.{block}.resnets.{tail}")
                } else if let Some(tail) = tail.strip_prefix("upsample.") {
                    format!("up_blocks.{block}.upsamplers.0.{tail}")
                } else {
                    key.to_owned()
                }
            }
            _ => key.to_owned(),
        }
    } else {
        key.to_owned()
    };
    renamed.replace(".nin_shortcut.", ".conv_shortcut.")
}

/// A diffusers decoder parameter's ldm key (after `decoder.`): the inverse of
/// [`ldm_to_diffusers`].
fn diffusers_to_ldm(name: &str, levels: usize) -> String {
    let renamed = if let Some(rest) = name.strip_prefix("mid_block.resnets.0.") {
        format!("mid.block_1.{rest}")
    } else if let Some(rest) = name.strip_prefix("mid_block.resnets.1.") {
        format!("mid.block_2.{rest}")
    } else if let Some(rest) = name.strip_prefix("mid_block.attentions.0.") {
        match ATTENTION_NAMES
            .iter()
            .find_map(|(ldm, ours)| Some((ldm, rest.strip_prefix(ours)?)))
        {
            Some((ldm, tail)) => format!("mid.attn_1.{ldm}{tail}"),
            None => name.to_owned(),
        }
    } else if let Some(rest) = name.strip_prefix("conv_norm_out.") {
        format!("norm_out.{rest}")
    } else if let Some(rest) = name.strip_prefix("up_blocks.") {
        let mut parts = rest.splitn(2, '.');
        let block = parts.next().and_then(|block| block.parse::<usize>().ok());
        match (block, parts.next()) {
            (Some(block), Some(tail)) if block < levels => {
                let level = levels - 1 - block;
                if let Some(tail) = tail.strip_prefix("resnets.") {
                    format!("up.{level}.block.{tail}")
                } else if let Some(tail) = tail.strip_prefix("upsamplers.0.") {
                    format!("up.{level}.upsample.{tail}")
                } else {
                    name.to_owned()
                }
            }
            _ => name.to_owned(),
        }
    } else {
        name.to_owned()
    };
    renamed.replace(".conv_shortcut.", ".nin_shortcut.")
}

/// A diffusers `vae/` folder: sharded through the index, or one file.
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
            "expected a diffusers VAE folder (`vae/`, or a pipeline root holding one) with \
             `{WEIGHTS_INDEX}` and its shards or `{WEIGHTS_FILE}`"
        ),
    })
}

/// diffusers' `config.json` in `folder`, when there is one.
fn read_hf_config(folder: &Path) -> Result<Option<serde_json::Value>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldm_and_diffusers_names_map_both_ways() {
        let pairs = [
            (
                "mid.block_1.norm1.weight",
                "mid_block.resnets.0.norm1.weight",
            ),
            ("mid.block_2.conv2.bias", "mid_block.resnets.1.conv2.bias"),
            (
                "mid.attn_1.norm.weight",
                "mid_block.attentions.0.group_norm.weight",
            ),
            ("mid.attn_1.q.weight", "mid_block.attentions.0.to_q.weight"),
            (
                "mid.attn_1.proj_out.bias",
                "mid_block.attentions.0.to_out.0.bias",
            ),
            (
                "up.3.block.0.conv1.weight",
                "up_blocks.0.resnets.0.conv1.weight",
            ),
            (
                "up.0.block.0.nin_shortcut.weight",
                "up_blocks.3.resnets.0.conv_shortcut.weight",
            ),
            (
                "up.1.upsample.conv.weight",
                "up_blocks.2.upsamplers.0.conv.weight",
            ),
            ("norm_out.bias", "conv_norm_out.bias"),
            ("conv_in.weight", "conv_in.weight"),
        ];
        for (ldm, diffusers) in pairs {
            assert_eq!(ldm_to_diffusers(ldm, 4), diffusers);
            assert_eq!(diffusers_to_ldm(diffusers, 4), ldm);
        }
    }
}
