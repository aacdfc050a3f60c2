//! Evaluating a text-to-image model of the world: deterministic ODE samples for each prompt
//! from fixed noise, scored by the [`Scorer`], and a PNG grid of them.

use std::path::Path;

use burn::config::Config;

use flow_rl::io::write_atomically;
use flow_rl::kernel::Ode;
use flow_rl::models::mmdit::Mmdit;
use flow_rl::rollout::{RolloutConfig, RolloutPlan, rollout};
use flow_rl::schedule::SigmaScheduleConfig;
use flow_rl::{Error, Result, Rng};

use crate::pretrain::IMAGE_DIMS;
use crate::prompt::Prompt;
use crate::scorer::{Scorer, Verdict};
use crate::text::TextEncoder;
use crate::world::{IMAGE_SIZE, Image, MAX_OBJECTS};

/// How samples are drawn for evaluation.
#[derive(Config, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Euler steps of the ODE from σ = 1 to σ = 0.
    #[config(default = 20)]
    pub steps: usize,
    /// The σ schedule's shift (1: uniform steps in σ).
    #[config(default = 1.0)]
    pub shift: f64,
    /// Samples per prompt.
    #[config(default = 4)]
    pub samples_per_prompt: usize,
    /// The seed of the initial noise.
    #[config(default = 0)]
    pub seed: u64,
    /// Samples per forward pass (memory only: the samples do not depend on it).
    #[config(default = 64)]
    pub batch_size: usize,
}

/// Samples `config.samples_per_prompt` images of every prompt with `model` by the ODE,
/// prompt-major (`[prompt 0 sample 0, prompt 0 sample 1, ..]`).
///
/// The initial noise of all samples is drawn at once from an [`Rng`] seeded with
/// `config.seed`, so the same model, prompts and configuration give the same images bit for
/// bit. `encoder` must be the one the model was trained with, on the model's device.
/// Fails for no prompts, zero samples, steps or batch size, or a bad shift.
pub fn sample_images(
    model: &Mmdit,
    encoder: &TextEncoder,
    prompts: &[Prompt],
    config: &SamplingConfig,
) -> Result<Vec<Image>> {
    if config.samples_per_prompt == 0 {
        return Err(Error::InvalidArgument {
            name: "samples per prompt".into(),
            value: "0".into(),
            expected: "at least 1".into(),
        });
    }
    let texts: Vec<String> = prompts.iter().map(ToString::to_string).collect();
    let condition = encoder.encode(&texts)?.condition();
    let schedule = SigmaScheduleConfig::new()
        .with_steps(config.steps)
        .with_shift(config.shift)
        .init()?;
    let rollout_config = RolloutConfig::new()
        .with_group_size(config.samples_per_prompt)
        .with_batch_size(Some(config.batch_size));
    let result = rollout(
        model,
        &condition,
        &rollout_config,
        &RolloutPlan {
            schedule: &schedule,
            kernel: &Ode,
            sde_steps: &[],
            latent_dims: IMAGE_DIMS,
        },
        &mut Rng::seed_from(config.seed),
    )?;
    let count = result.samples.dims()[0];
    Image::batch_from_tensor(result.samples.reshape([count, 3, IMAGE_SIZE, IMAGE_SIZE]))
}

/// Samples of prompts with the scorer's verdicts, prompt-major.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The prompts, in the order sampled.
    pub prompts: Vec<Prompt>,
    /// Samples per prompt.
    pub samples_per_prompt: usize,
    /// Every sample, prompt-major.
    pub images: Vec<Image>,
    /// The verdict on each sample against its prompt.
    pub verdicts: Vec<Verdict>,
}

impl Evaluation {
    /// Samples as [`sample_images`] does and scores each against its prompt.
    pub fn run(
        model: &Mmdit,
        encoder: &TextEncoder,
        prompts: &[Prompt],
        config: &SamplingConfig,
        scorer: &Scorer,
    ) -> Result<Evaluation> {
        let images = sample_images(model, encoder, prompts, config)?;
        let verdicts = images
            .iter()
            .enumerate()
            .map(|(index, image)| scorer.score(image, &prompts[index / config.samples_per_prompt]))
            .collect();
        Ok(Evaluation {
            prompts: prompts.to_vec(),
            samples_per_prompt: config.samples_per_prompt,
            images,
            verdicts,
        })
    }

    /// GenEval's prompt accuracy: the fraction of samples judged correct, in `[0, 1]`.
    pub fn accuracy(&self) -> f64 {
        self.mean(|verdict| f64::from(u8::from(verdict.correct)))
    }

    /// The mean [`Verdict::count_score`].
    pub fn mean_count_score(&self) -> f64 {
        self.mean(|verdict| verdict.count_score)
    }

    /// The mean [`Verdict::colour_score`].
    pub fn mean_colour_score(&self) -> f64 {
        self.mean(|verdict| verdict.colour_score)
    }

    /// Correct samples and all samples of the prompts of 1, 2 and 3 objects.
    pub fn correct_by_object_count(&self) -> [(usize, usize); MAX_OBJECTS] {
        let mut counts = [(0, 0); MAX_OBJECTS];
        for (index, verdict) in self.verdicts.iter().enumerate() {
            let objects = self.prompts[index / self.samples_per_prompt].object_count();
            counts[objects - 1].0 += usize::from(verdict.correct);
            counts[objects - 1].1 += 1;
        }
        counts
    }

    /// The number of correct samples of prompt `index`.
    pub fn correct_of_prompt(&self, index: usize) -> usize {
        let start = index * self.samples_per_prompt;
        self.verdicts[start..start + self.samples_per_prompt]
            .iter()
            .filter(|verdict| verdict.correct)
            .count()
    }

    fn mean(&self, value: impl Fn(&Verdict) -> f64) -> f64 {
        self.verdicts.iter().map(value).sum::<f64>() / self.verdicts.len() as f64
    }

    /// Writes the samples as a PNG grid at `path`, one row per prompt, each tile framed in
    /// green when correct and in red otherwise, and the rows' prompts with their correct
    /// counts beside it (same name, `.txt`).
    pub fn write_grid(&self, path: &Path, scale: u32) -> Result<()> {
        if scale == 0 {
            return Err(Error::InvalidArgument {
                name: "grid scale".into(),
                value: "0".into(),
                expected: "at least 1 pixel per image pixel".into(),
            });
        }
        let (tile, frame, gap) = (IMAGE_SIZE as u32 * scale, 2, 2);
        let cell = tile + 2 * frame + gap;
        let columns = self.samples_per_prompt as u32;
        let rows = self.prompts.len() as u32;
        let mut canvas = image::RgbImage::from_pixel(
            columns * cell + gap,
            rows * cell + gap,
            image::Rgb([128, 128, 128]),
        );
        for (index, (sample, verdict)) in self.images.iter().zip(&self.verdicts).enumerate() {
            let (row, column) = (index as u32 / columns.max(1), index as u32 % columns.max(1));
            let (x, y) = (gap + column * cell, gap + row * cell);
            let colour = if verdict.correct {
                image::Rgb([40, 200, 40])
            } else {
                image::Rgb([200, 40, 40])
            };
            let framed = image::RgbImage::from_pixel(tile + 2 * frame, tile + 2 * frame, colour);
            image::imageops::replace(&mut canvas, &framed, x.into(), y.into());
            image::imageops::replace(
                &mut canvas,
                &sample.to_rgb8(scale),
                (x + frame).into(),
                (y + frame).into(),
            );
        }
        let mut png = std::io::Cursor::new(Vec::new());
        canvas
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|err| Error::io(path, std::io::Error::other(err)))?;
        write_atomically(path, png.get_ref())?;
        let listing: String = self
            .prompts
            .iter()
            .enumerate()
            .map(|(index, prompt)| {
                format!(
                    "{prompt}: {}/{} correct\n",
                    self.correct_of_prompt(index),
                    self.samples_per_prompt
                )
            })
            .collect();
        write_atomically(&path.with_extension("txt"), listing.as_bytes())
    }
}
