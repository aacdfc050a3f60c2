//! CLIP embeddings for the preference rewards: preprocessing, passes of a few images on the
//! device, L2 normalisation, and a cache of prompt embeddings.

use std::collections::HashMap;
use std::sync::Mutex;

use burn::prelude::*;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::models::clip::{ClipImageProcessor, ClipModel, ClipTokenizer};

/// Images per CLIP pass when a reward does not choose.
pub const DEFAULT_CLIP_BATCH_SIZE: usize = 16;

/// A CLIP model with its preprocessing and, for rewards that read prompts, its tokenizer.
pub(crate) struct ClipEmbedder {
    model: ClipModel,
    tokenizer: Option<ClipTokenizer>,
    processor: ClipImageProcessor,
    batch_size: usize,
    device: Device,
    /// Normalised text embeddings by prompt: a run scores the same prompts every rollout.
    prompts: Mutex<HashMap<String, Vec<f32>>>,
}

impl ClipEmbedder {
    /// Preprocesses to the model's own image size (224 for the released models).
    pub(crate) fn new(model: ClipModel, tokenizer: Option<ClipTokenizer>, device: &Device) -> Self {
        let side = model.vision.config().image_size;
        Self {
            model,
            tokenizer,
            processor: ClipImageProcessor::new()
                .with_size(side)
                .with_crop_size(side),
            batch_size: DEFAULT_CLIP_BATCH_SIZE,
            device: device.clone(),
            prompts: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn set_batch_size(&mut self, batch_size: usize) -> Result<()> {
        if batch_size == 0 {
            return Err(Error::invalid(
                "batch_size",
                batch_size,
                "at least one image per CLIP pass",
            ));
        }
        self.batch_size = batch_size;
        Ok(())
    }

    /// `exp(logit_scale)`.
    pub(crate) fn logit_scale(&self) -> f32 {
        self.model.logit_scale()
    }

    /// L2-normalised image embeddings, one row per image, on the host.
    pub(crate) fn image_embeddings(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let mut rows = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch_size) {
            let pixels = self.processor.preprocess(chunk, &self.device)?;
            let embeddings = self.model.image_embeddings(pixels)?;
            rows.extend(normalised_rows(embeddings)?);
        }
        Ok(rows)
    }

    /// L2-normalised text embeddings of `prompts`, one row per prompt; prompts seen before
    /// come from the cache, the others are encoded in passes of `batch_size`.
    pub(crate) fn text_embeddings(&self, prompts: &[String]) -> Result<Vec<Vec<f32>>> {
        let tokenizer = self
            .tokenizer
            .as_ref()
            .expect("rewards that read prompts are built with a tokenizer");
        let mut cache = self
            .prompts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut missing: Vec<&str> = prompts
            .iter()
            .filter(|prompt| !cache.contains_key(*prompt))
            .map(String::as_str)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        for chunk in missing.chunks(self.batch_size) {
            let ids = tokenizer.encode_batch(chunk)?.to_tensor(&self.device);
            let embeddings = normalised_rows(self.model.text_embeddings(ids)?)?;
            for (prompt, embedding) in chunk.iter().zip(embeddings) {
                cache.insert((*prompt).to_owned(), embedding);
            }
        }
        Ok(prompts.iter().map(|prompt| cache[prompt].clone()).collect())
    }
}

/// The rows of `[B, P]` divided by their L2 norms, on the host.
fn normalised_rows(embeddings: Tensor<2>) -> Result<Vec<Vec<f32>>> {
    let [_, width] = embeddings.dims();
    let values = crate::tensor_util::host_values(embeddings)?;
    Ok(values
        .chunks(width)
        .map(|row| {
            let norm = row.iter().map(|value| value * value).sum::<f32>().sqrt();
            row.iter().map(|value| value / norm).collect()
        })
        .collect())
}

/// Fails unless there is one prompt per image.
pub(crate) fn check_counts(images: &[RgbImage], prompts: &[String]) -> Result<()> {
    if images.len() != prompts.len() {
        return Err(Error::invalid(
            "prompts",
            format!("{} prompts", prompts.len()),
            format!("one prompt per image ({} images)", images.len()),
        ));
    }
    Ok(())
}
