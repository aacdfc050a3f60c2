//! The MMDiT's public behaviour beyond faithfulness: errors for bad input and bad weights,
//! LoRA (trainable set, save/load, bf16 base, merge), prompt-embedding files, gradients, and
//! training through the crate's trainer.

mod common;

use std::path::PathBuf;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PathFilter, bridge};
use burn::tensor::{DType, Distribution, FloatDType, TensorData};
use common::mmdit_fixture::{Cases, EditableFile, fixture};
use flow_rl::models::mmdit::{
    LoraTarget, MAX_LORA_SCALE, Mmdit, MmditCheckpoint, MmditCondition, MmditConfig,
    MmditLoraConfig, PromptEmbeddings, WeightLayout,
};
use flow_rl::policy::{Guided, checked_velocity};
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::trainer::{Trainer, TrainerConfig};
use flow_rl::{Error, WeightProblem};

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().try_to_vec().unwrap()
}

fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// A tiny model's inputs: latents `[B, 16, 4, 4]`, timesteps, context `[B, 3, 64]`, pooled.
struct Inputs {
    latents: Tensor<4>,
    timestep: Tensor<1>,
    context: Tensor<3>,
    pooled: Tensor<2>,
}

fn inputs(batch: usize, device: &Device) -> Inputs {
    let normal = Distribution::Normal(0.0, 1.0);
    Inputs {
        latents: Tensor::random([batch, 16, 4, 4], normal, device),
        timestep: Tensor::random([batch], Distribution::Uniform(0.0, 1000.0), device),
        context: Tensor::random([batch, 3, 64], normal, device),
        pooled: Tensor::random([batch, 32], normal, device),
    }
}

fn run(model: &Mmdit, inputs: &Inputs) -> Tensor<4> {
    model
        .forward(
            inputs.latents.clone(),
            inputs.timestep.clone(),
            inputs.context.clone(),
            inputs.pooled.clone(),
        )
        .unwrap()
}

fn expect_shape_error(result: flow_rl::Result<Tensor<4>>, name: &str, needle: &str) {
    match result {
        Err(Error::ShapeMismatch {
            name: found,
            expected,
            ..
        }) => {
            assert_eq!(found, name);
            assert!(expected.contains(needle), "{expected}");
        }
        other => panic!("expected a shape error for {name}, got {other:?}"),
    }
}

#[test]
fn bad_inputs_get_errors_that_say_what_was_expected() {
    let device = Device::default();
    let model = MmditConfig::tiny().init(&device).unwrap();
    let good = inputs(1, &device);
    let with_latents = |latents: Tensor<4>| {
        model.forward(
            latents,
            good.timestep.clone(),
            good.context.clone(),
            good.pooled.clone(),
        )
    };
    let normal = Distribution::Normal(0.0, 1.0);
    expect_shape_error(
        with_latents(Tensor::random([1, 16, 5, 4], normal, &device)),
        "latents",
        "multiples of the patch size 2",
    );
    // The tiny table is 16² patches of 2: at most 32 latent pixels a side.
    expect_shape_error(
        with_latents(Tensor::random([1, 16, 34, 4], normal, &device)),
        "latents",
        "at most 32",
    );
    expect_shape_error(
        with_latents(Tensor::random([1, 4, 4, 4], normal, &device)),
        "latents",
        "[B, 16, H, W]",
    );
    expect_shape_error(
        model.forward(
            good.latents.clone(),
            good.timestep.clone(),
            Tensor::random([1, 3, 63], normal, &device),
            good.pooled.clone(),
        ),
        "context",
        "[1, L, 64]",
    );
    expect_shape_error(
        model.forward(
            good.latents.clone(),
            good.timestep.clone(),
            good.context.clone(),
            Tensor::random([1, 31], normal, &device),
        ),
        "pooled",
        "[1, 32]",
    );

    // Through the policy interface: flattened latents must unflatten, conditions must fit.
    let condition = MmditCondition::new(good.context.clone(), good.pooled.clone());
    let sigma = Tensor::<1>::from_floats([0.5], &device);
    let not_square = Tensor::<2>::zeros([1, 16 * 4 * 6], &device);
    let error = checked_velocity(&model, not_square.clone(), sigma.clone(), &condition)
        .unwrap_err()
        .to_string();
    assert!(error.contains("with_latent_size"), "{error}");
    let model = model.with_latent_size(4, 6);
    assert!(checked_velocity(&model, not_square, sigma.clone(), &condition).is_ok());
    // Guidance runs both branches as one batch: their contexts must have the same length.
    let unconditional = MmditCondition::new(
        Tensor::random([1, 5, 64], normal, &device),
        good.pooled.clone(),
    );
    let guided = Guided::new(model.clone(), 4.5, unconditional).unwrap();
    let error = checked_velocity(
        &guided,
        Tensor::zeros([1, 384], &device),
        sigma.clone(),
        &condition,
    )
    .unwrap_err();
    assert!(matches!(error, Error::ShapeMismatch { .. }), "{error:?}");
    assert!(error.to_string().contains("[1, 5, 64]"), "{error}");
    let narrow = MmditCondition::new(Tensor::random([1, 3, 8], normal, &device), good.pooled);
    let error = checked_velocity(&model, Tensor::zeros([1, 384], &device), sigma, &narrow)
        .unwrap_err()
        .to_string();
    assert!(error.contains("[1, L, 64]"), "{error}");
}

#[test]
fn a_checkpoint_of_another_family_is_named_and_refused() {
    let path = common::scratch("flux.safetensors");
    let data = [0u8; 16];
    let view = |shape: Vec<usize>| {
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &data).unwrap()
    };
    let bytes = safetensors::serialize(
        vec![
            ("double_blocks.0.img_attn.qkv.weight", view(vec![2, 2])),
            ("single_blocks.0.linear1.weight", view(vec![4])),
        ],
        None,
    )
    .unwrap();
    std::fs::write(&path, bytes).unwrap();
    let error = MmditCheckpoint::open(&path).unwrap_err();
    assert!(matches!(error, Error::Checkpoint { .. }), "{error:?}");
    assert!(error.to_string().contains("FLUX"), "{error}");

    std::fs::write(&path, b"not a safetensors file").unwrap();
    assert!(matches!(
        MmditCheckpoint::open(&path),
        Err(Error::Checkpoint { .. })
    ));
    let missing = MmditCheckpoint::open(common::scratch("absent.safetensors")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
}

#[test]
fn weights_of_another_shape_list_every_offending_key() {
    let device = Device::default();
    // The 2-block fixture into the 3-block, dual-attention architecture: block 0 lacks its
    // self-attention, block 1's context side is the last block's (2 modulation chunks, no
    // output or MLP), block 2 is absent.
    let plain = MmditCheckpoint::open(fixture("plain/official.safetensors")).unwrap();
    let dual_config = MmditCheckpoint::open(fixture("dual/official.safetensors"))
        .unwrap()
        .infer_config()
        .unwrap();
    let error = plain
        .load_into(dual_config.init(&device).unwrap(), None)
        .unwrap_err();
    let Error::WeightMismatch { problems, .. } = &error else {
        panic!("expected a weight mismatch, got {error:?}");
    };
    let key = "model.diffusion_model.joint_blocks.0.x_block.attn2.qkv.weight";
    let missing = problems
        .iter()
        .find(|p| p.key == key)
        .expect("attn2 listed");
    assert_eq!(missing.expected, Some(vec![96, 32]));
    assert_eq!(missing.found, None);
    let key = "model.diffusion_model.joint_blocks.1.context_block.adaLN_modulation.1.weight";
    let mis_shaped = problems
        .iter()
        .find(|p| p.key == key)
        .expect("modulation listed");
    assert_eq!(mis_shaped.expected, Some(vec![192, 32]));
    assert_eq!(mis_shaped.found, Some(vec![64, 32]));
    assert!(problems.iter().any(|p| p.key.contains("joint_blocks.2.")));
    let message = error.to_string();
    assert!(
        message.contains("mis-shaped; nothing was loaded):"),
        "{message}"
    );

    // The other way round, the dual checkpoint's extra tensors are unexpected.
    let dual = MmditCheckpoint::open(fixture("dual/diffusers")).unwrap();
    let plain_config = plain.infer_config().unwrap();
    let error = dual
        .load_into(plain_config.init(&device).unwrap(), None)
        .unwrap_err();
    let Error::WeightMismatch { problems, .. } = &error else {
        panic!("expected a weight mismatch, got {error:?}");
    };
    let unexpected = problems
        .iter()
        .find(|p| p.key == "transformer_blocks.2.attn.to_q.weight")
        .expect("block 2 listed");
    assert_eq!(
        (unexpected.expected.clone(), unexpected.found.clone()),
        (None, Some(vec![32, 32]))
    );
}

/// Which float parameters of a module got a gradient, by module path.
struct GradientOwners<'a> {
    grads: &'a burn::tensor::Gradients,
    path: Vec<String>,
    with: Vec<String>,
    without: Vec<String>,
}

impl<'a> GradientOwners<'a> {
    fn of<M: Module>(module: &M, grads: &'a burn::tensor::Gradients) -> Self {
        let mut owners = Self {
            grads,
            path: Vec::new(),
            with: Vec::new(),
            without: Vec::new(),
        };
        module.visit(&mut owners);
        owners
    }
}

impl ModuleVisitor for GradientOwners<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self.path.join(".");
        if param.val().grad(self.grads).is_some() {
            self.with.push(name);
        } else {
            self.without.push(name);
        }
    }
}

#[test]
fn lora_trains_only_its_factors_and_starts_at_the_base_model() {
    let device = Device::default().autodiff();
    let base = MmditConfig::tiny().init(&device).unwrap();
    let inputs = inputs(2, &device);
    let before = values(run(&base, &inputs));
    let model = MmditLoraConfig::new()
        .with_rank(4)
        .with_alpha(8.0)
        .apply(base)
        .unwrap();
    assert_eq!(model.lora(), Some((4, 8.0)));
    assert_eq!(values(run(&model, &inputs)), before, "B = 0 at the start");

    let grads = run(&model, &inputs).sum().backward();
    let owners = GradientOwners::of(&model, &grads);
    // 19 attention projections (see the unit tests), two factors each.
    assert_eq!(owners.with.len(), 38, "{:?}", owners.with);
    assert!(owners.with.iter().all(|name| name.contains(".lora.")));
    assert!(owners.without.iter().all(|name| !name.contains(".lora.")));
    assert!(
        owners
            .without
            .iter()
            .any(|name| name.ends_with("mlp.fc1.weight"))
    );
}

/// Every LoRA factor `<module>.weight.lora.<a|b>`, by path, as f32 values.
fn lora_factors(model: &Mmdit) -> Vec<(String, Vec<f32>)> {
    let filter = PathFilter::new().with_regex(r"\.lora\.(a|b)$");
    model
        .collect(Some(filter), None, false)
        .into_iter()
        .map(|factor| {
            let name = factor.name.clone();
            let data = bridge::into_data(factor).unwrap().convert::<f32>();
            (name, data.try_to_vec::<f32>().unwrap())
        })
        .collect()
}

#[test]
fn seeded_lora_factors_do_not_depend_on_the_device_generator() {
    let device = Device::default();
    let base = MmditConfig::tiny().init(&device).unwrap();
    let seeded = |seed: u64| {
        let model = MmditLoraConfig::new()
            .with_rank(4)
            .with_seed(Some(seed))
            .apply(base.clone())
            .unwrap();
        // Whatever the generator does next must not matter.
        let _ = Tensor::<1>::random([17], Distribution::Default, &device);
        lora_factors(&model)
    };
    device.seed(1);
    let first = seeded(7);
    device.seed(2);
    let again = seeded(7);
    assert_eq!(
        first, again,
        "the same seed gives the same factors bit for bit"
    );
    let other = seeded(8);

    let (down, up): (Vec<_>, Vec<_>) = first.iter().partition(|(name, _)| name.ends_with(".a"));
    assert_eq!(down.len(), 19, "one A per attention projection");
    assert!(
        up.iter()
            .all(|(_, values)| values.iter().all(|&v| v == 0.0)),
        "B = 0"
    );
    let draws: Vec<f64> = down
        .iter()
        .flat_map(|(_, v)| v.iter().map(|&x| x as f64))
        .collect();
    let mean = draws.iter().sum::<f64>() / draws.len() as f64;
    let std = (draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws.len() as f64).sqrt();
    // σ = 1/r = 0.25 over thousands of draws: a few percent of sampling error.
    assert!(
        (std - 0.25).abs() < 0.01 && mean.abs() < 0.01,
        "mean {mean}, std {std}"
    );
    assert!(
        first
            .iter()
            .zip(&other)
            .all(|((name, a), (_, b))| name.ends_with(".b") || a != b),
        "another seed gives other A factors"
    );
    let distinct: std::collections::BTreeSet<u32> =
        down.iter().map(|(_, values)| values[0].to_bits()).collect();
    assert_eq!(
        distinct.len(),
        down.len(),
        "each factor draws its own values"
    );
}

#[test]
fn lora_adapters_round_trip_through_their_file_and_merge() {
    let device = Device::default().autodiff();
    let config = MmditConfig::tiny();
    let base = config.init(&device).unwrap();
    let base_file = common::scratch("base.mpk");
    base.clone().save_file(&base_file).unwrap();
    let mut model = MmditLoraConfig::new()
        .with_targets(vec![LoraTarget::Attention, LoraTarget::Mlp])
        .apply(base)
        .unwrap();
    let inputs = inputs(2, &device);
    // One optimiser step moves B away from zero.
    let grads = GradientsParams::from_grads(run(&model, &inputs).sum().backward(), &model);
    model = AdamWConfig::new().init().step(1e-2, model, grads);
    let adapted = values(run(&model, &inputs));

    let adapter = common::scratch("adapter.safetensors");
    model.save_lora(&adapter).unwrap();
    let bytes = std::fs::read(&adapter).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap();
    let targets: Vec<String> = serde_json::from_str(&metadata["target_modules"]).unwrap();
    // 19 attention projections and 6 MLP layers, under diffusers' names.
    assert_eq!(targets.len(), 25);
    assert!(targets.contains(&"transformer_blocks.0.attn2.to_out.0".to_string()));
    assert!(targets.contains(&"transformer_blocks.1.ff.net.2".to_string()));
    assert_eq!(metadata["lora_rank"], "32");
    let reloaded = config
        .init(&device)
        .unwrap()
        .load_file(&base_file)
        .load_lora(&adapter, Some(FloatDType::F32))
        .unwrap();
    assert_eq!(reloaded.lora(), Some((32, 64.0)));
    assert_eq!(values(run(&reloaded, &inputs)), adapted);

    let merged = reloaded.merge_lora();
    assert_eq!(merged.lora(), None);
    assert_eq!(merged.num_params(), config.num_params());
    let difference = max_abs_difference(&values(run(&merged, &inputs)), &adapted);
    assert!(difference < 1e-4, "merged vs adapted: {difference}");

    // Adapters go onto a base model only, and name layers the model has.
    let error = model.load_lora(&adapter, None).unwrap_err();
    assert!(error.to_string().contains("already has LoRA"), "{error}");
}

#[test]
fn f32_adapters_train_over_a_bf16_base() {
    let device = Device::default().autodiff();
    if !device.supports_dtype(FloatDType::BF16) {
        return;
    }
    let checkpoint = MmditCheckpoint::open(fixture("dual/official.safetensors")).unwrap();
    let base = checkpoint
        .load_into(
            checkpoint.infer_config().unwrap().init(&device).unwrap(),
            None,
        )
        .unwrap();
    assert_eq!(base.activation_dtype(), DType::BF16);
    let model = MmditLoraConfig::new().with_rank(2).apply(base).unwrap();
    let normal = Distribution::Normal(0.0, 1.0);
    let output = model
        .forward(
            Tensor::random([2, 16, 4, 6], normal, &device),
            Tensor::from_floats([900.0, 300.0], &device),
            Tensor::random([2, 7, 24], normal, &device),
            Tensor::random([2, 20], normal, &device),
        )
        .unwrap();
    assert_eq!(output.dtype(), DType::F32);
    let grads = output.powf_scalar(2.0).mean().backward();
    let owners = GradientOwners::of(&model, &grads);
    assert!(!owners.with.is_empty());
    let query = &model.blocks[0].image.attention.query.weight;
    assert_eq!(
        query.val().dtype(),
        DType::F32,
        "composed in the factors' dtype"
    );
    let grads = GradientsParams::from_grads(grads, &model);
    let model = AdamWConfig::new().init().step(1e-3, model, grads);
    assert_eq!(
        model.blocks[0]
            .image
            .mlp
            .as_ref()
            .unwrap()
            .fc1
            .weight
            .val()
            .dtype(),
        DType::BF16
    );
}

/// `d/dx Σ w·v(x)` by autodiff against central differences, for a few latent values and a
/// pooled value, through every layer of the network.
#[test]
fn input_gradients_match_finite_differences() {
    let device = Device::default().autodiff();
    let model = MmditConfig::tiny().init(&device).unwrap();
    let inputs = inputs(1, &device);
    let weights: Tensor<4> = Tensor::random([1, 16, 4, 4], Distribution::Normal(0.0, 1.0), &device);
    let objective = |latents: Tensor<4>, pooled: Tensor<2>| {
        let velocity = model
            .forward(
                latents,
                inputs.timestep.clone(),
                inputs.context.clone(),
                pooled,
            )
            .unwrap();
        (velocity * weights.clone()).sum()
    };
    let latents = inputs.latents.clone().require_grad();
    let pooled = inputs.pooled.clone().require_grad();
    let grads = objective(latents.clone(), pooled.clone()).backward();
    let latent_grad = values(latents.grad(&grads).unwrap());
    let pooled_grad = values(pooled.grad(&grads).unwrap());

    let base_latents = values(inputs.latents.clone());
    let base_pooled = values(inputs.pooled.clone());
    let step = 1e-2f32;
    let evaluate = |latent_values: &[f32], pooled_values: &[f32]| -> f64 {
        let latents = Tensor::<4>::from_data(
            TensorData::new(latent_values.to_vec(), [1, 16, 4, 4]),
            &device,
        );
        let pooled =
            Tensor::<2>::from_data(TensorData::new(pooled_values.to_vec(), [1, 32]), &device);
        objective(latents, pooled).into_scalar::<f32>() as f64
    };
    for index in [0, 37, 130, 255] {
        let (mut plus, mut minus) = (base_latents.clone(), base_latents.clone());
        plus[index] += step;
        minus[index] -= step;
        let numeric =
            (evaluate(&plus, &base_pooled) - evaluate(&minus, &base_pooled)) / (2.0 * step as f64);
        let analytic = latent_grad[index] as f64;
        assert!(
            (numeric - analytic).abs() <= 2e-2 * analytic.abs().max(1.0),
            "latent {index}: numeric {numeric}, autodiff {analytic}"
        );
    }
    for index in [0, 17] {
        let (mut plus, mut minus) = (base_pooled.clone(), base_pooled.clone());
        plus[index] += step;
        minus[index] -= step;
        let numeric = (evaluate(&base_latents, &plus) - evaluate(&base_latents, &minus))
            / (2.0 * step as f64);
        let analytic = pooled_grad[index] as f64;
        assert!(
            (numeric - analytic).abs() <= 2e-2 * analytic.abs().max(1.0),
            "pooled {index}: numeric {numeric}, autodiff {analytic}"
        );
    }
}

#[test]
fn prompt_embeddings_round_trip_and_check_their_format() {
    let device = Device::default();
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), &device).unwrap();
    assert_eq!(prompts.prompts, ["a red cube on a blue sphere", "two cats"]);
    assert_eq!(prompts.context.dims(), [2, 7, 24]);
    assert_eq!(prompts.pooled.dims(), [2, 20]);
    let error = prompts.check_widths(&MmditConfig::tiny()).unwrap_err();
    assert!(error.to_string().contains("[P, L, 64]"), "{error}");

    let path = common::scratch("prompts.safetensors");
    let half = PromptEmbeddings::new(
        prompts.prompts.clone(),
        prompts.context.clone().cast(FloatDType::BF16),
        prompts.pooled.clone().cast(FloatDType::BF16),
    )
    .unwrap();
    half.save(&path).unwrap();
    let reloaded = PromptEmbeddings::load(&path, &device).unwrap();
    assert_eq!(reloaded.prompts, prompts.prompts);
    assert_eq!(reloaded.context.dtype(), DType::BF16);
    assert_eq!(values(reloaded.context), values(half.context));
    let picked = prompts.select(&[1, 1, 0]).unwrap();
    assert_eq!(
        picked.prompts,
        ["two cats", "two cats", "a red cube on a blue sphere"]
    );
    assert!(prompts.select(&[2]).is_err());

    assert!(
        PromptEmbeddings::new(
            vec!["one".into()],
            prompts.context.clone(),
            prompts.pooled.clone()
        )
        .is_err()
    );
    // A LoRA file is a safetensors file, but not a prompt-embedding file.
    let error = PromptEmbeddings::load(fixture("plain/lora.safetensors"), &device).unwrap_err();
    assert!(
        error.to_string().contains("flow-rl/prompt-embeddings"),
        "{error}"
    );
}

#[test]
fn a_lora_mmdit_trains_through_the_crate_trainer() {
    let device = Device::default().autodiff();
    let base = MmditConfig::tiny().init(&device).unwrap();
    let frozen = values(base.blocks[0].image.mlp.as_ref().unwrap().fc1.weight.val());
    let query = values(base.blocks[0].image.attention.query.weight.val());
    let policy = MmditLoraConfig::new().with_rank(4).apply(base).unwrap();
    let config = TrainerConfig::new(16 * 4 * 4)
        .with_group_size(2)
        .with_groups_per_rollout(2)
        .with_learning_rate(1e-3)
        .with_weight_decay(0.0);
    let mut trainer = Trainer::new(config, policy, &device).unwrap();
    let normal = Distribution::Normal(0.0, 1.0);
    let conditions = MmditCondition::new(
        Tensor::<3>::random([2, 3, 64], normal, &device),
        Tensor::<2>::random([2, 32], normal, &device),
    );
    let reward = RewardSet::single(HostReward::new("mean", |sample: &[f32]| {
        sample.iter().sum::<f32>() / sample.len() as f32
    }));
    let first = trainer.step(&conditions, &reward).unwrap();
    let second = trainer.step(&conditions, &reward).unwrap();
    let replay = first.first_update.unwrap();
    assert!(
        (replay.ratio.max - 1.0).abs() < 1e-4,
        "on-policy replay: {replay:?}"
    );
    assert_eq!(second.updates, 2);
    assert_eq!(second.skipped_updates, 0);
    let policy = trainer.into_policy();
    assert_eq!(
        values(
            policy.blocks[0]
                .image
                .mlp
                .as_ref()
                .unwrap()
                .fc1
                .weight
                .val()
        ),
        frozen,
        "base weights stay frozen"
    );
    let merged = policy.merge_lora();
    let moved = max_abs_difference(
        &values(merged.blocks[0].image.attention.query.weight.val()),
        &query,
    );
    assert!(moved > 0.0, "the adapted projection changed");
}

/// Rewrites the plain fixture's adapter with `edit` applied to its tensors.
fn edited_adapter(
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> common::ScratchPath {
    let bytes = std::fs::read(fixture("plain/lora.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(key, view)| (key, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(key, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), data)
                    .unwrap();
            (key.clone(), view)
        })
        .collect();
    let path = common::scratch(name);
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

#[test]
fn a_lora_file_that_does_not_fit_lists_its_problems() {
    let device = Device::default();
    let checkpoint = MmditCheckpoint::open(fixture("plain/official.safetensors")).unwrap();
    let base = || {
        checkpoint
            .load_into(
                checkpoint.infer_config().unwrap().init(&device).unwrap(),
                None,
            )
            .unwrap()
    };
    let to_q_b = "transformer.transformer_blocks.0.attn.to_q.lora_B.weight";
    let to_k_a = "transformer.transformer_blocks.0.attn.to_k.lora_A.weight";
    // The first factor in the model's own order, whose shape could be mistaken for the rank.
    let add_k_a = "transformer.transformer_blocks.0.attn.add_k_proj.lora_A.weight";
    let path = edited_adapter("broken-lora.safetensors", |tensors| {
        tensors.retain(|(key, _, _)| key != to_q_b && key != add_k_a);
        let to_k = tensors
            .iter_mut()
            .find(|(key, _, _)| key == to_k_a)
            .unwrap();
        to_k.1 = vec![3, 32]; // rank 3 among rank-4 factors
        to_k.2.truncate(3 * 32 * 2);
    });
    let error = base().load_lora(&path, None).unwrap_err();
    let Error::WeightMismatch { problems, .. } = &error else {
        panic!("expected a weight mismatch, got {error:?}");
    };
    let missing = problems
        .iter()
        .find(|p| p.key == to_q_b)
        .expect("to_q B listed");
    assert_eq!(
        (missing.expected.clone(), missing.found.clone()),
        (Some(vec![32, 4]), None)
    );
    let wrong = problems
        .iter()
        .find(|p| p.key == to_k_a)
        .expect("to_k A listed");
    assert_eq!(
        (wrong.expected.clone(), wrong.found.clone()),
        (Some(vec![4, 32]), Some(vec![3, 32]))
    );
    let missing_first = problems
        .iter()
        .find(|p| p.key == add_k_a)
        .expect("add_k_proj A listed");
    assert_eq!(missing_first.expected, Some(vec![4, 32]));
    assert_eq!(problems.len(), 3, "{problems:?}");

    let path = edited_adapter("foreign-lora.safetensors", |tensors| {
        tensors[0].0 = "transformer.transformer_blocks.9.attn.to_q.lora_A.weight".into();
    });
    let error = base().load_lora(&path, None).unwrap_err().to_string();
    assert!(error.contains("no Linear layer of this model"), "{error}");
}

#[test]
fn a_lora_trainer_checkpoint_restores_the_adapters() {
    let device = Device::default().autodiff();
    let config = TrainerConfig::new(16 * 4 * 4)
        .with_group_size(2)
        .with_groups_per_rollout(1)
        .with_learning_rate(1e-3);
    // The checkpoint holds the adapters, not the frozen base: a resumed run starts from the
    // same base weights, and fresh adapters (another random A) that the checkpoint replaces.
    let base = MmditConfig::tiny().init(&device).unwrap();
    let policy = || {
        MmditLoraConfig::new()
            .with_rank(2)
            .apply(base.clone())
            .unwrap()
    };
    let normal = Distribution::Normal(0.0, 1.0);
    let conditions = MmditCondition::new(
        Tensor::<3>::random([1, 3, 64], normal, &device),
        Tensor::<2>::random([1, 32], normal, &device),
    );
    let reward = RewardSet::single(HostReward::new("first", |sample: &[f32]| sample[0]));
    let mut trainer = Trainer::new(config.clone(), policy(), &device).unwrap();
    trainer.step(&conditions, &reward).unwrap();
    let path = common::scratch("lora-trainer.ckpt");
    trainer.save_checkpoint(&path).unwrap();
    let restored = Trainer::new(config, policy(), &device)
        .unwrap()
        .load_checkpoint(&path)
        .unwrap();
    let inputs = inputs(1, &device);
    assert_eq!(
        values(run(restored.policy(), &inputs)),
        values(run(trainer.policy(), &inputs))
    );
    assert_eq!(restored.policy().lora(), Some((2, 64.0)));
}

/// The fixture's official single file, or its diffusers shards merged into one file, edited
/// and written to a fresh folder, then opened.
fn edited_checkpoint(
    folder: &tempfile::TempDir,
    model: &str,
    layout: WeightLayout,
    edit: impl FnOnce(&mut EditableFile),
) -> MmditCheckpoint {
    let mut file = match layout {
        WeightLayout::Official => EditableFile::read(&[&format!("{model}/official.safetensors")]),
        WeightLayout::Diffusers => {
            let shards: Vec<String> = (1..=3)
                .map(|k| {
                    format!(
                        "{model}/diffusers/diffusion_pytorch_model-0000{k}-of-00003.safetensors"
                    )
                })
                .collect();
            let shards: Vec<&str> = shards.iter().map(String::as_str).collect();
            EditableFile::read(&shards)
        }
    };
    edit(&mut file);
    let path = match layout {
        WeightLayout::Official => folder.path().join("official.safetensors"),
        WeightLayout::Diffusers => folder.path().join("diffusion_pytorch_model.safetensors"),
    };
    file.write(&path);
    let checkpoint = MmditCheckpoint::open(match layout {
        WeightLayout::Official => path,
        WeightLayout::Diffusers => folder.path().to_owned(),
    })
    .unwrap();
    assert_eq!(checkpoint.layout(), layout);
    checkpoint
}

fn weight_problems(error: Error) -> Vec<WeightProblem> {
    match error {
        Error::WeightMismatch { problems, .. } => problems,
        other => panic!("expected a weight mismatch, got {other:?}"),
    }
}

#[test]
fn infer_config_lists_tensors_of_the_wrong_rank() {
    let folder = tempfile::tempdir().unwrap();
    let checkpoint = edited_checkpoint(&folder, "plain", WeightLayout::Official, |file| {
        for key in [
            "model.diffusion_model.context_embedder.weight",
            "model.diffusion_model.joint_blocks.0.x_block.mlp.fc1.weight",
        ] {
            let data = file.get_mut(key);
            *data = TensorData::from_bytes_vec(
                data.as_bytes().to_vec(),
                vec![data.num_elements()],
                data.dtype(),
            );
        }
    });
    let problems = weight_problems(checkpoint.infer_config().unwrap_err());
    let found: Vec<(&str, &str, Option<Vec<usize>>)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.kind(), p.found.clone()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "model.diffusion_model.context_embedder.weight",
                "mis-shaped",
                Some(vec![32 * 24])
            ),
            (
                "model.diffusion_model.joint_blocks.0.x_block.mlp.fc1.weight",
                "mis-shaped",
                Some(vec![128 * 32])
            ),
        ]
    );
    assert_eq!(problems[0].expected.as_ref().map(Vec::len), Some(2));
}

#[test]
fn block_keys_past_the_last_complete_block_are_refused_in_both_layouts() {
    for (layout, stray) in [
        (
            WeightLayout::Official,
            "model.diffusion_model.joint_blocks.99999.x",
        ),
        (WeightLayout::Diffusers, "transformer_blocks.99999.x"),
    ] {
        let folder = tempfile::tempdir().unwrap();
        let checkpoint = edited_checkpoint(&folder, "plain", layout, |file| {
            file.tensors
                .push((stray.into(), TensorData::new(vec![0f32], [1])));
        });
        let problems = weight_problems(checkpoint.infer_config().unwrap_err());
        assert_eq!(
            problems,
            [WeightProblem::unexpected(stray, vec![1])],
            "{layout:?}"
        );
    }
    // Block 1 of 3 lacks its image query projection: the depth is 1, and every key of
    // blocks 1 and 2 lies past it.
    let folder = tempfile::tempdir().unwrap();
    let dropped = "model.diffusion_model.joint_blocks.1.x_block.attn.qkv.weight";
    let mut past = Vec::new();
    let checkpoint = edited_checkpoint(&folder, "dual", WeightLayout::Official, |file| {
        file.tensors.retain(|(key, _)| key != dropped);
        past = file
            .tensors
            .iter()
            .filter(|(key, _)| {
                key.starts_with("model.diffusion_model.joint_blocks.1.")
                    || key.starts_with("model.diffusion_model.joint_blocks.2.")
            })
            .map(|(key, _)| key.clone())
            .collect();
    });
    let problems = weight_problems(checkpoint.infer_config().unwrap_err());
    assert!(past.len() > 20, "{past:?}");
    let mut listed: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
    listed.sort();
    past.sort();
    assert_eq!(listed, past);
    assert!(problems.iter().all(|p| p.kind() == "unexpected"));
}

/// The fixture's output for its inputs, read back as f32 bits.
fn fixture_velocity_bits(model: &Mmdit, device: &Device) -> Vec<u32> {
    let cases = Cases::load();
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), device).unwrap();
    let velocity = model
        .forward(
            cases.tensor("latents", device),
            cases.tensor("timestep", device),
            prompts.context.clone(),
            prompts.pooled.clone(),
        )
        .unwrap();
    values(velocity).into_iter().map(f32::to_bits).collect()
}

#[test]
fn a_checkpoint_that_mixes_float_dtypes_loads_in_its_prevailing_dtype() {
    let device = Device::default();
    let bias = "model.diffusion_model.context_embedder.bias";
    let uniform_folder = tempfile::tempdir().unwrap();
    let uniform = edited_checkpoint(&uniform_folder, "plain", WeightLayout::Official, |file| {
        file.convert_all(DType::F32)
    });
    // The bias alone kept in bf16 (which holds its values exactly) among f32 weights.
    let mixed_folder = tempfile::tempdir().unwrap();
    let mixed = edited_checkpoint(&mixed_folder, "plain", WeightLayout::Official, |file| {
        file.convert_all(DType::F32);
        let data = file.get_mut(bias);
        *data = data.clone().convert_dtype(DType::BF16);
    });
    let load = |checkpoint: &MmditCheckpoint| {
        let model = checkpoint.infer_config().unwrap().init(&device).unwrap();
        checkpoint.load_into(model, None).unwrap()
    };
    let (uniform, mixed) = (load(&uniform), load(&mixed));
    let bias_dtype = mixed.context_embed.bias.as_ref().unwrap().val().dtype();
    assert_eq!(bias_dtype, DType::F32, "cast to the prevailing dtype");
    assert_eq!(
        fixture_velocity_bits(&mixed, &device),
        fixture_velocity_bits(&uniform, &device)
    );
}

/// The plain fixture's adapter in `dtype`, but for the `mixed` factors in f16, with metadata
/// `lora_alpha = alpha`, written into `folder`.
fn adapter_file(folder: &tempfile::TempDir, dtype: DType, mixed: &[&str], alpha: &str) -> PathBuf {
    let mut file = EditableFile::read(&["plain/lora.safetensors"]);
    file.convert_all(dtype);
    for key in mixed {
        let data = file.get_mut(key);
        let half = data.clone().convert_dtype(DType::F16);
        // The fixture's bf16 factors are exact in f16, so the cast back loses nothing.
        assert_eq!(half.clone().convert_dtype(dtype), *data, "{key}");
        *data = half;
    }
    file.metadata.insert("lora_alpha".into(), alpha.into());
    let name = format!("lora-{dtype:?}-{}.safetensors", mixed.len());
    let path = folder.path().join(name);
    file.write(&path);
    path
}

#[test]
fn a_lora_file_that_mixes_float_dtypes_loads_in_its_prevailing_dtype() {
    let device = Device::default();
    let folder = tempfile::tempdir().unwrap();
    let factor = "transformer.transformer_blocks.0.attn.to_k.lora_A.weight";
    let checkpoint = MmditCheckpoint::open(fixture("plain/official.safetensors")).unwrap();
    let adapted = |path: &PathBuf| {
        let model = checkpoint.infer_config().unwrap().init(&device).unwrap();
        checkpoint
            .load_into(model, Some(FloatDType::F32))
            .unwrap()
            .load_lora(path, None)
            .unwrap()
    };
    for dtype in [DType::BF16, DType::F32] {
        let uniform = adapted(&adapter_file(&folder, dtype, &[], "8"));
        let mixed = adapted(&adapter_file(&folder, dtype, &[factor], "8"));
        let adapter = mixed.blocks[0].image.attention.key.weight.adapter();
        assert_eq!(adapter.unwrap().a.val().dtype(), dtype);
        assert_eq!(
            fixture_velocity_bits(&mixed, &device),
            fixture_velocity_bits(&uniform, &device),
            "one f16 factor among {dtype:?} ones"
        );
    }
}

#[test]
fn lora_scales_beyond_the_bound_are_refused() {
    let device = Device::default();
    let base = || MmditConfig::tiny().init(&device).unwrap();
    let at_bound = MmditLoraConfig::new()
        .with_rank(4)
        .with_alpha(4.0 * MAX_LORA_SCALE);
    assert!(at_bound.apply(base()).is_ok());
    for alpha in [4.0 * MAX_LORA_SCALE * 1.001, 1e300] {
        let error = MmditLoraConfig::new()
            .with_rank(4)
            .with_alpha(alpha)
            .apply(base())
            .unwrap_err();
        assert!(
            matches!(&error, Error::InvalidArgument { name, .. } if name == "alpha"),
            "{error:?}"
        );
    }
    let folder = tempfile::tempdir().unwrap();
    let checkpoint = MmditCheckpoint::open(fixture("plain/official.safetensors")).unwrap();
    let model = checkpoint.infer_config().unwrap().init(&device).unwrap();
    let model = checkpoint.load_into(model, Some(FloatDType::F32)).unwrap();
    let error = model
        .load_lora(adapter_file(&folder, DType::F32, &[], "1e300"), None)
        .unwrap_err();
    assert!(matches!(error, Error::Checkpoint { .. }), "{error:?}");
    assert!(error.to_string().contains("lora_alpha = 1e300"), "{error}");
}

#[test]
fn prompt_embeddings_with_nan_or_inf_are_refused_naming_the_prompt() {
    let device = Device::default();
    let prompts = PromptEmbeddings::load(fixture("prompts.safetensors"), &device).unwrap();
    let folder = tempfile::tempdir().unwrap();
    for (tensor, position, value, row) in [
        ("pooled", 20 + 3, f32::NAN, 1),
        ("context", 5, f32::INFINITY, 0),
    ] {
        let mut file = EditableFile::read(&["prompts.safetensors"]);
        let data = file.get_mut(tensor);
        let mut values: Vec<f32> = data.clone().convert::<f32>().try_to_vec().unwrap();
        values[position] = value;
        *data = TensorData::new(values, data.shape().clone());
        let path = folder.path().join(format!("{tensor}.safetensors"));
        file.write(&path);
        let error = PromptEmbeddings::load(&path, &device).unwrap_err();
        let Error::NonFinite { what, index, .. } = &error else {
            panic!("expected a non-finite error, got {error:?}");
        };
        assert_eq!(*index, row);
        assert!(
            what.contains(&format!("{:?}", prompts.prompts[row])),
            "{error}"
        );
        assert!(what.contains(tensor), "{error}");
    }
}
