//! The scorer as the trainer's reward: each final sample `[3·32·32]` is read back as an
//! image and judged against the prompt its condition carries.

use burn::prelude::*;
use flow_rl::models::mmdit::MmditCondition;
use flow_rl::reward::Reward;
use flow_rl::{Error, Result};

use crate::prompt::Prompt;
use crate::scorer::{Scorer, Verdict};
use crate::world::{IMAGE_SIZE, Image};

/// Which part of the scorer's [`Verdict`] a [`ShapesReward`] pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum RewardKind {
    /// GenEval's prompt-level answer: 1 when the image is judged correct, else 0.
    Accuracy,
    /// [`Verdict::count_score`]: shapes and their counts, colours aside, in `[0, 1]`.
    Count,
    /// [`Verdict::colour_score`]: colours bound to the right shapes, in `[0, 1]`.
    Colour,
}

impl RewardKind {
    /// The reward's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            RewardKind::Accuracy => "accuracy",
            RewardKind::Count => "count",
            RewardKind::Colour => "colour",
        }
    }

    /// The value of `verdict` this kind pays.
    pub fn value(self, verdict: &Verdict) -> f64 {
        match self {
            RewardKind::Accuracy => f64::from(u8::from(verdict.correct)),
            RewardKind::Count => verdict.count_score,
            RewardKind::Colour => verdict.colour_score,
        }
    }
}

/// A [`Reward`] of an MMDiT's final samples `[B, 3·32·32]` (channels first, `[-1, 1]`),
/// scored by the [`Scorer`] against the prompts of the conditions.
///
/// Fails for conditions without prompts, a prompt outside the grammar, samples of another
/// width, or a non-finite pixel.
#[derive(Debug, Clone)]
pub struct ShapesReward {
    kind: RewardKind,
    scorer: Scorer,
}

impl ShapesReward {
    /// The reward paying `kind` of the default scorer's verdict.
    pub fn new(kind: RewardKind) -> ShapesReward {
        ShapesReward {
            kind,
            scorer: Scorer::default(),
        }
    }
}

impl Reward<MmditCondition> for ShapesReward {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn score(&self, samples: &Tensor<2>, conditions: &MmditCondition) -> Result<Vec<f32>> {
        let prompts = conditions.prompts().ok_or_else(|| Error::InvalidArgument {
            name: format!("conditions of the {} reward", self.kind.name()),
            value: "conditions without prompts".into(),
            expected: "prompts attached (PromptEmbeddings::condition)".into(),
        })?;
        let [batch, dims] = samples.dims();
        if dims != 3 * IMAGE_SIZE * IMAGE_SIZE || prompts.len() != batch {
            return Err(Error::ShapeMismatch {
                name: "samples to score".into(),
                expected: format!(
                    "[{}, {}] (one 3×{IMAGE_SIZE}×{IMAGE_SIZE} image per prompt)",
                    prompts.len(),
                    3 * IMAGE_SIZE * IMAGE_SIZE
                ),
                found: format!("{:?}", [batch, dims]),
            });
        }
        let images =
            Image::batch_from_tensor(samples.clone().reshape([batch, 3, IMAGE_SIZE, IMAGE_SIZE]))?;
        images
            .iter()
            .zip(prompts)
            .map(|(image, text)| {
                let prompt = Prompt::parse(text)?;
                Ok(self.kind.value(&self.scorer.score(image, &prompt)) as f32)
            })
            .collect()
    }
}
