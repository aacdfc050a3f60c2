//! Data-parallel runs for the tests: an in-process communicator whose workers are threads,
//! and the runs (MLP toy, tiny LoRA MMDiT) whose parameters and metrics must not depend on
//! the number of workers.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use burn::prelude::*;
use burn::tensor::Distribution;
use flow_rl::distributed::{Communicator, SingleProcess};
use flow_rl::metrics::StepMetrics;
use flow_rl::models::mlp::MlpPolicy;
use flow_rl::models::mmdit::{Mmdit, MmditCondition, MmditConfig, MmditLoraConfig};
use flow_rl::objective::{ObjectiveConfig, ObjectiveMetrics};
use flow_rl::policy::Unconditional;
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::schedule::SdeStepSelection;
use flow_rl::trainer::{Trainer, TrainerConfig};
use serde::{Deserialize, Serialize};

use super::module_values;

/// One worker of an in-process group whose workers are threads: each operation meets the
/// others at a barrier, and sums are taken in rank order, so every worker gets the same bits.
pub struct ThreadCommunicator {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    world: usize,
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f32>>>,
    bytes: Mutex<Vec<u8>>,
}

impl ThreadCommunicator {
    /// `world` workers of one group, rank 0 first.
    pub fn group(world: usize) -> Vec<ThreadCommunicator> {
        let shared = Arc::new(Shared {
            world,
            barrier: Barrier::new(world),
            slots: Mutex::new(vec![Vec::new(); world]),
            bytes: Mutex::new(Vec::new()),
        });
        (0..world)
            .map(|rank| ThreadCommunicator {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl Communicator for ThreadCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, values: &mut [f32]) -> flow_rl::Result<()> {
        self.shared.slots.lock().unwrap()[self.rank] = values.to_vec();
        self.shared.barrier.wait();
        {
            let slots = self.shared.slots.lock().unwrap();
            for (i, value) in values.iter_mut().enumerate() {
                *value = slots.iter().map(|slot| slot[i]).fold(0.0, |sum, v| sum + v);
            }
        }
        self.shared.barrier.wait();
        Ok(())
    }

    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> flow_rl::Result<()> {
        if self.rank == root {
            *self.shared.bytes.lock().unwrap() = bytes.clone();
        }
        self.shared.barrier.wait();
        if self.rank != root {
            *bytes = self.shared.bytes.lock().unwrap().clone();
        }
        self.shared.barrier.wait();
        Ok(())
    }

    fn barrier(&self) -> flow_rl::Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }
}

/// The one-worker communicator, as the runs above are compared with.
pub fn single_process() -> Rc<dyn Communicator> {
    Rc::new(SingleProcess)
}

/// `run` on `world` worker threads, each with its own communicator; the results in rank
/// order.
pub fn on_threads<R: Send>(world: usize, run: impl Fn(Rc<dyn Communicator>) -> R + Sync) -> Vec<R> {
    let run = &run;
    std::thread::scope(|scope| {
        let handles: Vec<_> = ThreadCommunicator::group(world)
            .into_iter()
            .map(|communicator| scope.spawn(move || run(Rc::new(communicator))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// What a run leaves: the policy's parameters and each step's metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub parameters: Vec<f32>,
    pub metrics: Vec<StepMetrics>,
}

/// The MLP toy's configuration: 8 groups of 4, 2 mini-batches, 3 SDE steps.
pub fn mlp_config(objective: &str) -> TrainerConfig {
    TrainerConfig::new(2)
        .with_group_size(4)
        .with_groups_per_rollout(8)
        .with_minibatches_per_rollout(2)
        .with_inner_epochs(2)
        .with_sde_steps(SdeStepSelection::RandomSubset {
            window_start: 0.0,
            window_end: 0.5,
            count: 3,
        })
        .with_objective(ObjectiveConfig::from_name(objective).unwrap())
        .with_learning_rate(0.05)
        .with_adam_epsilon(1e-3)
        .with_seed(5)
}

/// Closeness of a 2-D point to (1, 1).
fn closeness(point: &[f32]) -> f32 {
    -((point[0] - 1.0).powi(2) + (point[1] - 1.0).powi(2))
}

/// Reward: closeness to (1, 1).
pub fn distance_reward() -> RewardSet<Unconditional> {
    RewardSet::single(HostReward::new("near-(1,1)", closeness))
}

/// On worker 1, a step of the MLP toy (`mlp_config("flow-dppo")`) scores a NaN reward; the
/// step fails on every worker, leaves the trainer as it was (asserted here), and a retry with
/// a good reward continues the run. Returns this worker's error and its two-step run.
pub fn fail_a_step_then_retry(
    communicator: Rc<dyn Communicator>,
    base: &MlpPolicy,
) -> (flow_rl::Error, Outcome) {
    let rank = communicator.rank();
    let calls = AtomicUsize::new(0);
    // Worker 1's reward is NaN on its second rollout (its 4 groups × 4 samples) only.
    let samples_per_rollout = 16;
    let flaky = RewardSet::single(HostReward::new("near-(1,1)", move |point: &[f32]| {
        let call = calls.fetch_add(1, Ordering::Relaxed);
        if rank == 1 && call / samples_per_rollout == 1 {
            f32::NAN
        } else {
            closeness(point)
        }
    }));
    let device = Device::default().autodiff();
    let mut trainer = Trainer::new(mlp_config("flow-dppo"), base.clone(), &device)
        .unwrap()
        .with_communicator(communicator)
        .unwrap();
    let first = trainer.step(&Unconditional(8), &flaky).unwrap();
    let before = module_values(trainer.policy());
    let error = trainer.step(&Unconditional(8), &flaky).unwrap_err();
    assert_eq!(
        trainer.steps_done(),
        1,
        "worker {rank}: the failed step counted"
    );
    assert!(
        module_values(trainer.policy()) == before,
        "worker {rank}: the failed step changed the parameters"
    );
    let second = trainer.step(&Unconditional(8), &distance_reward()).unwrap();
    let outcome = Outcome {
        parameters: module_values(trainer.policy()),
        metrics: vec![first, second],
    };
    (error, outcome)
}

/// `steps` steps of the MLP toy from `base` with `config` on `communicator`'s workers.
pub fn train_mlp(
    config: TrainerConfig,
    base: &MlpPolicy,
    communicator: Rc<dyn Communicator>,
    steps: usize,
) -> flow_rl::Result<Outcome> {
    let device = Device::default().autodiff();
    let groups = config.groups_per_rollout;
    let mut trainer =
        Trainer::new(config, base.clone(), &device)?.with_communicator(communicator)?;
    let metrics = (0..steps)
        .map(|_| trainer.step(&Unconditional(groups), &distance_reward()))
        .collect::<flow_rl::Result<_>>()?;
    Ok(Outcome {
        parameters: module_values(trainer.policy()),
        metrics,
    })
}

/// The tiny MMDiT with rank-4 LoRA adapters, and 4 prompts' conditions, as worker `rank`
/// builds them: every worker the same base weights and prompts (seed 3), but adapters of
/// its own (seed 100 + rank), to show that rank 0's are broadcast. burn's device RNG is
/// shared by threads, so in-process workers must build theirs one after the other.
pub fn tiny_mmdit_worker_setup(rank: usize) -> (Mmdit, MmditCondition) {
    let device = Device::default().autodiff();
    device.seed(3);
    let model = MmditConfig::tiny().init(&device).unwrap();
    // burn draws parameters lazily: draw the base weights now, under this seed.
    let _ = module_values(&model);
    let normal = Distribution::Normal(0.0, 1.0);
    let conditions = MmditCondition::new(
        Tensor::<3>::random([4, 3, 64], normal, &device),
        Tensor::<2>::random([4, 32], normal, &device),
    );
    device.seed(100 + rank as u64);
    let policy = MmditLoraConfig::new().with_rank(4).apply(model).unwrap();
    let _ = module_values(&policy);
    (policy, conditions)
}

/// `steps` Flow-DPPO steps of the tiny LoRA MMDiT (4 prompts of 2 samples, 2 mini-batches)
/// from `setup` on `communicator`'s workers.
pub fn train_tiny_mmdit(
    (policy, conditions): (Mmdit, MmditCondition),
    communicator: Rc<dyn Communicator>,
    steps: usize,
) -> Outcome {
    let device = Device::default().autodiff();
    let reward = RewardSet::single(HostReward::new("mean", |sample: &[f32]| {
        sample.iter().sum::<f32>() / sample.len() as f32
    }));
    let config = TrainerConfig::new(16 * 4 * 4)
        .with_group_size(2)
        .with_groups_per_rollout(4)
        .with_minibatches_per_rollout(2)
        .with_learning_rate(1e-3)
        .with_adam_epsilon(1e-3)
        .with_seed(9);
    let mut trainer = Trainer::new(config, policy, &device)
        .unwrap()
        .with_communicator(communicator)
        .unwrap();
    let metrics = (0..steps)
        .map(|_| trainer.step(&conditions, &reward).unwrap())
        .collect();
    Outcome {
        parameters: module_values(trainer.policy()),
        metrics,
    }
}

/// `|got − want| ≤ rel·max(|want|, scale) + 1e-12`.
fn assert_close(got: f64, want: f64, rel: f64, scale: f64, what: &str) {
    let tolerance = rel * want.abs().max(scale) + 1e-12;
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: {got} vs {want} (rel {rel})"
    );
}

/// Divergences square the difference of two nearly equal f32 means (a KL of 5e-5 at s = 0.1
/// is a difference of 1e-3 between values near 1), so rounding of the parameters at 1e-7
/// reaches them amplified: 1.2e-5 relative was measured on the MLP toy. They get 1e-4.
const DIVERGENCE_RELATIVE: f64 = 1e-4;

fn assert_objective_close(got: &ObjectiveMetrics, want: &ObjectiveMetrics, what: &str) {
    assert_eq!(got.rows, want.rows, "{what}: rows");
    let rel = 1e-5;
    // The ratio's std (2e-6 on the tiny MMDiT) is far below the f32 resolution of the
    // ratios it comes from (1.2e-7 at 1): it is compared to 1e-7 absolute at least.
    for (name, g, w, rel, scale) in [
        ("loss", got.loss, want.loss, DIVERGENCE_RELATIVE, 0.0),
        ("ratio mean", got.ratio.mean, want.ratio.mean, rel, 0.0),
        (
            "ratio std",
            got.ratio.std,
            want.ratio.std,
            DIVERGENCE_RELATIVE,
            1e-3,
        ),
        ("ratio min", got.ratio.min, want.ratio.min, rel, 0.0),
        ("ratio max", got.ratio.max, want.ratio.max, rel, 0.0),
        (
            "approx kl",
            got.approx_kl,
            want.approx_kl,
            DIVERGENCE_RELATIVE,
            0.0,
        ),
        (
            "kl mean",
            got.kl_mean,
            want.kl_mean,
            DIVERGENCE_RELATIVE,
            0.0,
        ),
        ("kl max", got.kl_max, want.kl_max, DIVERGENCE_RELATIVE, 0.0),
    ] {
        assert_close(g, w, rel, scale, &format!("{what}: {name}"));
    }
    assert_eq!(got.clip.is_some(), want.clip.is_some(), "{what}: clip");
    if let (Some(g), Some(w)) = (got.clip, want.clip) {
        assert_close(
            g.fraction,
            w.fraction,
            rel,
            0.0,
            &format!("{what}: clipped"),
        );
    }
    assert_eq!(got.mask.is_some(), want.mask.is_some(), "{what}: mask");
    if let (Some(g), Some(w)) = (got.mask, want.mask) {
        assert_close(
            g.dropped_fraction,
            w.dropped_fraction,
            rel,
            0.0,
            &format!("{what}: dropped"),
        );
        assert_close(
            g.divergence_mean,
            w.divergence_mean,
            DIVERGENCE_RELATIVE,
            0.0,
            &format!("{what}: divergence"),
        );
    }
}

/// `got` (one worker of a data-parallel run) equals `want` (one worker alone): parameters
/// and every metric but wall times to 1e-5 relative.
pub fn assert_same_run(got: &Outcome, want: &Outcome, what: &str) {
    assert_eq!(
        got.parameters.len(),
        want.parameters.len(),
        "{what}: parameters"
    );
    let scale = want
        .parameters
        .iter()
        .fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    for (i, (&g, &w)) in got.parameters.iter().zip(&want.parameters).enumerate() {
        assert_close(
            g as f64,
            w as f64,
            1e-5,
            scale,
            &format!("{what}: parameter {i}"),
        );
    }
    assert_eq!(got.metrics.len(), want.metrics.len(), "{what}: steps");
    for (step, (g, w)) in got.metrics.iter().zip(&want.metrics).enumerate() {
        let what = format!("{what}, step {step}");
        assert_eq!(g.sde_steps, w.sde_steps, "{what}: SDE steps");
        assert_eq!(g.updates, w.updates, "{what}: updates");
        assert_eq!(g.skipped_updates, w.skipped_updates, "{what}: skipped");
        for (gr, wr) in g.rewards.iter().zip(&w.rewards) {
            assert_close(gr.mean, wr.mean, 1e-5, 0.0, &format!("{what}: reward mean"));
            assert_close(gr.std, wr.std, 1e-5, 0.0, &format!("{what}: reward std"));
        }
        assert_close(
            g.zero_std_group_fraction,
            w.zero_std_group_fraction,
            0.0,
            0.0,
            &format!("{what}: zero-std groups"),
        );
        assert_close(
            g.grad_norm,
            w.grad_norm,
            1e-5,
            0.0,
            &format!("{what}: grad norm"),
        );
        assert_objective_close(&g.objective, &w.objective, &format!("{what}: objective"));
        let (gf, wf) = (g.first_update.as_ref(), w.first_update.as_ref());
        assert_eq!(gf.is_some(), wf.is_some(), "{what}: first update");
        if let (Some(gf), Some(wf)) = (gf, wf) {
            assert_objective_close(gf, wf, &format!("{what}: first update"));
        }
    }
}
