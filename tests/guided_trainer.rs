//! Classifier-free guidance and tensor conditions through the whole trainer.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use flow_rl::policy::{FlowPolicy, Guided};
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::trainer::{Trainer, TrainerConfig};

/// `v = W·[x, σ, c]` with a 1-D condition per sample.
#[derive(Module, Debug)]
struct Conditional {
    linear: Linear,
}

impl FlowPolicy for Conditional {
    type Condition = Tensor<2>;
    fn velocity(&self, latents: Tensor<2>, sigma: Tensor<1>, condition: &Tensor<2>) -> Tensor<2> {
        let input = Tensor::cat(vec![latents, sigma.unsqueeze_dim(1), condition.clone()], 1);
        self.linear.forward(input)
    }
}

#[test]
fn a_guided_conditional_policy_trains_with_conditions_on_the_autodiff_device() {
    let device = Device::default().autodiff();
    let policy = Conditional {
        linear: LinearConfig::new(4, 2).init(&device),
    };
    let unconditional = Tensor::<2>::zeros([1, 1], &device);
    let guided = Guided::new(policy, 3.0, unconditional).unwrap();
    // Guidance runs both branches in one forward, in the rollout (no-grad) and in the replay
    // (autodiff); the replay of the first mini-batch must still be on-policy.
    let reward = RewardSet::single(HostReward::new("x", |p: &[f32]| p[0]));
    let config = TrainerConfig::new(2)
        .with_group_size(8)
        .with_groups_per_rollout(2)
        .with_learning_rate(1e-2)
        .with_weight_decay(0.0);
    let mut trainer = Trainer::new(config, guided, &device).unwrap();
    let conditions = Tensor::<2>::from_floats([[1.0], [-1.0]], &device);
    let first = trainer.step(&conditions, &reward).unwrap();
    let second = trainer.step(&conditions, &reward).unwrap();
    let replay = first.first_update.unwrap();
    assert!(
        (replay.ratio.max - 1.0).abs() < 1e-5 && replay.kl_max < 1e-5,
        "{replay:?}"
    );
    assert_eq!(second.updates, 2);
    assert!(second.objective.kl_mean > 0.0);
}
