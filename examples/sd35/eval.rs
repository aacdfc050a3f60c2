//! The evaluation: the first `--eval-prompts` prompts sampled with the ODE from fixed noise,
//! decoded into a PNG grid, and scored with the training rewards.

use std::collections::BTreeMap;
use std::path::Path;

use flow_rl::io::write_atomically;
use flow_rl::kernel::Ode;
use flow_rl::metrics::JsonLinesWriter;
use flow_rl::models::mmdit::{Mmdit, MmditCondition};
use flow_rl::reward::RewardSet;
use flow_rl::rollout::{RolloutConfig, RolloutPlan, rollout};
use flow_rl::trainer::Trainer;
use flow_rl::{Error, Result, Rng};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::Args;
use crate::setup::Run;

/// The evaluation records, under `--out`.
pub const EVAL_FILE: &str = "eval.jsonl";
/// The grids' folder, under `--out`.
pub const EVAL_FOLDER: &str = "eval";
/// Seed of the evaluation noise, the same at every evaluation so that grids compare.
const EVAL_NOISE_SEED: u64 = 0x5D35_E7A1;

/// One evaluation: after how many steps, and each reward's mean over the evaluation images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalRecord {
    /// Training steps done.
    pub step: usize,
    /// Mean score of each reward, by name.
    pub rewards: BTreeMap<String, f64>,
}

/// Samples, decodes and scores the evaluation prompts with the trainer's current policy, and
/// writes `eval/step_NNNNNN.png` (with the prompts, row by row, in `.txt`) and a line of
/// `eval.jsonl`.
pub fn evaluate(
    args: &Args,
    run: &Run,
    trainer: &Trainer<Mmdit>,
    rewards: &RewardSet<MmditCondition>,
) -> Result<EvalRecord> {
    let count = args.eval_prompts.min(run.embeddings.len());
    let prompts = run.embeddings.select(&(0..count).collect::<Vec<_>>())?;
    let conditions = prompts.condition();
    let schedule = trainer.config().schedule.init()?;
    let plan = RolloutPlan {
        schedule: &schedule,
        kernel: &Ode,
        sde_steps: &[],
        latent_dims: run.latent_dims(),
    };
    let config = RolloutConfig::new()
        .with_group_size(1)
        .with_batch_size(args.rollout_batch_size);
    let sampled = rollout(
        trainer.policy(),
        &conditions,
        &config,
        &plan,
        &mut Rng::seed_from(EVAL_NOISE_SEED),
    )?;
    let images = run.decoder.images(&sampled.samples)?;
    let scores = rewards.score(&sampled.samples, &sampled.conditions)?;

    let step = trainer.steps_done();
    let folder = args.out.join(EVAL_FOLDER);
    std::fs::create_dir_all(&folder).map_err(|err| Error::io(&folder, err))?;
    let stem = folder.join(format!("step_{step:06}"));
    write_png(&stem.with_extension("png"), &grid(&images))?;
    write_atomically(
        &stem.with_extension("txt"),
        prompts.prompts.join("\n").as_bytes(),
    )?;
    let record = EvalRecord {
        step,
        rewards: scores
            .names
            .iter()
            .zip(&scores.values)
            .map(|(name, values)| {
                let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
                (name.clone(), mean)
            })
            .collect(),
    };
    JsonLinesWriter::append(args.out.join(EVAL_FILE))?.write(&record)?;
    Ok(record)
}

/// The images side by side, as square a grid as their count allows, row-major.
fn grid(images: &[RgbImage]) -> RgbImage {
    let columns = (images.len() as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (images.len() as u32).div_ceil(columns);
    let (width, height) = images.first().map_or((1, 1), |image| image.dimensions());
    let mut canvas = RgbImage::new(columns * width, rows * height);
    for (index, image) in images.iter().enumerate() {
        let index = index as u32;
        let (x, y) = ((index % columns) * width, (index / columns) * height);
        image::imageops::replace(&mut canvas, image, i64::from(x), i64::from(y));
    }
    canvas
}

fn write_png(path: &Path, image: &RgbImage) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|err| Error::io(path, std::io::Error::other(err)))?;
    write_atomically(path, bytes.get_ref())
}
