//! Pre-training the base text-to-image model: the [`mmdit_config`] MMDiT trained from
//! scratch by rectified flow in pixel space on freshly drawn scenes of the training prompts.
//!
//! Each step draws `batch_size` prompts uniformly from the training prompts and one random
//! scene of each (sizes and places at random), from the run's seeded [`Rng`], so no two
//! steps see the same images. Images enter as `[B, 3·32·32]`: channels first, values in
//! `[-1, 1]`. The conditions are the frozen [`TextEncoder`]'s `context` `[B, 16, 32]` and
//! `pooled` `[B, 32]`.
//!
//! The prompts are split once for all runs by [`prompt_split`]: of the 219 prompts of
//! [`PromptFamily::All`], [`EVAL_FRACTION`] (55) are held out with seed [`SPLIT_SEED`] and
//! never trained on, so that evaluation measures generalisation to unseen combinations.

use burn::prelude::*;
use flow_rl::models::mmdit::{Mmdit, PromptEmbeddings};
use flow_rl::models::{FlowMatchingConfig, pretrain_flow_matching};
use flow_rl::{Error, Result, Rng};

use crate::prompt::{Prompt, PromptFamily, PromptSplit};
use crate::text::{TextEncoder, mmdit_config};
use crate::world::{IMAGE_SIZE, Image};

/// The fraction of [`PromptFamily::All`] held out for evaluation.
pub const EVAL_FRACTION: f64 = 0.25;
/// The seed of the training/evaluation split.
pub const SPLIT_SEED: u64 = 0;
/// The seed of the frozen text encoder the base model is trained with.
pub const TEXT_ENCODER_SEED: u64 = 0;
/// Values per image as the MMDiT policy takes them: 3 channels of 32×32.
pub const IMAGE_DIMS: usize = 3 * IMAGE_SIZE * IMAGE_SIZE;

/// The fixed split of every prompt into training prompts (164) and unseen evaluation
/// prompts (55).
pub fn prompt_split() -> Result<PromptSplit> {
    PromptSplit::new(&PromptFamily::All.prompts(), EVAL_FRACTION, SPLIT_SEED)
}

/// Trains an MMDiT on `device` (which must be an autodiff device) on scenes of `prompts`,
/// conditioned by `encoder` (built on the same device), for `config.steps` AdamW steps of
/// `config.batch_size` scenes at `config.learning_rate_at(step)`.
///
/// The model is `initial` (a model to train further, on `device` with or without autodiff) or a fresh
/// [`mmdit_config`] MMDiT whose weights are drawn from the device's generator seeded with
/// `config.seed`. Either way
/// prompts, scenes, σ and noise come from one [`Rng`] seeded with it, so the same
/// configuration and start give the same model. `progress(step, loss)` is called after every step.
/// Returns the model (without autodiff) and the mean loss of the last 10% of steps.
///
/// Fails for an empty prompt list, a device without autodiff, zero steps or batch size, or
/// a non-finite loss.
pub fn pretrain(
    config: &FlowMatchingConfig,
    prompts: &[Prompt],
    encoder: &TextEncoder,
    device: &Device,
    initial: Option<Mmdit>,
    progress: impl FnMut(usize, f64),
) -> Result<(Mmdit, f64)> {
    if prompts.is_empty() {
        return Err(Error::InvalidArgument {
            name: "training prompts".into(),
            value: "an empty list".into(),
            expected: "at least one prompt".into(),
        });
    }
    if !device.is_autodiff() {
        return Err(Error::InvalidArgument {
            name: "pre-training device".into(),
            value: format!("{device:?}"),
            expected: "an autodiff device (Device::autodiff)".into(),
        });
    }
    let texts: Vec<String> = prompts.iter().map(ToString::to_string).collect();
    let embeddings = encoder.encode(&texts)?;
    let model = match initial {
        // A model without autodiff (one `pretrain` returned, say) would never get a gradient.
        Some(model) if model.devices().iter().any(|on| !on.is_autodiff()) => model.train(),
        Some(model) => model,
        None => {
            device.seed(config.seed);
            mmdit_config()
                .init(device)?
                .with_latent_size(IMAGE_SIZE, IMAGE_SIZE)
        }
    };
    let (model, tail_loss) = pretrain_flow_matching(
        model,
        config,
        |batch, rng| training_batch(prompts, &embeddings, batch, rng, device),
        progress,
    )?;
    Ok((model.valid(), tail_loss))
}

/// `batch` scenes of prompts drawn uniformly from `prompts` as flattened images
/// `[batch, 3·32·32]` in `[-1, 1]`, and their prompts' conditions.
fn training_batch(
    prompts: &[Prompt],
    embeddings: &PromptEmbeddings,
    batch: usize,
    rng: &mut Rng,
    device: &Device,
) -> (Tensor<2>, flow_rl::models::mmdit::MmditCondition) {
    let chosen: Vec<usize> = (0..batch).map(|_| rng.below(prompts.len())).collect();
    let images: Vec<Image> = chosen
        .iter()
        .map(|&index| prompts[index].sample_scene(rng).render())
        .collect();
    let pixels = Image::batch_to_tensor(&images, device)
        .expect("pretrain_flow_matching asks for at least one sample")
        .reshape([batch, IMAGE_DIMS]);
    let condition = embeddings
        .select(&chosen)
        .expect("indices are drawn below the prompt count")
        .condition();
    (pixels, condition)
}
