//! A client of verl-omni's latent reward protocol (diffusion-native reward models such
//! as DiNa-LRM): a safetensors body of one clean latent and its prompt embeddings, a JSON
//! raw score back.

use burn::prelude::*;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::client::check_scores;
use super::{RewardServerClient, RewardServerConfig};
use crate::error::{Error, Result, ServerFailure};
use crate::models::mmdit::MmditCondition;
use crate::reward::Reward;
use crate::tensor_util::host_values;

/// The protocol version the client sends and expects back.
pub const DRM_PROTOCOL_VERSION: &str = "1";

/// The request header carrying [`DRM_PROTOCOL_VERSION`].
pub const DRM_PROTOCOL_HEADER: &str = "x-drm-protocol-version";

/// A latent reward server (DiNa-LRM) as a [`Reward`] of an MMDiT's samples: it scores the
/// clean latents with the prompt embeddings they were generated from, so no VAE decodes
/// them.
///
/// The samples `[B, C·h·w]` are unflattened to `[B, C, h, w]`; every sample is one
/// request, as verl-omni sends them: a safetensors body of `latents` `[1, C, h, w]`,
/// `prompt_embeds` `[1, L, D]`, `pooled_prompt_embeds` `[1, D']` (all f32), the noise
/// level `u` `[1]` (f32) at which the model looks at the latent and, if set, the noise
/// seed `seeds` `[1]` (i64). The answer `{"protocol_version": "1", "raw_scores": [s]}`
/// gives the score `s · scale + bias`.
///
/// ```no_run
/// use flow_rl::reward::RewardSet;
/// use flow_rl::reward::http::{LatentReward, RewardServerConfig};
///
/// // SD3.5 at 512×512: 16 latent channels of 64×64; verl-omni's example maps s ↦ 0.1·s + 1.
/// let drm = LatentReward::new("http://127.0.0.1:8000/v1/score", [16, 64, 64], &RewardServerConfig::new())?
///     .with_score_map(0.1, 1.0);
/// let rewards = RewardSet::single(drm);
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LatentReward {
    client: RewardServerClient,
    latent_shape: [usize; 3],
    noise_level: f32,
    noise_seed: Option<i64>,
    scale: f32,
    bias: f32,
}

impl LatentReward {
    /// The reward of the server at `url` (the full endpoint, e.g.
    /// `http://host:8000/v1/score`) for latents of `[channels, height, width]`, with
    /// verl-omni's defaults: noise level 0.4, seed 0, raw scores as they are.
    pub fn new(url: &str, latent_shape: [usize; 3], config: &RewardServerConfig) -> Result<Self> {
        if latent_shape.contains(&0) {
            return Err(Error::invalid(
                "latent shape [channels, height, width]",
                format!("{latent_shape:?}"),
                "at least one channel of 1×1",
            ));
        }
        Ok(Self {
            client: config.init(url, "drm")?,
            latent_shape,
            noise_level: 0.4,
            noise_seed: Some(0),
            scale: 1.0,
            bias: 0.0,
        })
    }

    /// Sends noise level `level` in `[0, 1]` and the noise seed `seed` (`None`: the server
    /// draws the noise, as verl-omni's SD3.5 example does).
    pub fn with_noise(mut self, level: f32, seed: Option<i64>) -> Result<Self> {
        if !(0.0..=1.0).contains(&level) {
            return Err(Error::invalid(
                "DRM noise level",
                level,
                "a value in [0, 1]",
            ));
        }
        self.noise_level = level;
        self.noise_seed = seed;
        Ok(self)
    }

    /// Scores `raw · scale + bias`.
    pub fn with_score_map(mut self, scale: f32, bias: f32) -> Self {
        self.scale = scale;
        self.bias = bias;
        self
    }

    /// The safetensors request of one sample.
    fn request(&self, latent: &[f32], context: (&[f32], [usize; 2]), pooled: &[f32]) -> Vec<u8> {
        let [channels, height, width] = self.latent_shape;
        let (context, [tokens, width_context]) = context;
        // `TensorView`s borrow their bytes, which therefore live in these locals.
        let latent_bytes = f32_bytes(latent);
        let context_bytes = f32_bytes(context);
        let pooled_bytes = f32_bytes(pooled);
        let u_bytes = f32_bytes(&[self.noise_level]);
        let seed_bytes = self.noise_seed.map(i64::to_le_bytes);
        let mut tensors = vec![
            (
                "latents",
                TensorView::new(Dtype::F32, vec![1, channels, height, width], &latent_bytes),
            ),
            (
                "prompt_embeds",
                TensorView::new(Dtype::F32, vec![1, tokens, width_context], &context_bytes),
            ),
            (
                "pooled_prompt_embeds",
                TensorView::new(Dtype::F32, vec![1, pooled.len()], &pooled_bytes),
            ),
            ("u", TensorView::new(Dtype::F32, vec![1], &u_bytes)),
        ];
        if let Some(seed_bytes) = &seed_bytes {
            tensors.push((
                "seeds",
                TensorView::new(Dtype::I64, vec![1], &seed_bytes[..]),
            ));
        }
        let tensors = tensors
            .into_iter()
            .map(|(name, view)| (name, view.expect("shape and byte count agree")));
        safetensors::tensor::serialize(tensors, None).expect("f32 and i64 tensors serialise")
    }

    /// The score of one sample's answer.
    fn read_answer(&self, answer: &[u8]) -> Result<f32, ServerFailure> {
        let answer: serde_json::Value = serde_json::from_slice(answer)
            .map_err(|error| ServerFailure::Malformed(format!("not JSON: {error}")))?;
        let version = answer.get("protocol_version");
        if version.and_then(|v| v.as_str()) != Some(DRM_PROTOCOL_VERSION) {
            return Err(ServerFailure::Malformed(format!(
                "protocol_version {}, expected {DRM_PROTOCOL_VERSION:?}",
                version.map_or("missing".to_owned(), |v| v.to_string())
            )));
        }
        let Some(raw_scores) = answer.get("raw_scores").and_then(|s| s.as_array()) else {
            return Err(ServerFailure::Malformed("no \"raw_scores\" list".into()));
        };
        let raw = raw_scores
            .iter()
            .map(|score| {
                score.as_f64().ok_or_else(|| {
                    ServerFailure::Malformed(format!("raw score {score} is not a number"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let [raw] = check_scores(raw, 1)?[..] else {
            unreachable!("check_scores returns one score");
        };
        Ok(raw * self.scale + self.bias)
    }
}

/// Little-endian bytes of f32 values (safetensors' layout).
fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Reward<MmditCondition> for LatentReward {
    fn name(&self) -> &str {
        self.client.reward()
    }

    fn score(&self, samples: &Tensor<2>, conditions: &MmditCondition) -> Result<Vec<f32>> {
        let [batch, dims] = samples.dims();
        let [channels, height, width] = self.latent_shape;
        if dims != channels * height * width {
            return Err(Error::shape(
                "samples of the latent reward",
                format!(
                    "[B, {}] ({channels} channels of {height}×{width} latents)",
                    channels * height * width
                ),
                [batch, dims],
            ));
        }
        let [rows, tokens, context_width] = conditions.context.dims();
        let [pooled_rows, pooled_width] = conditions.pooled.dims();
        if rows != batch || pooled_rows != batch {
            return Err(Error::shape(
                "conditions of the latent reward",
                format!("{batch} rows, one per sample"),
                [rows, pooled_rows],
            ));
        }
        let latents = host_values(samples.clone())?;
        let context = host_values(conditions.context.clone())?;
        let pooled = host_values(conditions.pooled.clone())?;
        let mut scores = Vec::with_capacity(batch);
        for sample in 0..batch {
            let body = self.request(
                &latents[sample * dims..(sample + 1) * dims],
                (
                    &context
                        [sample * tokens * context_width..(sample + 1) * tokens * context_width],
                    [tokens, context_width],
                ),
                &pooled[sample * pooled_width..(sample + 1) * pooled_width],
            );
            let score = self.client.post(
                &body,
                &[
                    ("content-type", "application/octet-stream"),
                    (DRM_PROTOCOL_HEADER, DRM_PROTOCOL_VERSION),
                ],
                |answer| self.read_answer(answer),
            )?;
            scores.push(score);
        }
        Ok(scores)
    }
}
