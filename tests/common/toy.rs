//! The 2-D toy task: 8 Gaussians on a circle.

use burn::prelude::*;
use flow_rl::models::mlp::{MlpPolicy, MlpPolicyConfig};
use flow_rl::models::ring;
use flow_rl::models::{FlowMatchingConfig, pretrain_flow_matching};
use flow_rl::policy::Unconditional;

/// Mean distance of the points `[B, 2]` to their nearest mode centre.
pub fn distance_to_ring(samples: Tensor<2>) -> f64 {
    let values = samples
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    let distances: Vec<f64> = values
        .chunks(2)
        .map(|p| {
            (0..ring::MODES)
                .map(|m| {
                    let (cx, cy) = ring::mode_centre(m);
                    ((p[0] as f64 - cx).powi(2) + (p[1] as f64 - cy).powi(2)).sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    distances.iter().sum::<f64>() / distances.len() as f64
}

/// An MLP pre-trained on the ring for `steps` steps, on `device` (autodiff).
pub fn pretrained_mlp(steps: usize, device: &Device) -> MlpPolicy {
    device.seed(0);
    let policy = MlpPolicyConfig::new().with_hidden(64).init(device).unwrap();
    let config = FlowMatchingConfig::new().with_steps(steps);
    pretrain_flow_matching(
        policy,
        &config,
        |batch, rng| (ring::ring_samples(batch, rng, device), Unconditional(batch)),
        |_, _| {},
    )
    .unwrap()
    .0
}
