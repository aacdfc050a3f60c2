//! A client of flow_grpo's GenEval server: a pickled dict of JPEG bytes and each
//! prompt's GenEval metadata, a pickled dict of scores back.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use image::RgbImage;
use serde_pickle::{DeOptions, HashableValue, SerOptions, Value};

use super::client::check_scores;
use super::{RewardServerClient, RewardServerConfig, check_prompt_count};
use crate::error::{Error, Result, ServerFailure};
use crate::reward::ImageReward;
use crate::reward::jpeg::jpeg_bytes;

/// The JPEG quality flow_grpo sends GenEval images with (PIL's default).
const GENEVAL_JPEG_QUALITY: u8 = 75;

/// Which of the GenEval server's per-image values is the reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GenevalScore {
    /// `scores`: the fraction of the prompt's requirements the image meets (partial
    /// credit); flow_grpo trains on it.
    #[default]
    Score,
    /// `strict_rewards`: 1 when every requirement is met, else 0.
    Strict,
    /// `rewards`: 1 when the image passes GenEval's original (non-strict) evaluation,
    /// else 0; the server evaluates it only when asked (`only_strict` false).
    Correct,
}

impl GenevalScore {
    /// The answer's key holding this value.
    fn key(self) -> &'static str {
        match self {
            GenevalScore::Score => "scores",
            GenevalScore::Strict => "strict_rewards",
            GenevalScore::Correct => "rewards",
        }
    }
}

/// The prompt → metadata map of GenEval's `evaluation_metadata.jsonl` (one JSON object
/// a line, each with its `prompt`, `tag` and `include` requirements).
///
/// A line that is not a JSON object with a string `prompt` is an error naming the line.
pub fn load_geneval_metadata(path: impl AsRef<Path>) -> Result<HashMap<String, serde_json::Value>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|error| Error::io(path, error))?;
    let mut metadata = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: serde_json::Value = serde_json::from_str(line).map_err(|error| {
            Error::invalid(
                format!("line {} of {}", index + 1, path.display()),
                error,
                "a JSON object of GenEval metadata",
            )
        })?;
        let Some(prompt) = entry.get("prompt").and_then(|p| p.as_str()) else {
            return Err(Error::invalid(
                format!("line {} of {}", index + 1, path.display()),
                "an entry without a string \"prompt\"",
                "a JSON object of GenEval metadata with its prompt",
            ));
        };
        metadata.insert(prompt.to_owned(), entry);
    }
    Ok(metadata)
}

/// flow_grpo's GenEval reward as an [`ImageReward`]: the images go to a GenEval server
/// (e.g. `http://127.0.0.1:18085`) with each prompt's metadata, which says what the
/// image must show.
///
/// Every prompt must have metadata (see [`load_geneval_metadata`]); a prompt without is
/// an error naming it, raised before anything is sent.
///
/// ```no_run
/// use flow_rl::reward::http::{GenevalReward, GenevalScore, RewardServerConfig, load_geneval_metadata};
///
/// let metadata = load_geneval_metadata("geneval/evaluation_metadata.jsonl")?;
/// let geneval = GenevalReward::new("http://127.0.0.1:18085", metadata, &RewardServerConfig::new())?
///     .with_score(GenevalScore::Strict);
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct GenevalReward {
    client: RewardServerClient,
    metadata: HashMap<String, serde_json::Value>,
    score: GenevalScore,
}

impl GenevalReward {
    /// The reward of the GenEval server at `url`, with the metadata of every prompt it
    /// will see; it returns [`GenevalScore::Score`] until
    /// [`with_score`](Self::with_score) says otherwise.
    pub fn new(
        url: &str,
        metadata: HashMap<String, serde_json::Value>,
        config: &RewardServerConfig,
    ) -> Result<Self> {
        Ok(Self {
            client: config.init(url, "geneval")?,
            metadata,
            score: GenevalScore::default(),
        })
    }

    /// Returns `score` instead.
    pub fn with_score(mut self, score: GenevalScore) -> Self {
        self.score = score;
        self
    }

    /// The pickled request: `{"images": [JPEG bytes], "meta_datas": [dict],
    /// "only_strict": bool}`.
    fn request(&self, images: &[RgbImage], prompts: &[String]) -> Result<Vec<u8>> {
        let metadata = prompts
            .iter()
            .map(|prompt| {
                self.metadata
                    .get(prompt)
                    .map(json_to_pickle)
                    .ok_or_else(|| {
                        Error::invalid(
                            "GenEval metadata of prompt",
                            format!("{prompt:?}"),
                            "an entry for every prompt (a line of evaluation_metadata.jsonl \
                             with this prompt)",
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let jpegs = images
            .iter()
            .map(|image| Ok(Value::Bytes(jpeg_bytes(image, GENEVAL_JPEG_QUALITY)?)))
            .collect::<Result<Vec<_>>>()?;
        let request = Value::Dict(BTreeMap::from([
            (key("images"), Value::List(jpegs)),
            (key("meta_datas"), Value::List(metadata)),
            (
                key("only_strict"),
                Value::Bool(self.score != GenevalScore::Correct),
            ),
        ]));
        Ok(serde_pickle::value_to_vec(&request, SerOptions::new())
            .expect("a dict of bytes, lists and JSON values pickles"))
    }

    /// The chosen value of every image from the pickled answer.
    fn read_answer(&self, answer: &[u8], batch: usize) -> Result<Vec<f32>, ServerFailure> {
        let answer = serde_pickle::value_from_slice(answer, DeOptions::new())
            .map_err(|error| ServerFailure::Malformed(format!("not a pickle: {error}")))?;
        let Value::Dict(entries) = answer else {
            return Err(ServerFailure::Malformed(
                "the unpickled answer is not a dict".into(),
            ));
        };
        let name = self.score.key();
        let values = match entries.get(&key(name)) {
            Some(Value::List(values) | Value::Tuple(values)) => values,
            Some(_) => {
                return Err(ServerFailure::Malformed(format!("{name:?} is not a list")));
            }
            None => {
                return Err(ServerFailure::Malformed(format!(
                    "no {name:?} in the answer"
                )));
            }
        };
        let scores = values
            .iter()
            .enumerate()
            .map(|(sample, value)| match value {
                Value::F64(score) => Ok(*score),
                Value::I64(score) => Ok(*score as f64),
                Value::Bool(passed) => Ok(f64::from(u8::from(*passed))),
                other => Err(ServerFailure::Malformed(format!(
                    "{name}[{sample}] is {other:?}, not a number"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_scores(scores, batch)
    }
}

impl ImageReward for GenevalReward {
    fn name(&self) -> &str {
        "geneval"
    }

    fn score_images(&self, images: &[RgbImage], prompts: &[String]) -> Result<Vec<f32>> {
        check_prompt_count("geneval", images.len(), prompts.len())?;
        let body = self.request(images, prompts)?;
        self.client.post(
            &body,
            &[("content-type", "application/octet-stream")],
            |answer| self.read_answer(answer, images.len()),
        )
    }
}

fn key(name: &str) -> HashableValue {
    HashableValue::String(name.to_owned())
}

/// A JSON value as the Python value `json.loads` makes of it.
fn json_to_pickle(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::None,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::I64(i),
            None => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::List(items.iter().map(json_to_pickle).collect()),
        serde_json::Value::Object(fields) => Value::Dict(
            fields
                .iter()
                .map(|(name, field)| (key(name), json_to_pickle(field)))
                .collect(),
        ),
    }
}
