use std::collections::BTreeSet;

use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleSnapshot;

use super::weights::{WeightLayout, diffusers_linear_names, entries};
use super::*;

/// Published sizes: 2.47 B (SD3.5-medium, positional table included) and 8.15 B
/// (SD3.5-large), within ±0.5 %.
#[test]
fn preset_parameter_counts_match_the_published_sizes() {
    for (config, published) in [
        (MmditConfig::sd35_medium(), 2.47e9),
        (MmditConfig::sd35_large(), 8.15e9),
    ] {
        let count = config.num_params() as f64;
        assert!(
            (count / published - 1.0).abs() <= 0.005,
            "{count} vs {published}"
        );
    }
    assert_eq!(MmditConfig::sd35_large().hidden(), 2432);
    assert_eq!(MmditConfig::sd35_large().depth, 38);
}

/// The tiny model without SD3.5's additions, as SD3-medium is.
fn tiny_sd3() -> MmditConfig {
    MmditConfig::tiny()
        .with_qk_norm(false)
        .with_dual_attention_layers(vec![])
}

#[test]
fn computed_parameter_count_equals_the_built_models() {
    let device = Device::default();
    for config in [
        MmditConfig::tiny(),
        tiny_sd3(),
        MmditConfig::new(3, 2)
            .with_head_dim(8)
            .with_dual_attention_layers(vec![1, 2])
            .with_context_dim(12)
            .with_pooled_dim(6),
    ] {
        let model = config.init(&device).unwrap();
        assert_eq!(model.num_params(), config.num_params(), "{config:?}");
    }
}

/// Every parameter has exactly one source in each layout, and each stored key feeds
/// parameters of one kind only.
#[test]
fn key_tables_cover_every_parameter_once() {
    let device = Device::default();
    for config in [MmditConfig::tiny(), tiny_sd3()] {
        let model = config.init(&device).unwrap();
        let params: BTreeSet<String> = model
            .collect(None, None, false)
            .into_iter()
            .map(|tensor| tensor.name)
            .collect();
        for layout in [WeightLayout::Official, WeightLayout::Diffusers] {
            let table = entries(layout, &config);
            let targets: Vec<&str> = table.iter().map(|e| e.param.as_str()).collect();
            let unique: BTreeSet<&str> = targets.iter().copied().collect();
            assert_eq!(
                unique.len(),
                targets.len(),
                "{layout:?}: a parameter sourced twice"
            );
            let unique: BTreeSet<String> = unique.into_iter().map(str::to_owned).collect();
            assert_eq!(unique, params, "{layout:?}");
        }
    }
}

#[test]
fn lora_targets_select_attention_or_mlp_layers() {
    let config = MmditConfig::tiny();
    let names = diffusers_linear_names(&config);
    let attention: Vec<&str> = names
        .iter()
        .filter(|(module, _)| LoraTarget::Attention.matches(module))
        .map(|(_, stored)| stored.as_str())
        .collect();
    // Block 0: 8 joint-attention projections + 4 of the dual self-attention; block 1 (last):
    // 7, without the context output projection.
    assert_eq!(attention.len(), 19, "{attention:?}");
    assert!(attention.iter().all(|name| name.contains(".attn")));
    let mlp = names
        .iter()
        .filter(|(module, _)| LoraTarget::Mlp.matches(module))
        .count();
    // fc1 and fc2 on both streams of block 0, on the image stream of block 1.
    assert_eq!(mlp, 6);
}

#[test]
fn lora_memory_estimate_counts_the_factors() {
    let config = MmditConfig::sd35_medium();
    let lora = MmditLoraConfig::new();
    let estimate = config.estimate_lora_memory(&lora, &LoraWorkload::sd35(512, 1));
    // Attention projections: 24 blocks × 8 joint (the last block 7) + 13 dual blocks × 4,
    // each 1536 → 1536, so rank 32 adds 32·(1536 + 1536) values per layer.
    let layers = 24 * 8 - 1 + 13 * 4;
    let factors = (layers * 32 * (1536 + 1536)) as u64;
    assert_eq!(estimate.adapters, 4 * factors);
    assert_eq!(estimate.optimizer_state, 8 * factors);
    assert_eq!(estimate.base_weights, 2 * config.num_params() as u64);
    let double = config.estimate_lora_memory(&lora, &LoraWorkload::sd35(512, 2));
    assert_eq!(double.activations, 2 * estimate.activations);
    assert_eq!(double.total() - estimate.total(), estimate.activations);
}

#[test]
fn lora_memory_estimate_counts_the_low_rank_path_per_token() {
    let config = MmditConfig::sd35_medium();
    let workload = LoraWorkload::sd35(512, 1);
    let activations = |rank| {
        config
            .estimate_lora_memory(&MmditLoraConfig::new().with_rank(rank), &workload)
            .activations
    };
    // Per adapted layer and token of its stream, `x·A` keeps `rank` f32 values: 95 context
    // layers (4 per block, 3 in the last) over 333 tokens, 148 image layers (4 per block and
    // 4 more in the 13 dual blocks) over 1024 tokens.
    let per_rank = 4 * (95 * 333 + 148 * 1024) as u64;
    assert_eq!(activations(32) - activations(16), 16 * per_rank);
}

#[test]
fn batch_plan_takes_the_most_rows_that_fit() {
    let config = MmditConfig::sd35_medium();
    let lora = MmditLoraConfig::new();
    let workload = LoraWorkload::sd35(512, 1);
    let budget = 80u64 << 30;
    let plan = plan_batches(&config, &lora, &workload, budget).unwrap();
    let training = |rows| {
        config
            .estimate_lora_memory(&lora, &workload.with_batch(rows))
            .total()
    };
    let rollout = |rows| config.estimate_forward_memory(&lora, &workload.with_batch(rows));
    assert!(plan.micro_batch_rows >= 1);
    assert!(training(plan.micro_batch_rows) <= budget);
    assert!(training(plan.micro_batch_rows + 1) > budget);
    assert!(rollout(plan.rollout_batch_size) <= budget);
    assert!(rollout(plan.rollout_batch_size + 1) > budget);
    assert!(plan.rollout_batch_size > plan.micro_batch_rows);

    let too_small = training(1) - 1;
    let error = plan_batches(&config, &lora, &workload, too_small).unwrap_err();
    assert!(error.to_string().contains("gpu_memory_bytes"), "{error}");
    assert!(plan_batches(&config, &lora, &workload, training(1)).is_ok());
}
