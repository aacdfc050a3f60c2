//! `--reward NAME[=WEIGHT]`: the rewards a run trains on.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use burn::prelude::*;

use flow_rl::advantage::RewardCombination;
use flow_rl::models::mmdit::MmditCondition;
use flow_rl::reward::http::{
    GenevalReward, LatentReward, RewardServerConfig, UnirlReward, load_geneval_metadata,
};
use flow_rl::reward::{
    AestheticReward, ClipPreference, ClipPreferenceReward, DecodedReward, ImageReward, JpegSize,
    RewardSet,
};
use flow_rl::{Error, Result};

use crate::Args;
use crate::setup::Run;

/// One `--reward`: what scores the samples, and its weight in the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardSpec {
    /// The reward.
    pub kind: RewardKind,
    /// Its weight (default 1).
    pub weight: f64,
}

/// The rewards the example knows.
#[derive(Debug, Clone, PartialEq)]
pub enum RewardKind {
    /// A small JPEG is better: −kB/500 of a quality-95 JPEG (flow_grpo's scale).
    JpegCompressibility,
    /// A large JPEG is better: kB of a quality-95 JPEG (DDPO's).
    JpegIncompressibility,
    /// A UniRL reward service at `url`, reward `reward` (pickscore, hpsv2, clip, ...).
    Unirl { url: String, reward: String },
    /// flow_grpo's GenEval server at `url`.
    Geneval { url: String },
    /// verl-omni's latent-reward protocol (DiNa-LRM) at `url`: no VAE decode.
    Latent { url: String },
    /// A CLIP preference score run in process, from the whole-CLIP weights at `weights`.
    Clip {
        preference: ClipPreference,
        weights: PathBuf,
    },
    /// The LAION aesthetic score: the predictor's `.pth` at `predictor`, on the CLIP
    /// ViT-L/14 of `--aesthetic-clip`.
    Aesthetic { predictor: PathBuf },
}

impl FromStr for RewardSpec {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        // A trailing `=number` is the weight; an `=` inside a URL is not.
        let (name, weight) = match text.rsplit_once('=') {
            Some((name, weight)) if weight.parse::<f64>().is_ok() => {
                (name, weight.parse::<f64>().expect("checked"))
            }
            _ => (text, 1.0),
        };
        if !weight.is_finite() {
            return Err(format!(
                "the weight of {name:?} is {weight}; expected a finite number"
            ));
        }
        let kind = match name.split_once(':') {
            None if name == "jpeg" => RewardKind::JpegCompressibility,
            None if name == "jpeg-incompressibility" => RewardKind::JpegIncompressibility,
            Some(("unirl", rest)) => match rest.rsplit_once(':') {
                // A REWARD of digits alone is the URL's port: the name is missing.
                Some((url, reward))
                    if url.contains("://") && reward.chars().any(|c| !c.is_ascii_digit()) =>
                {
                    RewardKind::Unirl {
                        url: url.to_owned(),
                        reward: reward.to_owned(),
                    }
                }
                _ => {
                    return Err(format!(
                        "{name:?}: expected unirl:URL:REWARD, e.g. unirl:http://127.0.0.1:8000:pickscore"
                    ));
                }
            },
            Some(("geneval", url)) if url.contains("://") => RewardKind::Geneval {
                url: url.to_owned(),
            },
            Some(("latent", url)) if url.contains("://") => RewardKind::Latent {
                url: url.to_owned(),
            },
            Some((kind, path)) if !path.is_empty() && CLIP_REWARDS.contains(&kind) => {
                let preference = match kind {
                    "pickscore" => ClipPreference::PickScore,
                    "clipscore" => ClipPreference::ClipScore,
                    _ => ClipPreference::Hpsv2,
                };
                RewardKind::Clip {
                    preference,
                    weights: path.into(),
                }
            }
            Some(("aesthetic", path)) if !path.is_empty() => RewardKind::Aesthetic {
                predictor: path.into(),
            },
            _ => {
                return Err(format!(
                    "unknown reward {name:?}; expected jpeg, jpeg-incompressibility, \
                     unirl:URL:REWARD, geneval:URL, latent:URL, pickscore:PATH, \
                     clipscore:PATH, hpsv2:PATH or aesthetic:PATH, optionally =WEIGHT"
                ));
            }
        };
        Ok(RewardSpec { kind, weight })
    }
}

/// The in-process CLIP rewards, `NAME:PATH`.
const CLIP_REWARDS: [&str; 3] = ["pickscore", "clipscore", "hpsv2"];

/// The rewards of `args` (JPEG compressibility when none is given), weighted and summed; the
/// in-process CLIP rewards run on `device`.
pub fn reward_set(args: &Args, run: &Run, device: &Device) -> Result<RewardSet<MmditCondition>> {
    let default = [RewardSpec {
        kind: RewardKind::JpegCompressibility,
        weight: 1.0,
    }];
    let specs = if args.rewards.is_empty() {
        &default[..]
    } else {
        &args.rewards[..]
    };
    let server = RewardServerConfig::new()
        .with_timeout_secs(args.reward_timeout)
        .with_retries(args.reward_retries);
    let mut set = RewardSet::new(RewardCombination::WeightedSum);
    for spec in specs {
        let decoded =
            |reward: Box<dyn ImageReward>| DecodedReward::new(reward, Arc::clone(&run.decoder));
        set = match &spec.kind {
            RewardKind::JpegCompressibility => {
                set.with(decoded(Box::new(JpegSize::compressibility())), spec.weight)
            }
            RewardKind::JpegIncompressibility => set.with(
                decoded(Box::new(JpegSize::incompressibility())),
                spec.weight,
            ),
            RewardKind::Unirl { url, reward } => set.with(
                decoded(Box::new(UnirlReward::new(url, reward, &server)?)),
                spec.weight,
            ),
            RewardKind::Geneval { url } => {
                let path = args.geneval_metadata.as_ref().ok_or_else(|| {
                    Error::InvalidArgument {
                        name: "--geneval-metadata".into(),
                        value: "none".into(),
                        expected: format!(
                            "GenEval's evaluation_metadata.jsonl, which the geneval:{url} reward \
                         sends with each image"
                        ),
                    }
                })?;
                let metadata = load_geneval_metadata(path)?;
                set.with(
                    decoded(Box::new(GenevalReward::new(url, metadata, &server)?)),
                    spec.weight,
                )
            }
            RewardKind::Latent { url } => {
                let [channels, height, width] = run.latent;
                set.with(
                    LatentReward::new(url, [channels, height, width], &server)?,
                    spec.weight,
                )
            }
            RewardKind::Clip {
                preference,
                weights,
            } => {
                let tokenizer = clip_tokenizer(args, weights)?;
                let reward =
                    ClipPreferenceReward::load(*preference, weights, &tokenizer, None, device)?
                        .with_batch_size(args.decode_batch_size)?;
                set.with(decoded(Box::new(reward)), spec.weight)
            }
            RewardKind::Aesthetic { predictor } => {
                let clip = args
                    .aesthetic_clip
                    .as_ref()
                    .ok_or_else(|| Error::InvalidArgument {
                        name: "--aesthetic-clip".into(),
                        value: "none".into(),
                        expected: "OpenAI's CLIP ViT-L/14 (a transformers clip-vit-large-patch14 \
                                   folder), which the aesthetic predictor reads the images with"
                            .into(),
                    })?;
                let reward = AestheticReward::load(clip, predictor, None, device)?
                    .with_batch_size(args.decode_batch_size)?;
                set.with(decoded(Box::new(reward)), spec.weight)
            }
        };
    }
    Ok(set)
}

/// The CLIP tokenizer of a CLIP reward: `--clip-tokenizer`, else the reward's weights folder
/// when it holds one, else the `tokenizer/` of the `--weights` diffusers folder (SD3.5's
/// CLIP-L tokenizer: every CLIP here shares its BPE vocabulary).
fn clip_tokenizer(args: &Args, weights: &Path) -> Result<PathBuf> {
    let has_tokenizer = |folder: &Path| {
        folder.join("tokenizer.json").is_file() || folder.join("vocab.json").is_file()
    };
    if let Some(folder) = &args.clip_tokenizer {
        return Ok(folder.clone());
    }
    if weights.is_dir() && has_tokenizer(weights) {
        return Ok(weights.to_owned());
    }
    match &args.weights {
        Some(model) if has_tokenizer(&model.join("tokenizer")) => Ok(model.join("tokenizer")),
        _ => Err(Error::InvalidArgument {
            name: "--clip-tokenizer".into(),
            value: "none".into(),
            expected: format!(
                "a CLIP tokenizer folder for {}: it has none, and --weights has no tokenizer/",
                weights.display()
            ),
        }),
    }
}
