//! The objectives the tests exercise, each paired with its f64 reference loss.

use flow_rl::objective::{
    DppoDivergence, DppoMask, FlowDppoConfig, GrpoGuardConfig, RatioClipConfig, ReferenceKlConfig,
    TrustRegionObjective,
};

use super::HostBatch;

/// An objective paired with its f64 reference loss.
pub type WithReference = (
    Box<dyn TrustRegionObjective>,
    Box<dyn Fn(&HostBatch) -> f64>,
);

/// Every objective and variant with a reference loss, configured so that both branches (kept
/// and clipped, kept and dropped) occur on a random batch with `drift` 0.3. The thresholds
/// are the decision boundaries the backend conformance suite keeps clear of:
/// r ∈ {0.95, 1.08}, r̂ ∈ {0.9, 1.1}, KL = 0.01, velocity divergence = 0.5, log r = 0.
pub fn objectives_with_reference() -> Vec<WithReference> {
    vec![
        (
            Box::new(
                RatioClipConfig::new()
                    .with_epsilon_low(0.05)
                    .with_epsilon_high(0.08)
                    .init()
                    .unwrap(),
            ),
            Box::new(|b: &HostBatch| b.ratio_clip_loss(0.05, 0.08)),
        ),
        (
            Box::new(GrpoGuardConfig::new().with_epsilon(0.1).init().unwrap()),
            Box::new(|b: &HostBatch| b.grpo_guard_loss(0.1, true)),
        ),
        (
            Box::new(
                GrpoGuardConfig::new()
                    .with_epsilon(0.1)
                    .with_dt_reweighting(false)
                    .init()
                    .unwrap(),
            ),
            Box::new(|b: &HostBatch| b.grpo_guard_loss(0.1, false)),
        ),
        (
            Box::new(FlowDppoConfig::new().with_threshold(0.01).init().unwrap()),
            Box::new(|b: &HostBatch| b.dppo_loss(0.01, false, false)),
        ),
        (
            Box::new(
                FlowDppoConfig::new()
                    .with_threshold(0.01)
                    .with_mask(DppoMask::Symmetric)
                    .init()
                    .unwrap(),
            ),
            Box::new(|b: &HostBatch| b.dppo_loss(0.01, true, false)),
        ),
        (
            Box::new(
                FlowDppoConfig::new()
                    .with_threshold(0.5)
                    .with_divergence(DppoDivergence::Velocity)
                    .init()
                    .unwrap(),
            ),
            Box::new(|b: &HostBatch| b.dppo_loss(0.5, false, true)),
        ),
        (
            Box::new(
                ReferenceKlConfig::new()
                    .with_beta(0.3)
                    .init(FlowDppoConfig::new().with_threshold(0.01).init().unwrap())
                    .unwrap(),
            ),
            Box::new(|b: &HostBatch| b.dppo_loss(0.01, false, false) + 0.3 * b.mean_reference_kl()),
        ),
    ]
}
