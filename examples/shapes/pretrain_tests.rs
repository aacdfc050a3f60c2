//! Tests of pre-training, the base model's file and evaluation.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use flow_rl::models::FlowMatchingConfig;
use flow_rl::models::mmdit::Mmdit;
use flow_rl::policy::FlowPolicy;
use flow_rl::{Error, Rng};

use crate::checkpoint::{BaseInfo, load_base, save_base};
use crate::evaluate::{Evaluation, SamplingConfig, sample_images};
use crate::pretrain::{IMAGE_DIMS, TEXT_ENCODER_SEED, pretrain, prompt_split};
use crate::prompt::{Prompt, PromptFamily};
use crate::scorer::Scorer;
use crate::text::TextEncoder;
use crate::world::{IMAGE_SIZE, Image};

/// The committed base model.
fn committed_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shapes/base.bpk")
}

fn host(tensor: Tensor<2>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

/// Four training scenes with their conditions, fixed noise and σ = 0.2, 0.4, 0.6, 0.8:
/// the noisy images `[4, 3072]`, σ, the velocity targets and the condition.
fn fixed_batch(
    device: &Device,
) -> (
    Tensor<2>,
    Tensor<1>,
    Tensor<2>,
    flow_rl::models::mmdit::MmditCondition,
) {
    let prompts: Vec<Prompt> = prompt_split().unwrap().train[..4].to_vec();
    let mut rng = Rng::seed_from(99);
    let images: Vec<Image> = prompts
        .iter()
        .map(|prompt| prompt.sample_scene(&mut rng).render())
        .collect();
    let clean = Image::batch_to_tensor(&images, device)
        .unwrap()
        .reshape([4, IMAGE_DIMS]);
    let noise = rng.normal_tensor([4, IMAGE_DIMS], device);
    let sigma = Tensor::<1>::from_floats([0.2, 0.4, 0.6, 0.8], device);
    let weight = sigma.clone().unsqueeze_dim::<2>(1);
    let noisy = clean.clone() * (weight.clone().neg() + 1.0) + noise.clone() * weight;
    let texts: Vec<String> = prompts.iter().map(ToString::to_string).collect();
    let condition = TextEncoder::new(TEXT_ENCODER_SEED, device)
        .unwrap()
        .encode(&texts)
        .unwrap()
        .condition();
    (noisy, sigma, noise - clean, condition)
}

/// The rectified-flow loss of `model` on [`fixed_batch`].
fn fixed_batch_loss(model: &Mmdit) -> f64 {
    let device = Device::default();
    let (noisy, sigma, target, condition) = fixed_batch(&device);
    let error = model.velocity(noisy, sigma, &condition) - target;
    host((error.clone() * error).mean().unsqueeze())[0] as f64
}

/// Pre-trains `initial` (a fresh model if `None`) on the training prompts, returning the
/// model and every step's loss.
fn train(steps: usize, learning_rate: f64, seed: u64, initial: Option<Mmdit>) -> (Mmdit, Vec<f64>) {
    let device = Device::default().autodiff();
    let encoder = TextEncoder::new(TEXT_ENCODER_SEED, &device).unwrap();
    let config = FlowMatchingConfig::new()
        .with_steps(steps)
        .with_batch_size(BATCH_SIZE)
        .with_learning_rate(learning_rate)
        .with_seed(seed);
    let mut losses = Vec::new();
    let (model, _) = pretrain(
        &config,
        &prompt_split().unwrap().train,
        &encoder,
        &device,
        initial,
        |_, loss| losses.push(loss),
    )
    .unwrap();
    (model, losses)
}

/// The tests' pre-training batch size.
const BATCH_SIZE: usize = 8;

/// The committed base model, loaded on the host device.
fn base_model() -> Mmdit {
    load_base(&committed_base(), &Device::default()).unwrap().0
}

fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0.0, |max, (x, y)| max.max((x - y).abs()))
}

/// The velocities of `model` on [`fixed_batch`], on the host.
fn fixed_velocities(model: &Mmdit) -> Vec<f32> {
    let (noisy, sigma, _, condition) = fixed_batch(&Device::default());
    host(model.velocity(noisy, sigma, &condition))
}

#[test]
fn the_split_holds_out_a_quarter_of_every_prompt() {
    let split = prompt_split().unwrap();
    assert_eq!((split.train.len(), split.eval.len()), (164, 55));
    assert_eq!(
        split.train.len() + split.eval.len(),
        PromptFamily::All.prompts().len()
    );
    assert!(
        split
            .eval
            .iter()
            .all(|prompt| !split.train.contains(prompt))
    );
}

#[test]
fn pretraining_lowers_the_loss_on_a_fixed_batch() {
    let (barely, _) = train(1, 3e-3, 0, None);
    let (trained, losses) = train(12, 3e-3, 0, Some(barely.clone()));
    assert!(losses.iter().all(|loss| loss.is_finite()), "{losses:?}");
    let (before, after) = (fixed_batch_loss(&barely), fixed_batch_loss(&trained));
    assert!(
        after < 0.7 * before,
        "loss {before} after 1 step, {after} after 12 more"
    );
}

/// From given weights, since fresh ones come from the device's generator, which the other
/// tests' threads draw from too.
#[test]
fn pretraining_is_deterministic_given_its_seed_and_initial_weights() {
    let base = base_model();
    let (first, first_losses) = train(2, 3e-3, 7, Some(base.clone()));
    let (second, second_losses) = train(2, 3e-3, 7, Some(base.clone()));
    let (other, other_losses) = train(2, 3e-3, 8, Some(base));
    assert_eq!(first_losses, second_losses);
    assert_eq!(fixed_velocities(&first), fixed_velocities(&second));
    assert_ne!(first_losses, other_losses);
    assert_ne!(fixed_velocities(&first), fixed_velocities(&other));
}

/// A step at a negligible learning rate keeps the initial model's velocities, where a fresh
/// model's are nothing like them.
#[test]
fn pretraining_continues_from_the_initial_model() {
    let base = base_model();
    let initial = fixed_velocities(&base);
    let (continued, _) = train(1, 1e-12, 0, Some(base));
    let (fresh, _) = train(1, 1e-12, 0, None);
    let kept = max_abs_difference(&fixed_velocities(&continued), &initial);
    let fresh = max_abs_difference(&fixed_velocities(&fresh), &initial);
    assert!(
        kept < 1e-4 && fresh > 1e-2,
        "continued {kept}, fresh {fresh}"
    );
}

#[test]
fn pretraining_refuses_a_device_without_autodiff_and_no_prompts() {
    let device = Device::default();
    let encoder = TextEncoder::new(TEXT_ENCODER_SEED, &device).unwrap();
    let config = FlowMatchingConfig::new().with_steps(1).with_batch_size(1);
    let prompts = prompt_split().unwrap().train;
    let err = pretrain(&config, &prompts, &encoder, &device, None, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("autodiff"), "{err}");
    let autodiff = device.autodiff();
    let encoder = TextEncoder::new(TEXT_ENCODER_SEED, &autodiff).unwrap();
    let err = pretrain(&config, &[], &encoder, &autodiff, None, |_, _| {}).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn a_saved_base_model_loads_back_with_identical_velocities() {
    let device = Device::default();
    let (model, _) = load_base(&committed_base(), &device).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("copy.bpk");
    let info = BaseInfo {
        text_encoder_seed: 5,
        provenance: "a test".into(),
    };
    save_base(&model, &info, &path).unwrap();
    let (loaded, loaded_info) = load_base(&path, &device).unwrap();
    assert_eq!(loaded_info, info);
    assert_eq!(loaded.config(), model.config());
    assert_eq!(fixed_velocities(&loaded), fixed_velocities(&model));
}

#[test]
fn loading_names_what_is_wrong_with_a_file() {
    let device = Device::default();
    let folder = tempfile::tempdir().unwrap();
    let missing = folder.path().join("missing.bpk");
    assert!(matches!(
        load_base(&missing, &device).unwrap_err(),
        Error::Io { .. }
    ));
    let garbage = folder.path().join("garbage.bpk");
    std::fs::write(&garbage, b"not a burnpack").unwrap();
    let err = load_base(&garbage, &device).unwrap_err();
    assert!(err.to_string().contains("not a burnpack"), "{err}");

    // A burnpack of the right weights without the metadata is refused, naming the key.
    let (model, _) = load_base(&committed_base(), &device).unwrap();
    let mut store = burn::store::BurnpackStore::from_bytes(None);
    burn::store::ModuleSnapshot::save_into(&model, &mut store).unwrap();
    let bare = folder.path().join("bare.bpk");
    std::fs::write(&bare, &*store.get_bytes().unwrap()).unwrap();
    let err = load_base(&bare, &device).unwrap_err();
    assert!(err.to_string().contains("shapes.mmdit_config"), "{err}");
}

#[test]
fn evaluating_the_committed_base_is_deterministic_and_scores_in_range() {
    let device = Device::default();
    let (model, info) = load_base(&committed_base(), &device).unwrap();
    assert_eq!(info.text_encoder_seed, TEXT_ENCODER_SEED);
    let encoder = TextEncoder::new(info.text_encoder_seed, &device).unwrap();
    let prompts: Vec<Prompt> = prompt_split().unwrap().eval[..3].to_vec();
    let config = SamplingConfig::new()
        .with_steps(6)
        .with_samples_per_prompt(2)
        .with_batch_size(4);
    let scorer = Scorer::default();
    let first = Evaluation::run(&model, &encoder, &prompts, &config, &scorer).unwrap();
    let second = Evaluation::run(&model, &encoder, &prompts, &config, &scorer).unwrap();
    assert_eq!(first.images.len(), 6);
    assert_eq!(first.images, second.images);
    assert_eq!(first.verdicts, second.verdicts);
    for score in [
        first.accuracy(),
        first.mean_count_score(),
        first.mean_colour_score(),
    ] {
        assert!((0.0..=1.0).contains(&score), "{score}");
    }
    let by_count = first.correct_by_object_count();
    let (correct, samples) = by_count.iter().fold((0, 0), |(c, n), &(correct, samples)| {
        (c + correct, n + samples)
    });
    assert_eq!(samples, 6);
    assert_eq!(correct as f64 / 6.0, first.accuracy());
    for (index, prompt) in prompts.iter().enumerate() {
        assert!(
            by_count[prompt.object_count() - 1].1 >= 2,
            "{index}: {prompt}"
        );
    }
    // The samples do not depend on how many go through the model at once.
    let one_at_a_time = sample_images(
        &model,
        &encoder,
        &prompts,
        &config.clone().with_batch_size(1),
    )
    .unwrap();
    assert_eq!(one_at_a_time, first.images);

    let folder = tempfile::tempdir().unwrap();
    let grid = folder.path().join("grid.png");
    first.write_grid(&grid, 1).unwrap();
    let png = image::open(&grid).unwrap();
    // 2 columns and 3 rows of 32-pixel tiles with 2-pixel frames and gaps.
    let cell = IMAGE_SIZE as u32 + 6;
    assert_eq!((png.width(), png.height()), (2 * cell + 2, 3 * cell + 2));
    let listing = std::fs::read_to_string(grid.with_extension("txt")).unwrap();
    assert_eq!(listing.lines().count(), 3);
    assert!(listing.starts_with(&format!("{}: ", prompts[0])));
}

#[test]
fn sampling_refuses_zero_samples() {
    let device = Device::default();
    let (model, _) = load_base(&committed_base(), &device).unwrap();
    let encoder = TextEncoder::new(TEXT_ENCODER_SEED, &device).unwrap();
    let prompts = prompt_split().unwrap().eval[..1].to_vec();
    let config = SamplingConfig::new().with_samples_per_prompt(0);
    let err = sample_images(&model, &encoder, &prompts, &config).unwrap_err();
    assert!(err.to_string().contains("samples per prompt"), "{err}");
}
