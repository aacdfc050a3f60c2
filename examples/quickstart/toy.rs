//! The 2-D toy task: data, reward and evaluation.

use flow_rl::kernel::Ode;
use flow_rl::models::mlp::MlpPolicy;
use flow_rl::models::ring::mode_centre;
use flow_rl::policy::Unconditional;
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::rollout::{RolloutConfig, RolloutPlan, rollout};
use flow_rl::schedule::SigmaScheduleConfig;
use flow_rl::{Result, Rng};

/// How close a point is to the three upper modes (45°, 90°, 135°): a sum of Gaussian bumps,
/// so the reward is smooth and bounded.
pub fn score(point: &[f32]) -> f32 {
    (1..=3)
        .map(|m| {
            let (cx, cy) = mode_centre(m);
            let d2 = (point[0] as f64 - cx).powi(2) + (point[1] as f64 - cy).powi(2);
            (-d2 / 0.5).exp() as f32
        })
        .sum()
}

/// The reward of the toy task.
pub fn upper_modes() -> RewardSet<Unconditional> {
    RewardSet::single(HostReward::new("upper-modes", score))
}

/// `count` samples of the deterministic (ODE) sampler, T = 10, shift 3.
pub fn ode_samples(policy: &MlpPolicy, count: usize, seed: u64) -> Result<Vec<[f32; 2]>> {
    let schedule = SigmaScheduleConfig::new().init()?;
    let config = RolloutConfig::new().with_group_size(count);
    let out = rollout(
        policy,
        &Unconditional(1),
        &config,
        &RolloutPlan {
            schedule: &schedule,
            kernel: &Ode,
            sde_steps: &[],
            latent_dims: 2,
        },
        &mut Rng::seed_from(seed),
    )?;
    let values = out
        .samples
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|err| flow_rl::Error::TensorRead(format!("{err:?}")))?;
    Ok(values.chunks(2).map(|p| [p[0], p[1]]).collect())
}

/// Mean reward of samples.
pub fn mean_reward(samples: &[[f32; 2]]) -> f64 {
    samples.iter().map(|p| score(p) as f64).sum::<f64>() / samples.len() as f64
}
