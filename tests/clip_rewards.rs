//! The in-process CLIP rewards end to end, from 8-bit images and prompts, against flow_grpo's
//! formulas on transformers and open_clip (scripts/clip_reward_fixture.py): PickScore and
//! CLIPScore on the tiny transformers `CLIPModel`, HPSv2 on the tiny open_clip model, the
//! aesthetic score through a random head of the published layout.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use common::relative_error;
use flow_rl::models::aesthetic::AestheticWeights;
use flow_rl::models::clip::{
    ClipActivation, ClipModelConfig, ClipModelWeights, ClipPooling, ClipTextConfig, ClipTokenizer,
    ClipVisionConfig,
};
use flow_rl::reward::{AestheticReward, ClipPreference, ClipPreferenceReward, ImageReward};
use image::RgbImage;

/// The same weights through a different order of float operations (and our preprocessing,
/// which equals PIL's pixel for pixel).
const TOLERANCE: f32 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Case {
    images: Vec<RgbImage>,
    prompts: Vec<String>,
    expected: serde_json::Value,
}

impl Case {
    fn load() -> Self {
        let text = std::fs::read_to_string(fixtures().join("clip_rewards/expected.json")).unwrap();
        let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
        let strings = |key: &str| -> Vec<String> {
            expected[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|value| value.as_str().unwrap().to_owned())
                .collect()
        };
        let images = strings("images")
            .iter()
            .map(|name| {
                let path = fixtures().join(format!("clip_preprocess/inputs/{name}.png"));
                image::open(path).unwrap().to_rgb8()
            })
            .collect();
        Self {
            images,
            prompts: strings("prompts"),
            expected,
        }
    }

    fn scores(&self, reward: &str) -> Vec<f32> {
        self.expected[reward]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_f64().unwrap() as f32)
            .collect()
    }

    fn check(&self, reward: &dyn ImageReward) {
        // Twice: the second call reads the prompt embeddings from the cache.
        for _ in 0..2 {
            let ours = reward.score_images(&self.images, &self.prompts).unwrap();
            let error = relative_error(&ours, &self.scores(reward.name()));
            eprintln!("{}: {error:e}", reward.name());
            assert!(error < TOLERANCE, "{}: {error:e}", reward.name());
        }
    }
}

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_folder(fixtures().join("clip/clip_l/tokenizer")).unwrap()
}

#[test]
fn pickscore_and_clipscore_equal_flow_grpo_on_transformers() {
    let case = Case::load();
    for preference in [ClipPreference::PickScore, ClipPreference::ClipScore] {
        let reward = ClipPreferenceReward::load(
            preference,
            fixtures().join("clip_model/hf"),
            fixtures().join("clip/clip_l/tokenizer"),
            None,
            &Device::default(),
        )
        .unwrap()
        .with_batch_size(2)
        .unwrap();
        case.check(&reward);
    }
}

#[test]
fn hpsv2_equals_open_clip_from_the_pickled_checkpoint() {
    let case = Case::load();
    let device = Device::default();
    // The tiny model's 10-wide heads are no shape a checkpoint reveals: give its config.
    let config = ClipModelConfig::new(
        ClipTextConfig::new(
            20,
            2,
            4,
            80,
            ClipActivation::Gelu,
            16,
            ClipPooling::HighestId,
        )
        .with_vocab_size(634),
        ClipVisionConfig::new(8, 40, 2, 4, 120, ClipActivation::Gelu, 16).with_image_size(32),
    );
    let weights = ClipModelWeights::open(fixtures().join("clip_model/open_clip.pt")).unwrap();
    let model = weights
        .load_into(config.init(&device).unwrap(), None)
        .unwrap();
    let reward = ClipPreferenceReward::new(ClipPreference::Hpsv2, model, tokenizer(), &device);
    case.check(&reward);
}

#[test]
fn the_aesthetic_score_equals_the_predictor_on_clip_image_features() {
    let case = Case::load();
    let reward = AestheticReward::load(
        fixtures().join("clip_model/hf"),
        fixtures().join("clip_rewards/aesthetic.pth"),
        None,
        &Device::default(),
    )
    .unwrap()
    .with_batch_size(3)
    .unwrap();
    case.check(&reward);
}

#[test]
fn bad_input_gets_named_errors() {
    let case = Case::load();
    let device = Device::default();
    let reward = ClipPreferenceReward::load(
        ClipPreference::PickScore,
        fixtures().join("clip_model/hf"),
        fixtures().join("clip/clip_l/tokenizer"),
        None,
        &device,
    )
    .unwrap();
    let error = reward
        .score_images(&case.images, &case.prompts[..2])
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("one prompt per image (5 images)"),
        "{error}"
    );
    let error = reward.with_batch_size(0).err().unwrap();
    assert!(error.to_string().contains("batch_size"), "{error}");

    // A head whose input is not the CLIP's projection width (the 8-wide fixture head on a
    // 12-wide CLIP).
    let model = ClipModelWeights::open(fixtures().join("clip_model/hf"))
        .unwrap()
        .load(None, &device)
        .unwrap();
    let head = AestheticWeights::open(fixtures().join("aesthetic/mlp.pth"))
        .unwrap()
        .load(&device)
        .unwrap();
    let error = AestheticReward::new(model, head, &device).err().unwrap();
    assert!(error.to_string().contains("projection width 12"), "{error}");

    // A text encoder alone is no whole CLIP.
    let error = ClipPreferenceReward::load(
        ClipPreference::ClipScore,
        fixtures().join("clip/clip_l/text_encoder"),
        fixtures().join("clip/clip_l/tokenizer"),
        None,
        &device,
    )
    .err()
    .unwrap();
    assert!(error.to_string().to_lowercase().contains("text"), "{error}");
}
