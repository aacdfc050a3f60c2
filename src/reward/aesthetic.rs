//! The LAION aesthetic score: CLIP ViT-L/14 image embeddings, L2-normalised, through the
//! aesthetic predictor's MLP.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::FloatDType;
use image::RgbImage;

use super::ImageReward;
use super::clip_embedder::{ClipEmbedder, check_counts};
use super::preference::finite_score;
use crate::error::{Error, Result};
use crate::models::aesthetic::{AestheticMlp, AestheticWeights};
use crate::models::clip::{ClipModel, ClipModelWeights};

/// The aesthetic score of each image (prompts are not read), as flow_grpo's
/// `aesthetic_scorer.py` computes it: OpenAI CLIP ViT-L/14's `get_image_features`,
/// L2-normalised, through `sac+logos+ava1-l14-linearMSE`'s MLP (scores near 1–10).
///
/// ```no_run
/// use burn::prelude::*;
/// use flow_rl::reward::{AestheticReward, ImageReward};
///
/// let device = Device::default();
/// let aesthetic = AestheticReward::load(
///     "clip-vit-large-patch14",
///     "sac+logos+ava1-l14-linearMSE.pth",
///     None,
///     &device,
/// )?;
/// let images = vec![image::RgbImage::new(512, 512)];
/// let scores = aesthetic.score_images(&images, &[String::new()])?;
/// # Ok::<(), flow_rl::Error>(())
/// ```
pub struct AestheticReward {
    embedder: ClipEmbedder,
    mlp: AestheticMlp,
    device: Device,
}

impl AestheticReward {
    /// The reward of a loaded CLIP and predictor. Fails when the predictor does not take the
    /// CLIP's projection width.
    pub fn new(model: ClipModel, mlp: AestheticMlp, device: &Device) -> Result<Self> {
        let projection = model.config().projection();
        let input = mlp.layers[0].weight.val().dims()[0];
        if input != projection {
            return Err(Error::invalid(
                "aesthetic predictor input width",
                input,
                format!("the CLIP model's projection width {projection}"),
            ));
        }
        Ok(Self {
            embedder: ClipEmbedder::new(model, None, device),
            mlp: mlp.to_device(device),
            device: device.clone(),
        })
    }

    /// Loads the whole CLIP model at `clip` (OpenAI's `clip-vit-large-patch14`) in its stored
    /// dtype or `dtype`, and the predictor's `.pth` or safetensors file `mlp`.
    pub fn load(
        clip: impl AsRef<Path>,
        mlp: impl AsRef<Path>,
        dtype: Option<FloatDType>,
        device: &Device,
    ) -> Result<Self> {
        let model = ClipModelWeights::open(clip)?.load(dtype, device)?;
        let mlp = AestheticWeights::open(mlp)?.load(device)?;
        Self::new(model, mlp, device)
    }

    /// Embeds at most `batch_size` images per pass; fails on 0.
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        self.embedder.set_batch_size(batch_size)?;
        Ok(self)
    }
}

impl ImageReward for AestheticReward {
    fn name(&self) -> &str {
        "aesthetic"
    }

    fn score_images(&self, images: &[RgbImage], prompts: &[String]) -> Result<Vec<f32>> {
        check_counts(images, prompts)?;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.embedder.image_embeddings(images)?;
        let width = rows[0].len();
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        let embeddings =
            Tensor::<2>::from_data(TensorData::new(flat, [images.len(), width]), &self.device);
        let scores = crate::tensor_util::host_values(self.mlp.forward(embeddings)?)?;
        scores
            .into_iter()
            .enumerate()
            .map(|(index, score)| finite_score("aesthetic", index, &prompts[index], score))
            .collect()
    }
}
