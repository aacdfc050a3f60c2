//! A client of UniRL's reward service: JSON `POST {url}/score` with base64 JPEGs and
//! prompts, scores back per reward and sub-metric.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use image::RgbImage;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::client::check_scores;
use super::{RewardServerClient, RewardServerConfig, check_prompt_count};
use crate::error::{Result, ServerFailure};
use crate::reward::ImageReward;
use crate::reward::jpeg::jpeg_bytes;

/// The JPEG quality UniRL's client sends images with.
pub const UNIRL_JPEG_QUALITY: u8 = 95;

/// One reward of a UniRL reward service (`pickscore`, `hpsv2`, `clip`, `imagereward`,
/// `ocr`, `geneval2`, …) as an [`ImageReward`].
///
/// Each call posts the whole batch to `{url}/score`: one request per image, with the
/// image as a base64 quality-95 JPEG and its prompt. A reward's answer may hold several
/// sub-metrics; the first one the server lists is used unless
/// [`with_sub_metric`](Self::with_sub_metric) names one. An error the service reports
/// for a sample, a missing score and a non-finite score are errors (UniRL's own client
/// may score such a sample 0; here a batch is scored completely or not at all).
///
/// ```no_run
/// use flow_rl::reward::ImageReward;
/// use flow_rl::reward::http::{RewardServerConfig, UnirlReward};
///
/// let pickscore = UnirlReward::new("http://127.0.0.1:8000", "pickscore", &RewardServerConfig::new())?;
/// let image = image::RgbImage::new(64, 64);
/// let scores = pickscore.score_images(&[image], &["a black square".to_owned()])?;
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct UnirlReward {
    client: RewardServerClient,
    reward: String,
    sub_metric: Option<String>,
}

impl UnirlReward {
    /// The reward `reward` of the service at `url` (e.g. `http://host:8000`; requests go
    /// to `{url}/score`).
    pub fn new(url: &str, reward: &str, config: &RewardServerConfig) -> Result<Self> {
        let endpoint = format!("{}/score", url.trim().trim_end_matches('/'));
        Ok(Self {
            client: config.init(&endpoint, reward)?,
            reward: reward.to_owned(),
            sub_metric: None,
        })
    }

    /// Uses the sub-metric `name` of the reward's answer instead of the first one.
    pub fn with_sub_metric(mut self, name: impl Into<String>) -> Self {
        self.sub_metric = Some(name.into());
        self
    }

    /// Reads one answer: `results[i][reward][sub_metric]` for every sample i.
    fn read_answer(&self, answer: &[u8], batch: usize) -> Result<Vec<f32>, ServerFailure> {
        let answer: ScoreAnswer = serde_json::from_slice(answer)
            .map_err(|error| ServerFailure::Malformed(format!("not a score answer: {error}")))?;
        if answer.results.len() != batch {
            return Err(ServerFailure::WrongCount {
                expected: batch,
                found: answer.results.len(),
            });
        }
        let mut scores = Vec::with_capacity(batch);
        for (sample, result) in answer.results.iter().enumerate() {
            let Some(metrics) = result.get(&self.reward) else {
                let message = answer
                    .errors
                    .get(sample)
                    .and_then(|errors| errors.get(&self.reward))
                    .map(|message| match message {
                        serde_json::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    });
                return Err(match message {
                    Some(message) => ServerFailure::SampleError { sample, message },
                    None => ServerFailure::Malformed(format!(
                        "no score and no error for sample {sample}"
                    )),
                });
            };
            let value = match &self.sub_metric {
                Some(name) => metrics.0.iter().find(|(metric, _)| metric == name),
                None => metrics.0.first(),
            };
            let Some((_, value)) = value else {
                let listed: Vec<&str> = metrics.0.iter().map(|(name, _)| name.as_str()).collect();
                return Err(ServerFailure::Malformed(format!(
                    "sample {sample} has no sub-metric {:?} (it has {listed:?})",
                    self.sub_metric.as_deref().unwrap_or("(any)")
                )));
            };
            let score = value.as_f64().ok_or_else(|| {
                ServerFailure::Malformed(format!(
                    "the score of sample {sample} is {value}, not a number"
                ))
            })?;
            scores.push(score);
        }
        check_scores(scores, batch)
    }
}

/// The body of `POST /score`.
#[derive(Serialize)]
struct ScoreRequest<'a> {
    requests: Vec<SampleRequest<'a>>,
}

/// One image to score.
#[derive(Serialize)]
struct SampleRequest<'a> {
    history: [HistoryTurn<'a>; 1],
    required_rewards: [&'a str; 1],
    metadata: Option<()>,
}

/// A prompt and its image.
#[derive(Serialize)]
struct HistoryTurn<'a> {
    text: &'a str,
    image_b64: String,
}

/// The answer: per sample, the scores of each reward by sub-metric, and the rewards
/// that failed with their messages.
#[derive(Deserialize)]
struct ScoreAnswer {
    results: Vec<HashMap<String, OrderedMetrics>>,
    #[serde(default)]
    errors: Vec<HashMap<String, serde_json::Value>>,
}

/// A reward's sub-metrics in the order the server wrote them ("the first" is the one
/// UniRL uses).
struct OrderedMetrics(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for OrderedMetrics {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = OrderedMetrics;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of sub-metric scores")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMetrics, A::Error> {
                let mut metrics = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    metrics.push(entry);
                }
                Ok(OrderedMetrics(metrics))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

impl ImageReward for UnirlReward {
    fn name(&self) -> &str {
        &self.reward
    }

    fn score_images(&self, images: &[RgbImage], prompts: &[String]) -> Result<Vec<f32>> {
        check_prompt_count(&self.reward, images.len(), prompts.len())?;
        let requests = images
            .iter()
            .zip(prompts)
            .map(|(image, prompt)| {
                Ok(SampleRequest {
                    history: [HistoryTurn {
                        text: prompt,
                        image_b64: BASE64.encode(jpeg_bytes(image, UNIRL_JPEG_QUALITY)?),
                    }],
                    required_rewards: [&self.reward],
                    metadata: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let body = serde_json::to_vec(&ScoreRequest { requests })
            .expect("a score request serialises to JSON");
        self.client
            .post(&body, &[("content-type", "application/json")], |answer| {
                self.read_answer(answer, images.len())
            })
    }
}
