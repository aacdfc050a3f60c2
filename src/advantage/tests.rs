use approx::assert_abs_diff_eq;

use super::*;

const REWARDS: [f32; 12] = [1.0, 2.0, 3.0, 4.0, 0.5, 0.5, 0.5, 0.5, 2.0, 0.0, 1.0, 5.0];
const SECOND: [f32; 12] = [0.0, 1.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0, 1.0, 1.0, 1.0, 2.0];

// Golden values from this independent Python computation (groups of 4, population std):
//
//   def mean(v): return sum(v)/len(v)
//   def pstd(v): m = mean(v); return math.sqrt(sum((x-m)**2 for x in v)/len(v))
//   groups = [R[i:i+4] for i in range(0, 12, 4)]
//   group: (x - mean(g)) / (pstd(g) + 1e-4), 0 for a constant group
//   batch: (x - mean(g)) / (pstd(R) + 1e-8), 0 for a constant group
//   weighted (w = [0.7, 0.3]): S = 0.7*R + 0.3*R2, then the batch rule on S
//   gdpo: A_k = group rule with eps 1e-8 on each reward; S = 0.7*A_1 + 0.3*A_2;
//         (S - mean(S)) / (pstd(S) + 1e-8)
const GROUP: [f64; 12] = [
    -1.3415207972320402,
    -0.4471735990773467,
    0.4471735990773467,
    1.3415207972320402,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    -1.0689878278468057,
    -0.5344939139234028,
    1.6034817417702085,
];
const BATCH: [f64; 12] = [
    -0.9878783334011894,
    -0.32929277780039645,
    0.32929277780039645,
    0.9878783334011894,
    0.0,
    0.0,
    0.0,
    0.0,
    0.0,
    -1.3171711112015858,
    -0.6585855556007929,
    1.9757566668023787,
];
const WEIGHTED: [f64; 12] = [
    -1.1950721759872052,
    -0.1991786959978675,
    0.19917869599786728,
    1.195072175987205,
    0.0,
    0.0,
    0.0,
    0.0,
    -0.07469201099920028,
    -1.468942882984273,
    -0.7718174469917367,
    2.31545234097521,
];
const GDPO: [f64; 12] = [
    -1.628638977553609,
    -0.017151258603575532,
    0.017151258603575532,
    1.628638977553609,
    0.0,
    0.0,
    0.0,
    0.0,
    -0.2276470744926944,
    -1.2111948656416667,
    -0.7194209700671805,
    2.158262910201542,
];

fn assert_values(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((*g as f64 - w).abs() < 1e-5, "[{i}]: got {g}, want {w}");
    }
}

#[test]
fn group_scope_matches_golden_values() {
    let config = AdvantageConfig::new()
        .with_std_scope(StdScope::Group)
        .with_eps(1e-4);
    let advantages = config.compute(&REWARDS, 4).unwrap();
    assert_values(&advantages.values, &GROUP);
    assert_abs_diff_eq!(advantages.zero_std_group_fraction, 1.0 / 3.0);
}

#[test]
fn batch_scope_matches_golden_values() {
    let advantages = AdvantageConfig::new().compute(&REWARDS, 4).unwrap();
    assert_values(&advantages.values, &BATCH);
}

#[test]
fn clip_bounds_the_advantages() {
    let advantages = AdvantageConfig::new()
        .with_clip(Some(1.0))
        .compute(&REWARDS, 4)
        .unwrap();
    let want: Vec<f64> = BATCH.iter().map(|a| a.clamp(-1.0, 1.0)).collect();
    assert_values(&advantages.values, &want);
    assert_eq!(advantages.values[9], -1.0);
}

#[test]
fn weighted_sum_and_gdpo_match_golden_values() {
    let config = AdvantageConfig::new();
    let table = [REWARDS.to_vec(), SECOND.to_vec()];
    let weighted = config
        .compute_multi(&table, &[0.7, 0.3], RewardCombination::WeightedSum, 4)
        .unwrap();
    assert_values(&weighted.values, &WEIGHTED);
    let gdpo = config
        .compute_multi(&table, &[0.7, 0.3], RewardCombination::Gdpo, 4)
        .unwrap();
    assert_values(&gdpo.values, &GDPO);
    assert_abs_diff_eq!(gdpo.zero_std_group_fraction, 1.0 / 3.0);
}

#[test]
fn a_constant_group_has_exactly_zero_advantages() {
    // 0.1 three times has a float mean that differs from 0.1; the result must still be 0.
    let rewards = [0.1, 0.1, 0.1, 0.3, 0.2, 0.9];
    let advantages = AdvantageConfig::new()
        .with_std_scope(StdScope::Group)
        .compute(&rewards, 3)
        .unwrap();
    assert_eq!(&advantages.values[..3], &[0.0; 3]);
    assert_eq!(advantages.zero_std_group_fraction, 0.5);
}

#[test]
fn group_advantages_have_zero_mean_per_group() {
    let advantages = AdvantageConfig::new().compute(&REWARDS, 4).unwrap();
    for group in advantages.values.chunks(4) {
        assert!(group.iter().map(|&a| a as f64).sum::<f64>().abs() < 1e-6);
    }
}

#[test]
fn a_group_size_that_does_not_divide_the_batch_is_an_error() {
    let err = AdvantageConfig::new().compute(&REWARDS, 5).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("group_size") && message.contains("12"),
        "{message}"
    );
    assert!(AdvantageConfig::new().compute(&REWARDS, 0).is_err());
    assert!(AdvantageConfig::new().compute(&[], 4).is_err());
}

#[test]
fn non_finite_rewards_are_errors_that_name_the_sample() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut rewards = REWARDS;
        rewards[7] = bad;
        let err = AdvantageConfig::new().compute(&rewards, 4).unwrap_err();
        assert!(matches!(err, Error::NonFinite { index: 7, .. }), "{err}");
    }
    let mut second = SECOND;
    second[2] = f32::NAN;
    let err = AdvantageConfig::new()
        .compute_multi(&[REWARDS, second], &[0.5, 0.5], RewardCombination::Gdpo, 4)
        .unwrap_err();
    assert!(
        err.to_string().contains("reward 1") && err.to_string().contains("index 2"),
        "{err}"
    );
}

#[test]
fn invalid_multi_reward_inputs_are_errors() {
    let config = AdvantageConfig::new();
    assert!(
        config
            .compute_multi(&[REWARDS], &[0.5, 0.5], RewardCombination::Gdpo, 4)
            .is_err()
    );
    let short = [REWARDS.to_vec(), SECOND[..8].to_vec()];
    assert!(
        config
            .compute_multi(&short, &[0.5, 0.5], RewardCombination::Gdpo, 4)
            .is_err()
    );
    assert!(
        config
            .compute_multi(&[REWARDS], &[f64::NAN], RewardCombination::Gdpo, 4)
            .is_err()
    );
    assert!(
        AdvantageConfig::new()
            .with_eps(0.0)
            .compute(&REWARDS, 4)
            .is_err()
    );
    assert!(
        AdvantageConfig::new()
            .with_clip(Some(-1.0))
            .compute(&REWARDS, 4)
            .is_err()
    );
}

#[test]
fn tracker_with_one_rollout_of_history_equals_group_advantages() {
    let prompts: Vec<String> = (0..12).map(|i| format!("prompt {}", i / 4)).collect();
    let mut tracker = PromptStatTrackerConfig::new().init().unwrap();
    let advantages = tracker.update(&prompts, &REWARDS).unwrap();
    assert_values(&advantages.values, &GROUP);
    assert_eq!(tracker.prompts(), 3);
}

#[test]
fn tracker_keeps_the_configured_history() {
    let mut tracker = PromptStatTrackerConfig::new()
        .with_history(2)
        .init()
        .unwrap();
    tracker.update(&["a", "a"], &[1.0, 3.0]).unwrap();
    tracker.update(&["a", "a"], &[5.0, 7.0]).unwrap();
    // History {1, 3, 5, 7}: mean 4, population std sqrt(5).
    let stats = tracker.stats("a").unwrap();
    assert_eq!((stats.mean, stats.count), (4.0, 4));
    assert_abs_diff_eq!(stats.std, 5f64.sqrt(), epsilon = 1e-12);
    let advantages = tracker.update(&["a", "a"], &[4.0, 6.0]).unwrap();
    // The oldest rollout is gone: {5, 7, 4, 6}, mean 5.5, std sqrt(1.25).
    let std = 1.25f64.sqrt() + 1e-4;
    assert_values(&advantages.values, &[(4.0 - 5.5) / std, (6.0 - 5.5) / std]);
    tracker.clear();
    assert!(tracker.stats("a").is_none());
}

#[test]
fn tracker_state_round_trips_and_rejects_bad_input() {
    let mut tracker = PromptStatTrackerConfig::new()
        .with_history(3)
        .init()
        .unwrap();
    tracker.update(&["x", "y", "x"], &[1.0, 2.0, 3.0]).unwrap();
    let json = serde_json::to_string(&tracker).unwrap();
    let restored: PromptStatTracker = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, tracker);
    assert!(tracker.update(&["x"], &[1.0, 2.0]).is_err());
    assert!(tracker.update(&["x"], &[f32::NAN]).is_err());
    assert!(
        PromptStatTrackerConfig::new()
            .with_history(0)
            .init()
            .is_err()
    );
}

#[test]
fn weighted_sum_of_rewards_is_per_sample() {
    // 0.5·[1, 2, -4] + 2·[3, 4, 0.25] = [6.5, 9, -1.5]
    let sums = weighted_sum(&[vec![1.0, 2.0, -4.0], vec![3.0, 4.0, 0.25]], &[0.5, 2.0]).unwrap();
    assert_eq!(sums, vec![6.5, 9.0, -1.5]);
    assert!(weighted_sum(&[vec![1.0, 2.0], vec![3.0]], &[1.0, 1.0]).is_err());
    assert!(weighted_sum(&[vec![1.0, 2.0]], &[1.0, 1.0]).is_err());
    assert!(weighted_sum(&[vec![1.0, f32::NAN]], &[1.0]).is_err());
}

#[test]
fn a_weighted_sum_that_overflows_is_an_error_naming_the_sample() {
    // 1e308 · 0 is fine; 1e308 · 1 does not fit an f32 (and 1e308 · 2 not even an f64).
    let rewards = [0.0, 0.0, 1.0, 2.0];
    let err = weighted_sum(&[rewards.to_vec()], &[1e308]).unwrap_err();
    assert!(matches!(&err, Error::NonFinite { index: 2, .. }), "{err:?}");
    for combination in [RewardCombination::WeightedSum, RewardCombination::Gdpo] {
        // Used to return NaN (or silently zero) advantages.
        let err = AdvantageConfig::new()
            .compute_multi(
                &[rewards, [1.0, 0.0, 0.0, 0.0]],
                &[1e308, 1.0],
                combination,
                2,
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::NonFinite { what, .. } if what.contains("weighted sum")),
            "{combination:?}: {err:?}"
        );
    }
    let err = AdvantageConfig::new()
        .compute_multi(&[rewards], &[1e308], RewardCombination::WeightedSum, 2)
        .unwrap_err();
    assert!(err.to_string().contains("index 2"), "{err}");
}
