//! A whole CLIP model: both towers and the logit scale.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::DType;

use super::model_config::ClipModelConfig;
use super::text::ClipTextModel;
use super::vision::ClipVisionModel;
use crate::error::Result;

/// CLIP's initial logit scale, `ln(1 / 0.07)`, as both transformers and OpenCLIP start it.
const INITIAL_LOG_SCALE: f32 = 2.659_26;

/// A CLIP model (transformers' `CLIPModel`, OpenCLIP's `CLIP`): a text tower, a vision tower
/// and the logit scale, stored as its logarithm.
///
/// ```
/// use burn::prelude::*;
/// use flow_rl::models::clip::{
///     ClipActivation, ClipModelConfig, ClipPooling, ClipTextConfig, ClipVisionConfig,
/// };
///
/// let device = Device::default();
/// let text = ClipTextConfig::new(16, 1, 2, 32, ClipActivation::Gelu, 8, ClipPooling::HighestId)
///     .with_vocab_size(100);
/// let vision = ClipVisionConfig::new(8, 16, 1, 2, 32, ClipActivation::Gelu, 8).with_image_size(16);
/// let model = ClipModelConfig::new(text, vision).init(&device)?;
/// let images = model.image_embeddings(Tensor::zeros([3, 3, 16, 16], &device))?;
/// let texts = model.text_embeddings(Tensor::from_ints([[98, 5, 99], [98, 99, 0]], &device))?;
/// assert_eq!((images.dims(), texts.dims()), ([3, 8], [2, 8]));
/// assert!((model.logit_scale() - 1.0 / 0.07).abs() < 1e-3);
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Module, Debug)]
pub struct ClipModel {
    /// The text tower, with its projection.
    pub text: ClipTextModel,
    /// The vision tower, with its projection.
    pub vision: ClipVisionModel,
    /// `ln(scale)` `[1]` (a 0-d tensor in both libraries' files).
    pub logit_scale: Param<Tensor<1>>,
}

impl ClipModel {
    /// The architecture.
    pub fn config(&self) -> ClipModelConfig {
        ClipModelConfig::new(self.text.config().clone(), self.vision.config().clone())
    }

    /// The projected image embeddings `[B, projection]` of preprocessed pixels
    /// `[B, 3, image_size, image_size]`, in f32 and not normalised (transformers'
    /// `get_image_features`, OpenCLIP's `encode_image`).
    ///
    /// Fails as [`ClipVisionModel::forward`] does.
    pub fn image_embeddings(&self, pixels: Tensor<4>) -> Result<Tensor<2>> {
        Ok(self.vision.forward(pixels)?.projected)
    }

    /// The projected text embeddings `[P, projection]` of token ids `[P, T]`, in f32 and not
    /// normalised (transformers' `get_text_features`, OpenCLIP's `encode_text`).
    ///
    /// Fails as [`ClipTextModel::forward`] does.
    pub fn text_embeddings(&self, ids: Tensor<2, Int>) -> Result<Tensor<2>> {
        let last = self.text.config().layers;
        Ok(self.text.forward(ids, last)?.projected)
    }

    /// The logit scale `exp(logit_scale)` that multiplies cosine similarities (100 for the
    /// released OpenAI and LAION models, whose training clamps it there).
    pub fn logit_scale(&self) -> f32 {
        self.logit_scale
            .val()
            .cast(DType::F32)
            .exp()
            .into_scalar::<f32>()
    }
}

impl ClipModelConfig {
    /// A model with this architecture, freshly initialised f32 weights and the initial
    /// logit scale `1 / 0.07` (load real ones with
    /// [`ClipModelWeights`](super::ClipModelWeights)).
    pub fn init(&self, device: &Device) -> Result<ClipModel> {
        self.validate()?;
        Ok(ClipModel {
            text: self.text.init(device)?,
            vision: self.vision.init(device)?,
            logit_scale: Param::from_tensor(Tensor::full([1], INITIAL_LOG_SCALE, device)),
        })
    }
}
