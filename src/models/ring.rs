//! The data of the 2-D toy task: a mixture of 8 Gaussians (std 0.1) whose centres sit evenly
//! on a circle of radius 2. The tests and the quickstart pre-train [`MlpPolicy`] on it.
//!
//! ```
//! use burn::prelude::*;
//! use flow_rl::Rng;
//! use flow_rl::models::ring::{self, RADIUS};
//!
//! let device = Device::default();
//! let points = ring::ring_samples(256, &mut Rng::seed_from(0), &device); // [256, 2]
//! assert_eq!(points.dims(), [256, 2]);
//! let values = points.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
//! for point in values.chunks(2) {
//!     let radius = (point[0] as f64).hypot(point[1] as f64);
//!     assert!((radius - RADIUS).abs() < 1.0);
//! }
//! ```
//!
//! [`MlpPolicy`]: crate::models::mlp::MlpPolicy

use burn::prelude::*;

use crate::rng::Rng;

/// Number of Gaussian modes on the circle.
pub const MODES: usize = 8;
/// Radius of the circle through the modes' centres.
pub const RADIUS: f64 = 2.0;
/// Standard deviation of each mode, per coordinate.
pub const MODE_STD: f64 = 0.1;

/// The centre `(x, y)` of mode `mode` (taken modulo [`MODES`]), at the angle `mode·2π/8`.
pub fn mode_centre(mode: usize) -> (f64, f64) {
    let angle = (mode % MODES) as f64 * std::f64::consts::TAU / MODES as f64;
    (RADIUS * angle.cos(), RADIUS * angle.sin())
}

/// `count` points drawn from the ring, as a `[count, 2]` tensor of `(x, y)` rows on `device`.
///
/// Each point takes a uniform mode (`rng.below(8)`) and Box–Muller noise from two
/// `rng.uniform()` draws, in that order, so a seed gives the same points everywhere.
pub fn ring_samples(count: usize, rng: &mut Rng, device: &Device) -> Tensor<2> {
    let mut data = Vec::with_capacity(2 * count);
    for _ in 0..count {
        let (centre_x, centre_y) = mode_centre(rng.below(MODES));
        let (u1, u2) = (rng.uniform().max(1e-12), rng.uniform());
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        let (noise_x, noise_y) = (radius * angle.cos(), radius * angle.sin());
        data.push((centre_x + MODE_STD * noise_x) as f32);
        data.push((centre_y + MODE_STD * noise_y) as f32);
    }
    Tensor::from_data(TensorData::new(data, [count, 2]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_evenly_spaced_on_the_circle() {
        let (x, y) = mode_centre(2);
        assert!(x.abs() < 1e-12 && (y - RADIUS).abs() < 1e-12);
        let (x, y) = mode_centre(5);
        let half = RADIUS / 2f64.sqrt();
        assert!((x + half).abs() < 1e-12 && (y + half).abs() < 1e-12);
        assert_eq!(mode_centre(MODES + 1), mode_centre(1));
    }

    #[test]
    fn samples_cluster_around_every_mode_with_the_mode_std() {
        let count = 8000;
        let points = ring_samples(count, &mut Rng::seed_from(3), &Device::default());
        let values = points
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        let mut members = [0usize; MODES];
        let mut squared_offsets = 0.0;
        for point in values.chunks(2) {
            let (x, y) = (point[0] as f64, point[1] as f64);
            let (nearest, d2) = (0..MODES)
                .map(|m| {
                    let (cx, cy) = mode_centre(m);
                    (m, (x - cx).powi(2) + (y - cy).powi(2))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            members[nearest] += 1;
            squared_offsets += d2;
        }
        // Each mode holds 1/8 of the points (binomial std ≈ 30 of 1000).
        assert!(
            members.iter().all(|&n| (850..1150).contains(&n)),
            "{members:?}"
        );
        // E|offset|² = 2·std² for a 2-D Gaussian; the modes are 1.53 apart, so the nearest
        // centre is the own one but for a negligible fraction.
        let per_coordinate = (squared_offsets / count as f64 / 2.0).sqrt();
        assert!(
            (per_coordinate - MODE_STD).abs() < 0.005,
            "{per_coordinate}"
        );
    }

    #[test]
    fn a_seed_gives_the_same_points() {
        let device = Device::default();
        let a = ring_samples(16, &mut Rng::seed_from(7), &device).into_data();
        let b = ring_samples(16, &mut Rng::seed_from(7), &device).into_data();
        assert_eq!(a, b);
    }
}
