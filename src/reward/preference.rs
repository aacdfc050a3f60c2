//! CLIP preference rewards of image–prompt pairs: PickScore, CLIPScore and HPSv2.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::FloatDType;
use image::RgbImage;

use super::ImageReward;
use super::clip_embedder::{ClipEmbedder, check_counts};
use crate::error::{Error, Result};
use crate::models::clip::{ClipModel, ClipModelWeights, ClipTokenizer};

/// flow_grpo divides PickScore's `logit_scale · cos` by 26 to bring it near `[0, 1]`.
pub const PICKSCORE_DIVISOR: f32 = 26.0;
/// flow_grpo's CLIP scorer divides `logit_scale · cos` by 30.
pub const CLIPSCORE_DIVISOR: f32 = 30.0;

/// Which score a [`ClipPreferenceReward`] computes from the cosine similarity `cos` of the
/// L2-normalised image and prompt embeddings, as flow_grpo's scorers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipPreference {
    /// PickScore (yuvalkirstain/PickScore_v1, a fine-tuned CLIP ViT-H/14):
    /// `logit_scale · cos / 26` (flow_grpo's `pickscore_scorer.py`; `logit_scale` = 100 in
    /// the released weights, so scores lie near 0.8–0.9 for good images).
    PickScore,
    /// CLIPScore with OpenAI's CLIP ViT-L/14: `logit_scale · cos / 30` (flow_grpo's
    /// `clip_scorer.py`, `logits_per_image / 30`).
    ClipScore,
    /// HPSv2 / HPSv2.1 (OpenCLIP ViT-H/14 fine-tuned on human preferences): `cos`, the
    /// diagonal of `image_features @ text_features.T` of the normalised features (flow_grpo's
    /// `hpsv2_scorer.py`, HPSv2's own `score`).
    Hpsv2,
}

impl ClipPreference {
    /// The reward's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::PickScore => "pickscore",
            Self::ClipScore => "clipscore",
            Self::Hpsv2 => "hpsv2",
        }
    }

    /// The score of a pair with cosine similarity `cos` under a model whose logit scale is
    /// `logit_scale` (`exp` of the stored value).
    pub fn score(self, cos: f32, logit_scale: f32) -> f32 {
        match self {
            Self::PickScore => logit_scale * cos / PICKSCORE_DIVISOR,
            Self::ClipScore => logit_scale * cos / CLIPSCORE_DIVISOR,
            Self::Hpsv2 => cos,
        }
    }
}

/// A CLIP preference score of images and their prompts, run in process on the training
/// device: images are preprocessed as transformers' `CLIPImageProcessor` does
/// ([`ClipImageProcessor`](crate::models::clip::ClipImageProcessor)) and embedded in passes
/// of `batch_size`; each prompt's embedding is computed once and cached.
///
/// ```no_run
/// use burn::prelude::*;
/// use flow_rl::reward::{ClipPreference, ClipPreferenceReward, ImageReward};
///
/// let device = Device::default();
/// // PickScore_v1's weights; the tokenizer of laion/CLIP-ViT-H-14 (any CLIP BPE folder).
/// let pickscore = ClipPreferenceReward::load(
///     ClipPreference::PickScore,
///     "PickScore_v1",
///     "CLIP-ViT-H-14-laion2B-s32B-b79K",
///     None,
///     &device,
/// )?;
/// let images = vec![image::RgbImage::new(512, 512)];
/// let scores = pickscore.score_images(&images, &["a red cube".to_owned()])?;
/// # Ok::<(), flow_rl::Error>(())
/// ```
pub struct ClipPreferenceReward {
    preference: ClipPreference,
    embedder: ClipEmbedder,
}

impl ClipPreferenceReward {
    /// The reward of a loaded model and its tokenizer.
    pub fn new(
        preference: ClipPreference,
        model: ClipModel,
        tokenizer: ClipTokenizer,
        device: &Device,
    ) -> Self {
        Self {
            preference,
            embedder: ClipEmbedder::new(model, Some(tokenizer), device),
        }
    }

    /// Loads the whole CLIP model at `weights` (transformers' `CLIPModel` folder or file, or
    /// OpenCLIP's layout; see [`ClipModelWeights`]) in its stored dtype or `dtype`, and the
    /// CLIP tokenizer folder `tokenizer` (`tokenizer.json`, or `vocab.json` + `merges.txt`:
    /// every model here shares OpenAI's BPE vocabulary, so SD3.5's `tokenizer/` works too).
    pub fn load(
        preference: ClipPreference,
        weights: impl AsRef<Path>,
        tokenizer: impl AsRef<Path>,
        dtype: Option<FloatDType>,
        device: &Device,
    ) -> Result<Self> {
        let model = ClipModelWeights::open(weights)?.load(dtype, device)?;
        let tokenizer = ClipTokenizer::from_folder(tokenizer)?;
        Ok(Self::new(preference, model, tokenizer, device))
    }

    /// Embeds at most `batch_size` images (or prompts) per pass (default
    /// [`DEFAULT_CLIP_BATCH_SIZE`](super::DEFAULT_CLIP_BATCH_SIZE)); fails on 0.
    pub fn with_batch_size(mut self, batch_size: usize) -> Result<Self> {
        self.embedder.set_batch_size(batch_size)?;
        Ok(self)
    }

    /// Which score this is.
    pub fn preference(&self) -> ClipPreference {
        self.preference
    }
}

impl ImageReward for ClipPreferenceReward {
    fn name(&self) -> &str {
        self.preference.name()
    }

    /// Fails when the prompts do not match the images one to one, and with
    /// [`Error::NonFinite`] naming the image whose score is not finite.
    fn score_images(&self, images: &[RgbImage], prompts: &[String]) -> Result<Vec<f32>> {
        check_counts(images, prompts)?;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let image_rows = self.embedder.image_embeddings(images)?;
        let text_rows = self.embedder.text_embeddings(prompts)?;
        let logit_scale = self.embedder.logit_scale();
        image_rows
            .iter()
            .zip(&text_rows)
            .enumerate()
            .map(|(index, (image, text))| {
                let cos: f32 = image.iter().zip(text).map(|(a, b)| a * b).sum();
                let score = self.preference.score(cos, logit_scale);
                finite_score(self.preference.name(), index, &prompts[index], score)
            })
            .collect()
    }
}

/// `score`, or [`Error::NonFinite`] naming the reward, the image and its prompt.
pub(crate) fn finite_score(reward: &str, index: usize, prompt: &str, score: f32) -> Result<f32> {
    if score.is_finite() {
        return Ok(score);
    }
    Err(Error::NonFinite {
        what: format!("{reward} score of image {index} (prompt {prompt:?})"),
        index,
        value: f64::from(score),
    })
}
