//! The LAION aesthetic predictor's head: an MLP from an L2-normalised CLIP ViT-L/14 image
//! embedding to a score (christophschuhmann/improved-aesthetic-predictor,
//! `sac+logos+ava1-l14-linearMSE.pth`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::tensor::DType;

use crate::error::{Error, Result, WeightProblem};
use crate::models::safetensors_files::{apply_pytorch_tensors, read_weights_file};

/// The predictor's layer widths: input (CLIP ViT-L/14's 768-wide projection), then the hidden
/// layers; the last layer outputs one score.
///
/// ```
/// use flow_rl::models::aesthetic::AestheticMlpConfig;
///
/// let config = AestheticMlpConfig::new(); // the published predictor
/// assert_eq!((config.input, config.hidden.as_slice()), (768, &[1024, 128, 64, 16][..]));
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct AestheticMlpConfig {
    /// Width of the image embedding.
    #[config(default = 768)]
    pub input: usize,
    /// Widths of the hidden layers, in order.
    #[config(default = "vec![1024, 128, 64, 16]")]
    pub hidden: Vec<usize>,
}

impl AestheticMlpConfig {
    /// A predictor with random weights; fails on a zero width.
    pub fn init(&self, device: &Device) -> Result<AestheticMlp> {
        let widths = self.widths();
        if let Some(zero) = widths.iter().position(|&width| width == 0) {
            return Err(Error::invalid(
                "aesthetic MLP width",
                format!("0 (layer {zero} of {widths:?})"),
                "positive widths",
            ));
        }
        let layers = widths
            .windows(2)
            .map(|pair| LinearConfig::new(pair[0], pair[1]).init(device))
            .collect();
        Ok(AestheticMlp { layers })
    }

    /// `[input, hidden..., 1]`.
    fn widths(&self) -> Vec<usize> {
        let mut widths = vec![self.input];
        widths.extend(&self.hidden);
        widths.push(1);
        widths
    }
}

/// The aesthetic predictor: linear layers without activations (the published model's
/// dropouts are identities at inference), `[B, input] → [B]`.
#[derive(Module, Debug)]
pub struct AestheticMlp {
    /// The layers, input first; the last has one output.
    pub layers: Vec<Linear>,
}

impl AestheticMlp {
    /// Scores `[B]` of image embeddings `[B, input]`; the caller L2-normalises them, as the
    /// predictor was trained on normalised embeddings. Computed in f32.
    pub fn forward(&self, embeddings: Tensor<2>) -> Result<Tensor<1>> {
        let input = self.layers[0].weight.val().dims()[0];
        let [rows, width] = embeddings.dims();
        if width != input {
            return Err(Error::shape(
                "aesthetic MLP input",
                format!("[B, {input}]"),
                [rows, width],
            ));
        }
        let scores = self
            .layers
            .iter()
            .fold(embeddings.cast(DType::F32), |hidden, layer| {
                layer.forward(hidden)
            });
        Ok(scores.reshape([rows]))
    }
}

/// The predictor's weights from a PyTorch `.pth` (`torch.save` of the `nn.Sequential`'s state
/// dict: `layers.{0,2,4,6,7}.{weight,bias}`, the gaps being dropouts) or a safetensors file of
/// the same keys; the layer indices need not be contiguous.
///
/// ```no_run
/// use burn::prelude::*;
/// use flow_rl::models::aesthetic::AestheticWeights;
///
/// let weights = AestheticWeights::open("sac+logos+ava1-l14-linearMSE.pth")?;
/// let mlp = weights.load(&Device::default())?;
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AestheticWeights {
    path: PathBuf,
    /// `(weight, bias)` per linear layer, in index order.
    layers: Vec<(PackTensor, PackTensor)>,
}

impl AestheticWeights {
    /// Reads the file; fails when it holds anything but `layers.N.weight`/`layers.N.bias`
    /// pairs, listing every odd key.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let tensors = read_weights_file(path)?;
        let mut by_index: BTreeMap<usize, (Option<PackTensor>, Option<PackTensor>)> =
            BTreeMap::new();
        let mut problems = Vec::new();
        for (key, tensor) in tensors {
            let parsed = key
                .strip_prefix("layers.")
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(index, name)| Some((index.parse::<usize>().ok()?, name)));
            match parsed {
                Some((index, "weight")) => by_index.entry(index).or_default().0 = Some(tensor),
                Some((index, "bias")) => by_index.entry(index).or_default().1 = Some(tensor),
                _ => problems.push(WeightProblem::unexpected(key, tensor.shape.to_vec())),
            }
        }
        let mut layers = Vec::new();
        for (index, pair) in by_index {
            match pair {
                (Some(weight), Some(bias)) => layers.push((weight, bias)),
                (Some(_), None) => problems.push(WeightProblem::missing(
                    format!("layers.{index}.bias"),
                    vec![],
                )),
                (None, _) => problems.push(WeightProblem::missing(
                    format!("layers.{index}.weight"),
                    vec![],
                )),
            }
        }
        if layers.is_empty() && problems.is_empty() {
            problems.push(WeightProblem::missing("layers.0.weight", vec![]));
        }
        if !problems.is_empty() {
            return Err(Error::WeightMismatch {
                path: path.display().to_string(),
                problems,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            layers,
        })
    }

    /// The widths, from the weights' shapes (PyTorch's `[out, in]`). Fails unless each
    /// layer takes the previous one's output and the last gives one score.
    pub fn infer_config(&self) -> Result<AestheticMlpConfig> {
        let shapes: Vec<Vec<usize>> = self
            .layers
            .iter()
            .map(|(weight, _)| weight.shape.to_vec())
            .collect();
        let mut problems = Vec::new();
        for (layer, shape) in shapes.iter().enumerate() {
            let expected_in = match layer {
                0 => shape.get(1).copied().unwrap_or(0),
                _ => shapes[layer - 1][0],
            };
            let expected_out = if layer + 1 == shapes.len() {
                1
            } else {
                shape[0]
            };
            if shape.len() != 2 || shape[1] != expected_in || shape[0] != expected_out {
                problems.push(WeightProblem::mis_shaped(
                    format!("linear layer {layer} weight"),
                    vec![expected_out, expected_in],
                    shape.clone(),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(Error::WeightMismatch {
                path: self.path.display().to_string(),
                problems,
            });
        }
        Ok(AestheticMlpConfig {
            input: shapes[0][1],
            hidden: shapes[..shapes.len() - 1]
                .iter()
                .map(|shape| shape[0])
                .collect(),
        })
    }

    /// The predictor in f32 on `device`.
    pub fn load(&self, device: &Device) -> Result<AestheticMlp> {
        let config = self.infer_config()?;
        let model = config.init(device)?;
        let tensors = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(layer, (weight, bias))| {
                [
                    renamed(weight, format!("layers.{layer}.weight")),
                    renamed(bias, format!("layers.{layer}.bias")),
                ]
            })
            .collect();
        apply_pytorch_tensors(
            model,
            tensors,
            Some(burn::tensor::FloatDType::F32),
            &self.path,
        )
    }
}

/// `tensor` named as the module parameter `key` it fills.
fn renamed(tensor: &PackTensor, key: String) -> PackTensor {
    let mut tensor = tensor.clone();
    tensor.name = key;
    tensor
}
