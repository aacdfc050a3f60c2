//! A failed trainer step changes nothing, a non-finite gradient skips the whole update, and
//! bad configurations are errors rather than panics or NaN parameters.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::{Module, Param};
use burn::prelude::*;
use common::module_values;
use common::toy::pretrained_mlp;
use flow_rl::Error;
use flow_rl::models::mlp::MlpPolicy;
use flow_rl::policy::{FlowPolicy, Unconditional};
use flow_rl::reward::{HostReward, Reward, RewardSet};
use flow_rl::trainer::{Trainer, TrainerConfig};

/// What [`Faulty`] does on its chosen forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A NaN velocity: the objective refuses the rows.
    NanVelocity,
    /// A finite velocity whose gradient is infinite.
    InfiniteGradient,
}

/// The MLP scaled by a trainable scalar, failing on one chosen forward pass (counted over
/// the rollout's and the updates' passes; the count is shared by every clone).
#[derive(Module, Debug)]
struct Faulty {
    mlp: MlpPolicy,
    scale: Param<Tensor<1>>,
    #[module(skip)]
    calls: Arc<AtomicUsize>,
    #[module(skip)]
    failing_call: Arc<AtomicUsize>,
    #[module(skip)]
    fault: Fault,
}

impl Faulty {
    fn new(mlp: MlpPolicy, fault: Fault, device: &Device) -> Self {
        Self {
            mlp,
            scale: Param::from_tensor(Tensor::ones([1], device)),
            calls: Arc::new(AtomicUsize::new(0)),
            failing_call: Arc::new(AtomicUsize::new(usize::MAX)),
            fault,
        }
    }

    /// Fails on the `call`-th forward pass from now (0 = the next one).
    fn fail_at(&self, call: usize) {
        let done = self.calls.load(Ordering::SeqCst);
        self.failing_call.store(done + call, Ordering::SeqCst);
    }

    fn heal(&self) {
        self.failing_call.store(usize::MAX, Ordering::SeqCst);
    }
}

impl FlowPolicy for Faulty {
    type Condition = Unconditional;

    fn velocity(&self, latents: Tensor<2>, sigma: Tensor<1>, c: &Unconditional) -> Tensor<2> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let scale = self.scale.val().unsqueeze_dim::<2>(1);
        let velocity = self.mlp.velocity(latents, sigma, c) * scale.clone();
        if call != self.failing_call.load(Ordering::SeqCst) {
            return velocity;
        }
        match self.fault {
            Fault::NanVelocity => velocity.mul_scalar(f32::NAN),
            // `scale − sg(scale)` is exactly 0 forwards, so the velocity is unchanged, while
            // its gradient is multiplied by 1e60, which overflows f32.
            Fault::InfiniteGradient => {
                velocity
                    + (scale.clone() - scale.detach())
                        .mul_scalar(1e30)
                        .mul_scalar(1e30)
            }
        }
    }
}

fn reward() -> RewardSet<Unconditional> {
    RewardSet::single(HostReward::new("near-(1,1)", |p: &[f32]| {
        -((p[0] - 1.0).powi(2) + (p[1] - 1.0).powi(2))
    }))
}

/// 4 groups × 4 samples × 3 trained steps = 48 rows in 2 mini-batches of 24.
fn config() -> TrainerConfig {
    TrainerConfig::new(2)
        .with_group_size(4)
        .with_groups_per_rollout(4)
        .with_weight_decay(0.0)
        .with_learning_rate(1e-2)
}

/// The rollout's forward passes: one per step of the default 10-step schedule.
const ROLLOUT_PASSES: usize = 10;

/// Two trainers from the same initial weights (tests run in parallel and share the device's
/// generator, so each pre-training would give different weights).
fn faulty_trainers(config: TrainerConfig, fault: Fault) -> [Trainer<Faulty>; 2] {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(50, &device);
    [(); 2].map(|_| {
        let policy = Faulty::new(base.clone(), fault, &device);
        Trainer::new(config.clone(), policy, &device).unwrap()
    })
}

#[test]
fn a_step_failing_in_its_second_mini_batch_changes_nothing() {
    let [mut trainer, mut reference] = faulty_trainers(config(), Fault::NanVelocity);
    let before = module_values(trainer.policy());
    // The second mini-batch's replay pass: the first mini-batch has already been applied.
    trainer.policy().fail_at(ROLLOUT_PASSES + 1);
    let err = trainer.step(&Unconditional(4), &reward()).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err}");
    assert_eq!(
        module_values(trainer.policy()),
        before,
        "parameters untouched"
    );
    assert_eq!(trainer.steps_done(), 0);

    trainer.policy().heal();
    for _ in 0..2 {
        // The second step also checks the optimiser state: it depends on Adam's moments.
        let retried = trainer.step(&Unconditional(4), &reward()).unwrap();
        let uninterrupted = reference.step(&Unconditional(4), &reward()).unwrap();
        assert_eq!(
            module_values(trainer.policy()),
            module_values(reference.policy())
        );
        assert_eq!(retried.objective, uninterrupted.objective);
        assert_eq!(
            retried.sde_steps, uninterrupted.sde_steps,
            "the RNG was restored"
        );
    }
}

#[test]
fn a_reward_error_leaves_the_rng_where_it_was() {
    struct FailsOnce(AtomicUsize);
    impl Reward<Unconditional> for FailsOnce {
        fn name(&self) -> &str {
            "fails-once"
        }
        fn score(&self, samples: &Tensor<2>, _: &Unconditional) -> flow_rl::Result<Vec<f32>> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(Error::InvalidArgument {
                    name: "reward server".into(),
                    value: "connection refused".into(),
                    expected: "an answer".into(),
                });
            }
            let values = common::values(samples.clone());
            Ok(values
                .chunks(2)
                .map(|p| -(p[0] - 1.0).powi(2) as f32)
                .collect())
        }
    }
    let flaky = RewardSet::single(FailsOnce(AtomicUsize::new(0)));
    let steady = RewardSet::single(FailsOnce(AtomicUsize::new(1)));
    let [mut trainer, mut reference] = faulty_trainers(config(), Fault::NanVelocity);
    assert!(trainer.step(&Unconditional(4), &flaky).is_err());
    let retried = trainer.step(&Unconditional(4), &flaky).unwrap();
    let uninterrupted = reference.step(&Unconditional(4), &steady).unwrap();
    assert_eq!(retried.sde_steps, uninterrupted.sde_steps);
    assert_eq!(retried.rewards, uninterrupted.rewards, "the same rollout");
    assert_eq!(
        module_values(trainer.policy()),
        module_values(reference.policy())
    );
}

#[test]
fn an_infinite_gradient_in_one_micro_batch_skips_the_whole_update() {
    // 24 rows per mini-batch in micro-batches of 5: passes 10..15 are the first mini-batch.
    let config = config().with_micro_batch_rows(Some(5));
    let [mut trainer, _] = faulty_trainers(config, Fault::InfiniteGradient);
    let before = module_values(trainer.policy());
    trainer.policy().fail_at(ROLLOUT_PASSES + 3);
    let metrics = trainer.step(&Unconditional(4), &reward()).unwrap();
    assert_eq!(
        metrics.skipped_updates, 1,
        "the first mini-batch is skipped whole"
    );
    assert_eq!(metrics.updates, 1, "the second one is applied");
    let after = module_values(trainer.policy());
    assert_ne!(after, before);
    assert!(
        after.iter().all(|v| v.is_finite()),
        "nothing non-finite was applied"
    );
}

#[test]
fn bad_optimiser_settings_are_named_errors() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(5, &device);
    for (config, name) in [
        (config().with_weight_decay(f32::NAN), "weight_decay"),
        (config().with_weight_decay(-1e-2), "weight_decay"),
        (config().with_adam_epsilon(-1e-8), "adam_epsilon"),
        (config().with_adam_epsilon(0.0), "adam_epsilon"),
        (config().with_adam_epsilon(f32::INFINITY), "adam_epsilon"),
    ] {
        let err = Trainer::new(config, base.clone(), &device)
            .err()
            .expect("refused");
        assert!(
            matches!(&err, Error::InvalidArgument { name: n, .. } if n == name),
            "{err}"
        );
    }
}

#[test]
fn latent_dims_that_do_not_fit_the_mlp_are_an_error_not_a_panic() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(5, &device);
    let mut config = config();
    config.latent_dims = 3;
    let mut trainer = Trainer::new(config, base.clone(), &device).unwrap();
    let err = trainer.step(&Unconditional(4), &reward()).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { name, .. } if name == "latent_dims"),
        "{err}"
    );
    assert_eq!(module_values(trainer.policy()), module_values(&base));
}
