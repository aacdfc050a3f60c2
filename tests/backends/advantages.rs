//! Rewards read back from device samples, and the group-relative advantages computed from them.
//!
//! Advantages are computed on the host in f64, so the backend enters only through the
//! samples the rewards read: a layout or read-back bug would show here as different rewards.

use burn::prelude::*;
use flow_rl::Rng;
use flow_rl::advantage::{AdvantageConfig, RewardCombination, StdScope};
use flow_rl::policy::Unconditional;
use flow_rl::reward::{HostReward, RewardSet};

use super::harness::{ELEMENTWISE, HOST, assert_matches, matrix, normals, reference_device};

const GROUPS: usize = 4;
const GROUP_SIZE: usize = 6;
const DIMS: usize = 3;
const SAMPLES: usize = GROUPS * GROUP_SIZE;

/// Host samples; the last group's members are all the same sample, so its rewards are equal
/// on every backend and its advantages must be exactly zero.
fn host_samples() -> Vec<f32> {
    let mut samples = normals(&mut Rng::seed_from(23), SAMPLES * DIMS);
    let last_group = (GROUPS - 1) * GROUP_SIZE * DIMS;
    let first_member: Vec<f32> = samples[last_group..last_group + DIMS].to_vec();
    for member in samples[last_group..].chunks_mut(DIMS) {
        member.copy_from_slice(&first_member);
    }
    samples
}

/// Two rewards on different scales: the first coordinate, and minus ten times the squared
/// norm.
fn rewards(combination: RewardCombination) -> RewardSet<Unconditional> {
    RewardSet::new(combination)
        .with(HostReward::new("first", |p: &[f32]| p[0]), 1.0)
        .with(
            HostReward::new("norm", |p: &[f32]| {
                -10.0 * p.iter().map(|v| v * v).sum::<f32>()
            }),
            0.5,
        )
}

/// Reward values (reward-major) and advantages for each advantage setting, with the samples
/// computed on `device` as `1.5·x − 0.25`.
fn run(device: &Device) -> Vec<(String, Vec<f64>, Vec<f64>, f64)> {
    let samples = matrix(&host_samples(), [SAMPLES, DIMS], device)
        .mul_scalar(1.5)
        .add_scalar(-0.25);
    let conditions = Unconditional(SAMPLES);
    let mut results = Vec::new();
    for combination in [RewardCombination::WeightedSum, RewardCombination::Gdpo] {
        let reward_set = rewards(combination);
        let scores = reward_set.score(&samples, &conditions).unwrap();
        let values: Vec<f64> = scores.values.iter().flatten().map(|&v| v as f64).collect();
        for (scope, clip) in [(StdScope::Group, None), (StdScope::Batch, Some(1.5))] {
            let config = AdvantageConfig::new().with_std_scope(scope).with_clip(clip);
            let advantages = config
                .compute_multi(
                    &scores.values,
                    &reward_set.weights(),
                    combination,
                    GROUP_SIZE,
                )
                .unwrap();
            results.push((
                format!("{combination:?}, {scope:?} std, clip {clip:?}"),
                values.clone(),
                advantages.values.iter().map(|&a| a as f64).collect(),
                advantages.zero_std_group_fraction,
            ));
        }
    }
    results
}

/// Rewards and advantages on `device` against flex, and the rewards against the host.
pub fn check(device: &Device) {
    let got = run(device);
    let want = run(&reference_device());
    let host_samples: Vec<f64> = host_samples()
        .iter()
        .map(|&x| 1.5 * x as f64 - 0.25)
        .collect();
    let host_rewards: Vec<f64> = host_samples
        .chunks(DIMS)
        .map(|p| p[0])
        .chain(
            host_samples
                .chunks(DIMS)
                .map(|p| -10.0 * p.iter().map(|v| v * v).sum::<f64>()),
        )
        .collect();
    for (
        (setting, got_rewards, got_advantages, got_zero),
        (_, want_rewards, want_advantages, want_zero),
    ) in got.iter().zip(&want)
    {
        let check = format!("advantages ({setting}) on {device:?}");
        let check = check.as_str();
        assert_matches(
            check,
            "rewards vs flex",
            got_rewards,
            want_rewards,
            ELEMENTWISE,
        );
        assert_matches(check, "rewards vs host", got_rewards, &host_rewards, HOST);
        // Normalising divides reward differences by a std of order 1 (group) or more (batch),
        // so the advantages inherit the rewards' elementwise bound.
        assert_matches(
            check,
            "advantages vs flex",
            got_advantages,
            want_advantages,
            ELEMENTWISE,
        );
        assert_eq!(got_zero, want_zero, "{check}: zero-std group fraction");
        assert_eq!(
            *got_zero,
            1.0 / GROUPS as f64,
            "{check}: the last group is constant"
        );
        assert!(
            got_advantages[(GROUPS - 1) * GROUP_SIZE..]
                .iter()
                .all(|&a| a == 0.0),
            "{check}: a constant group has zero advantages"
        );
    }
}
