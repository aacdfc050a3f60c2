//! T5 encoder checkpoints: diffusers' `text_encoder_3/` folder (sharded or not) and Stability
//! AI's single files, checked against the architecture before anything is loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::store::bridge;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::tensor::{DType, FloatDType};

use super::attention::T5Attention;
use super::block::{T5Block, T5FeedForward};
use super::config::T5Config;
use super::encoder::T5Encoder;
use super::norm::T5LayerNorm;
use super::position_bias::RelativePositionBias;
use crate::error::{Error, Result, WeightProblem};
use crate::models::mmdit::mixed_dtypes::{prevailing_dtype, warn_cast};
use crate::models::safetensors_files::{read_file, read_shards};

/// transformers' name of the token embedding.
const SHARED: &str = "shared.weight";
/// The same embedding under the encoder stack's name; files may hold either or both.
const EMBED_TOKENS: &str = "encoder.embed_tokens.weight";
/// The bias table, held by the first block only.
const BIAS_TABLE: &str = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
/// The prefix of the T5 encoder inside SD3's all-in-one single files.
const BUNDLED_PREFIX: &str = "text_encoders.t5xxl.transformer.";
/// diffusers' (transformers') unsharded weights file.
const SINGLE_FILE: &str = "model.safetensors";
/// diffusers' (transformers') shard index.
const INDEX_FILE: &str = "model.safetensors.index.json";

/// A T5 encoder checkpoint, memory-mapped and read lazily.
///
/// Opens diffusers' `text_encoder_3/` folder (`model.safetensors.index.json` with its
/// shards, or `model.safetensors`; a pipeline folder descends into `text_encoder_3/`),
/// Stability AI's `text_encoders/t5xxl_fp16.safetensors`, and the T5 inside SD3's
/// all-in-one files (`text_encoders.t5xxl.transformer.*`). The embedding may be stored as
/// `shared.weight`, `encoder.embed_tokens.weight` or both.
///
/// f16 files (`t5xxl_fp16`) must be cast on load: T5's activations overflow f16.
/// fp8 files (`t5xxl_fp8_e4m3fn`) are refused when opened, naming the dtype.
///
/// ```no_run
/// use burn::prelude::*;
/// use burn::tensor::{DType, FloatDType};
/// use flow_rl::models::t5::T5Weights;
///
/// let weights = T5Weights::open("stable-diffusion-3.5-medium/text_encoder_3")?;
/// let config = weights.infer_config()?; // T5Config::xxl() for SD3.5
/// let encoder = weights.load(&config, &Device::default(), Some(FloatDType::BF16))?;
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Clone)]
pub struct T5Weights {
    path: PathBuf,
    /// The encoder's tensors by key, without the file's prefix.
    tensors: BTreeMap<String, PackTensor>,
    /// The prefix the file puts before the encoder's keys.
    key_prefix: &'static str,
}

impl std::fmt::Debug for T5Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Weights")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl T5Weights {
    /// Opens a `.safetensors` file, a `text_encoder_3/` folder, or a diffusers pipeline
    /// folder holding one. Fails on a file of another model family, naming what it looks
    /// like.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let tensors = if path.is_dir() {
            read_folder(path)?
        } else {
            read_file(path)?
        };
        let (tensors, key_prefix) = classify(path, tensors)?;
        Ok(Self {
            path: path.to_owned(),
            tensors,
            key_prefix,
        })
    }

    /// The encoder's keys, without the file's prefix.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The architecture the shapes describe. The bucket count and head count come from the
    /// bias table; `relative_attention_max_distance` and the epsilon are not stored and keep
    /// T5's values (128, 1e-6).
    pub fn infer_config(&self) -> Result<T5Config> {
        let shape = |key: &str| -> Result<Vec<usize>> {
            self.tensors
                .get(key)
                .map(|tensor| tensor.shape.to_vec())
                .ok_or_else(|| {
                    self.unreadable(format!(
                        "cannot infer the architecture: no `{}{key}`",
                        self.key_prefix
                    ))
                })
        };
        let embedding = shape(SHARED).or_else(|_| shape(EMBED_TOKENS))?;
        let query = shape("encoder.block.0.layer.0.SelfAttention.q.weight")?;
        let table = shape(BIAS_TABLE)?;
        let gate = shape("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")?;
        let [vocab_size, d_model] = two(&embedding, SHARED, self)?;
        let [inner, _] = two(&query, "q.weight", self)?;
        let [num_buckets, num_heads] = two(&table, BIAS_TABLE, self)?;
        let [d_ff, _] = two(&gate, "wi_0.weight", self)?;
        let num_layers = self
            .tensors
            .keys()
            .filter_map(|key| {
                key.strip_prefix("encoder.block.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |last| last + 1);
        if num_heads == 0 || !inner.is_multiple_of(num_heads) {
            return Err(self.unreadable(format!(
                "the query width {inner} is not a multiple of the {num_heads} heads of the bias table"
            )));
        }
        let config = T5Config::new(
            vocab_size,
            d_model,
            inner / num_heads,
            num_heads,
            d_ff,
            num_layers,
        )
        .with_relative_attention_num_buckets(num_buckets);
        config.validate()?;
        Ok(config)
    }

    /// Every key `config` needs with its PyTorch shape, the embedding as `shared.weight`.
    fn expected(config: &T5Config) -> BTreeMap<String, Vec<usize>> {
        let (d_model, inner, d_ff) = (config.d_model, config.inner_dim(), config.d_ff);
        let mut keys = BTreeMap::new();
        keys.insert(SHARED.to_owned(), vec![config.vocab_size, d_model]);
        keys.insert(
            BIAS_TABLE.to_owned(),
            vec![config.relative_attention_num_buckets, config.num_heads],
        );
        keys.insert("encoder.final_layer_norm.weight".to_owned(), vec![d_model]);
        for layer in 0..config.num_layers {
            let block = format!("encoder.block.{layer}.layer");
            for projection in ["q", "k", "v"] {
                keys.insert(
                    format!("{block}.0.SelfAttention.{projection}.weight"),
                    vec![inner, d_model],
                );
            }
            keys.insert(
                format!("{block}.0.SelfAttention.o.weight"),
                vec![d_model, inner],
            );
            keys.insert(format!("{block}.0.layer_norm.weight"), vec![d_model]);
            keys.insert(
                format!("{block}.1.DenseReluDense.wi_0.weight"),
                vec![d_ff, d_model],
            );
            keys.insert(
                format!("{block}.1.DenseReluDense.wi_1.weight"),
                vec![d_ff, d_model],
            );
            keys.insert(
                format!("{block}.1.DenseReluDense.wo.weight"),
                vec![d_model, d_ff],
            );
            keys.insert(format!("{block}.1.layer_norm.weight"), vec![d_model]);
        }
        keys
    }

    /// Every missing, unexpected and mis-shaped key for `config`, with the file's prefix.
    fn problems(&self, config: &T5Config) -> Vec<WeightProblem> {
        let expected = Self::expected(config);
        let prefix = self.key_prefix;
        let mut problems = Vec::new();
        let stored = |key: &str| self.tensors.get(key).map(|tensor| tensor.shape.to_vec());
        for (key, shape) in &expected {
            let found = if key == SHARED {
                // Either name (or both) holds the embedding.
                let names: Vec<&str> = [SHARED, EMBED_TOKENS]
                    .into_iter()
                    .filter(|name| self.tensors.contains_key(*name))
                    .collect();
                if names.is_empty() {
                    problems.push(WeightProblem::missing(
                        format!("{prefix}{SHARED}"),
                        shape.clone(),
                    ));
                }
                for name in names {
                    let found = stored(name).unwrap_or_default();
                    if &found != shape {
                        problems.push(WeightProblem::mis_shaped(
                            format!("{prefix}{name}"),
                            shape.clone(),
                            found,
                        ));
                    }
                }
                continue;
            } else {
                stored(key)
            };
            match found {
                None => problems.push(WeightProblem::missing(
                    format!("{prefix}{key}"),
                    shape.clone(),
                )),
                Some(found) if &found != shape => problems.push(WeightProblem::mis_shaped(
                    format!("{prefix}{key}"),
                    shape.clone(),
                    found,
                )),
                Some(_) => {}
            }
        }
        for (key, tensor) in &self.tensors {
            if !expected.contains_key(key) && key != EMBED_TOKENS {
                problems.push(WeightProblem::unexpected(
                    format!("{prefix}{key}"),
                    tensor.shape.to_vec(),
                ));
            }
        }
        problems
    }

    /// Builds the encoder `config` describes from these weights on `device`, keeping their
    /// stored dtype (`cast` `None`) or casting them to `cast`; norm weights are kept in f32.
    ///
    /// Fails with [`Error::WeightMismatch`] listing every missing, unexpected or
    /// mis-shaped key before anything is loaded; with [`Error::InvalidArgument`] for f16
    /// (stored without a cast, or asked for), since T5-XXL's activations exceed f16's range
    /// (65504) and come out as inf/NaN, and for a dtype the device lacks.
    pub fn load(
        &self,
        config: &T5Config,
        device: &Device,
        cast: Option<FloatDType>,
    ) -> Result<T5Encoder> {
        config.validate()?;
        let problems = self.problems(config);
        if !problems.is_empty() {
            return Err(Error::WeightMismatch {
                path: self.path.display().to_string(),
                problems,
            });
        }
        let dtype = self.compute_dtype(cast)?;
        if !device.supports_dtype(DType::from(dtype)) {
            return Err(Error::invalid(
                "T5 weights dtype",
                format!("{dtype:?}"),
                format!("a dtype the device {device:?} supports: load with another `cast`"),
            ));
        }
        let linear = |key: String| -> Result<Linear> {
            // PyTorch stores `[out, in]`, burn's Linear `[in, out]`.
            let weight = self.tensor::<2>(&key, dtype, device)?.transpose();
            Ok(Linear {
                weight: Param::from_tensor(weight),
                bias: None,
            })
        };
        let norm = |key: String| -> Result<T5LayerNorm> {
            let weight = self.tensor::<1>(&key, FloatDType::F32, device)?;
            Ok(T5LayerNorm::from_weight(weight, config.layer_norm_epsilon))
        };
        let blocks = (0..config.num_layers)
            .map(|layer| {
                let prefix = format!("encoder.block.{layer}.layer");
                let attention =
                    |name: &str| linear(format!("{prefix}.0.SelfAttention.{name}.weight"));
                let dense = |name: &str| linear(format!("{prefix}.1.DenseReluDense.{name}.weight"));
                Ok(T5Block {
                    attention_norm: norm(format!("{prefix}.0.layer_norm.weight"))?,
                    attention: T5Attention {
                        q: attention("q")?,
                        k: attention("k")?,
                        v: attention("v")?,
                        o: attention("o")?,
                        num_heads: config.num_heads,
                    },
                    feed_forward_norm: norm(format!("{prefix}.1.layer_norm.weight"))?,
                    feed_forward: T5FeedForward {
                        wi_0: dense("wi_0")?,
                        wi_1: dense("wi_1")?,
                        wo: dense("wo")?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embedding = if self.tensors.contains_key(SHARED) {
            SHARED
        } else {
            EMBED_TOKENS
        };
        Ok(T5Encoder {
            embed_tokens: Param::from_tensor(self.tensor::<2>(embedding, dtype, device)?),
            position_bias: RelativePositionBias::from_table(
                self.tensor::<2>(BIAS_TABLE, dtype, device)?,
                config.relative_attention_max_distance,
            ),
            blocks,
            final_norm: norm("encoder.final_layer_norm.weight".to_owned())?,
            config: config.clone(),
        })
    }

    /// The dtype the encoder computes in: `cast`, or the stored dtype holding most
    /// elements (the others cast to it with a warning); never f16.
    fn compute_dtype(&self, cast: Option<FloatDType>) -> Result<FloatDType> {
        let stored = self.tensors.iter().map(|(key, tensor)| {
            (
                key.as_str(),
                tensor.dtype,
                tensor.shape.to_vec().iter().product::<usize>(),
            )
        });
        let (prevailing, others) = prevailing_dtype(stored)
            .ok_or_else(|| self.unreadable("no float tensors".to_owned()))?;
        let refuse_f16 = |value: String| {
            Error::invalid(
                "T5 weights dtype",
                value,
                "bf16 or f32: T5's activations exceed f16's range (65504) and turn to inf/NaN; \
                 load f16 files with `cast` Some(FloatDType::BF16) or Some(FloatDType::F32)",
            )
        };
        match cast {
            Some(FloatDType::F16) => Err(refuse_f16("F16 (asked for as `cast`)".to_owned())),
            Some(dtype) => Ok(dtype),
            None if prevailing == burn::tensor::DType::F16 => Err(refuse_f16(format!(
                "F16 (stored in {}) without a cast",
                self.path.display()
            ))),
            None => {
                if !others.is_empty() {
                    warn_cast(&self.path, prevailing, &others);
                }
                Ok(prevailing.into())
            }
        }
    }

    /// The stored tensor `key` on `device` in `dtype`.
    fn tensor<const D: usize>(
        &self,
        key: &str,
        dtype: FloatDType,
        device: &Device,
    ) -> Result<Tensor<D>> {
        let stored = &self.tensors[key];
        let data = bridge::to_data(stored)
            .map_err(|err| {
                self.unreadable(format!("cannot read `{}{key}`: {err}", self.key_prefix))
            })?
            .convert_dtype(dtype.into());
        Ok(Tensor::from_data(data, (device, DType::from(dtype))))
    }

    fn unreadable(&self, message: String) -> Error {
        Error::Checkpoint {
            path: self.path.display().to_string(),
            message,
        }
    }
}

/// A rank-2 shape as `[rows, columns]`.
fn two(shape: &[usize], key: &str, weights: &T5Weights) -> Result<[usize; 2]> {
    <[usize; 2]>::try_from(shape)
        .map_err(|_| weights.unreadable(format!("`{key}` has shape {shape:?}; expected two axes")))
}

/// A transformers folder: sharded through the index, or one file; a pipeline root descends
/// into `text_encoder_3/`.
fn read_folder(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
    let index = path.join(INDEX_FILE);
    let single = path.join(SINGLE_FILE);
    let nested = path.join("text_encoder_3");
    if index.is_file() {
        read_shards(path, &index)
    } else if single.is_file() {
        read_file(&single)
    } else if nested.is_dir() {
        read_folder(&nested)
    } else {
        Err(Error::Checkpoint {
            path: path.display().to_string(),
            message: format!(
                "expected a T5 encoder folder holding `{INDEX_FILE}` with its shards or \
                 `{SINGLE_FILE}`, or a diffusers pipeline folder with `text_encoder_3/`"
            ),
        })
    }
}

/// The encoder's tensors and the prefix they were stored under; or an error naming the
/// family the file looks like.
fn classify(
    path: &Path,
    tensors: BTreeMap<String, PackTensor>,
) -> Result<(BTreeMap<String, PackTensor>, &'static str)> {
    let has = |prefix: &str| tensors.keys().any(|key| key.starts_with(prefix));
    if has(&format!("{BUNDLED_PREFIX}encoder.block.")) {
        let encoder = tensors
            .into_iter()
            .filter_map(|(key, tensor)| {
                Some((key.strip_prefix(BUNDLED_PREFIX)?.to_owned(), tensor))
            })
            .collect();
        return Ok((encoder, BUNDLED_PREFIX));
    }
    if has("encoder.block.") && tensors.keys().any(|key| key.contains(".SelfAttention.")) {
        return Ok((tensors, ""));
    }
    let family = [
        ("text_model.", "a CLIP text encoder"),
        ("joint_blocks.", "an SD3-family MMDiT (official layout)"),
        (
            "transformer_blocks.",
            "a diffusers transformer (MMDiT or FLUX)",
        ),
        ("double_blocks.", "a FLUX transformer"),
        ("encoder.down.", "a VAE"),
        ("down_blocks.", "a diffusers UNet or VAE"),
        ("input_blocks.", "a UNet"),
    ]
    .into_iter()
    .find(|(marker, _)| tensors.keys().any(|key| key.contains(marker)))
    .map_or("not a T5 encoder", |(_, family)| family);
    let sample: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
    Err(Error::Checkpoint {
        path: path.display().to_string(),
        message: format!(
            "this looks like {family} (keys such as {sample:?}); expected a T5 encoder: \
             `encoder.block.N.layer.0.SelfAttention.*` (transformers, Stability AI's \
             t5xxl files) or `{BUNDLED_PREFIX}encoder.block.*`"
        ),
    })
}
