//! The 2-D toy task: 8 Gaussians on a circle.

use burn::prelude::*;
use flow_rl::Rng;
use flow_rl::models::mlp::{MlpPolicy, MlpPolicyConfig};
use flow_rl::models::{FlowMatchingConfig, pretrain_flow_matching};
use flow_rl::policy::Unconditional;

/// 8 Gaussians (std 0.1) on a circle of radius 2.
pub fn ring_samples(count: usize, rng: &mut Rng, device: &Device) -> Tensor<2> {
    let mut data = Vec::with_capacity(2 * count);
    for _ in 0..count {
        let mode = rng.below(8) as f64;
        let angle = mode * std::f64::consts::TAU / 8.0;
        let (u1, u2) = (rng.uniform().max(1e-12), rng.uniform());
        let radius = (-2.0 * u1.ln()).sqrt();
        let (n1, n2) = (
            radius * (std::f64::consts::TAU * u2).cos(),
            radius * (std::f64::consts::TAU * u2).sin(),
        );
        data.push((2.0 * angle.cos() + 0.1 * n1) as f32);
        data.push((2.0 * angle.sin() + 0.1 * n2) as f32);
    }
    Tensor::from_data(TensorData::new(data, [count, 2]), device)
}

pub fn distance_to_ring(samples: Tensor<2>) -> f64 {
    let values = samples
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    let distances: Vec<f64> = values
        .chunks(2)
        .map(|p| {
            (0..8)
                .map(|m| {
                    let angle = m as f64 * std::f64::consts::TAU / 8.0;
                    ((p[0] as f64 - 2.0 * angle.cos()).powi(2)
                        + (p[1] as f64 - 2.0 * angle.sin()).powi(2))
                    .sqrt()
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
        |batch, rng| (ring_samples(batch, rng, device), Unconditional(batch)),
        |_, _| {},
    )
    .unwrap()
    .0
}
