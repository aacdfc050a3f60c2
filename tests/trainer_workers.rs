//! The trainer on several workers (threads of one process, through an in-process
//! communicator): the same seed gives the one-worker run on any number of workers, and bad
//! input or a failure on one worker fails every worker.

mod common;

use burn::prelude::*;
use common::toy::pretrained_mlp;
use common::workers::{
    Outcome, assert_same_run, distance_reward, fail_a_step_then_retry, mlp_config, on_threads,
    single_process, tiny_mmdit_worker_setup, train_mlp, train_tiny_mmdit,
};
use common::{module_values, scratch};
use flow_rl::Error;
use flow_rl::distributed::broadcast_through_all_reduce;
use flow_rl::policy::Unconditional;
use flow_rl::trainer::Trainer;

/// Every worker ends with the same bits: they took the same reduced gradients.
fn assert_workers_agree(outcomes: &[Outcome]) {
    for (rank, outcome) in outcomes.iter().enumerate().skip(1) {
        assert_bit_identical(&outcome.parameters, &outcomes[0].parameters, rank);
    }
}

fn assert_bit_identical(got: &[f32], want: &[f32], rank: usize) {
    assert_eq!(got.len(), want.len(), "worker {rank}: parameter count");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "worker {rank}: parameter {i} is {} against {}",
            got[i], want[i]
        );
    }
}

#[test]
fn the_mlp_toy_on_two_and_four_workers_is_the_one_worker_run() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(100, &device);
    for objective in ["ratio-clip", "flow-dppo"] {
        let config = mlp_config(objective);
        let alone = train_mlp(config.clone(), &base, single_process(), 3).unwrap();
        assert!(alone.metrics.iter().all(|m| m.updates == 4));
        assert_ne!(
            alone.parameters,
            module_values(&base),
            "{objective}: it trained"
        );
        for world in [2, 4] {
            let outcomes = on_threads(world, |communicator| {
                train_mlp(config.clone(), &base, communicator, 3).unwrap()
            });
            assert_workers_agree(&outcomes);
            for (rank, outcome) in outcomes.iter().enumerate() {
                assert_same_run(
                    outcome,
                    &alone,
                    &format!("{objective}, worker {rank} of {world}"),
                );
            }
        }
    }
}

#[test]
fn the_tiny_lora_mmdit_on_two_workers_is_the_one_worker_run() {
    // Each worker initialises its adapters with another seed: rank 0's are broadcast.
    let alone = train_tiny_mmdit(tiny_mmdit_worker_setup(0), single_process(), 2);
    let setups: Vec<_> = (0..2).map(tiny_mmdit_worker_setup).collect();
    let outcomes = on_threads(2, |communicator| {
        let setup = setups[communicator.rank()].clone();
        train_tiny_mmdit(setup, communicator, 2)
    });
    assert_workers_agree(&outcomes);
    for (rank, outcome) in outcomes.iter().enumerate() {
        assert_same_run(outcome, &alone, &format!("tiny MMDiT, worker {rank} of 2"));
    }
}

#[test]
fn groups_that_do_not_divide_by_the_world_size_are_refused_on_every_worker() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(1, &device);
    let config = mlp_config("flow-dppo").with_groups_per_rollout(3);
    let errors = on_threads(2, |communicator| {
        train_mlp(config.clone(), &base, communicator, 1)
            .unwrap_err()
            .to_string()
    });
    for error in errors {
        assert!(
            error.contains("groups_per_rollout") && error.contains("world size 2"),
            "{error}"
        );
    }
}

#[test]
fn workers_with_different_configurations_all_fail_naming_the_fields() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(1, &device);
    let errors = on_threads(3, |communicator| {
        let mut config = mlp_config("flow-dppo");
        if communicator.rank() == 2 {
            config = config.with_learning_rate(0.5).with_inner_epochs(1);
        }
        train_mlp(config, &base, communicator, 1).unwrap_err()
    });
    let own = errors[2].to_string();
    assert!(
        own.contains("worker 2") && own.contains("inner_epochs, learning_rate"),
        "{own}"
    );
    for error in &errors[..2] {
        match error {
            Error::WorkerFailed { failures, .. } => {
                assert_eq!(failures.len(), 1);
                assert_eq!(failures[0].rank, 2);
                assert!(failures[0].message.contains("learning_rate"), "{error}");
            }
            other => panic!("expected WorkerFailed, got {other}"),
        }
    }
    // Settings that only bound memory may differ.
    let outcomes = on_threads(2, |communicator| {
        let config = mlp_config("flow-dppo")
            .with_micro_batch_rows(Some(3 + communicator.rank()))
            .with_rollout_batch_size(Some(5));
        train_mlp(config, &base, communicator, 1).unwrap()
    });
    assert_workers_agree(&outcomes);
}

#[test]
fn a_reward_failure_on_one_worker_fails_the_step_everywhere_and_a_retry_continues_the_run() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(50, &device);
    let alone = train_mlp(mlp_config("flow-dppo"), &base, single_process(), 2).unwrap();
    let outcomes = on_threads(2, |communicator| {
        fail_a_step_then_retry(communicator, &base)
    });
    assert!(
        matches!(&outcomes[1].0, Error::NonFinite { .. }),
        "{}",
        outcomes[1].0
    );
    match &outcomes[0].0 {
        Error::WorkerFailed { phase, failures } => {
            assert_eq!(phase, "the rollout and its rewards");
            assert_eq!(failures[0].rank, 1);
            assert!(
                failures[0].message.contains("non-finite"),
                "{}",
                outcomes[0].0
            );
        }
        other => panic!("expected WorkerFailed, got {other}"),
    }
    for (rank, (_, outcome)) in outcomes.iter().enumerate() {
        assert_same_run(outcome, &alone, &format!("worker {rank} after a retry"));
    }
}

#[test]
fn rank_zero_writes_the_checkpoint_and_every_worker_resumes_from_it() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(50, &device);
    let config = mlp_config("ratio-clip");
    let alone = train_mlp(config.clone(), &base, single_process(), 3).unwrap();
    let path = scratch("workers.ckpt");
    let outcomes = on_threads(2, |communicator| {
        let device = Device::default().autodiff();
        let mut trainer = Trainer::new(config.clone(), base.clone(), &device)
            .unwrap()
            .with_communicator(communicator.clone())
            .unwrap();
        let mut metrics: Vec<_> = (0..2)
            .map(|_| trainer.step(&Unconditional(8), &distance_reward()).unwrap())
            .collect();
        trainer.save_checkpoint(&*path).unwrap();
        drop(trainer);
        // A fresh policy on each worker: the checkpoint and rank 0's broadcast restore it.
        let mut resumed = Trainer::new(config.clone(), base.clone(), &device)
            .unwrap()
            .with_communicator(communicator)
            .unwrap()
            .load_checkpoint(&*path)
            .unwrap();
        metrics.push(resumed.step(&Unconditional(8), &distance_reward()).unwrap());
        Outcome {
            parameters: module_values(resumed.policy()),
            metrics,
        }
    });
    assert_workers_agree(&outcomes);
    // The resumed run is the uninterrupted one, bit for bit.
    let uninterrupted = on_threads(2, |communicator| {
        train_mlp(config.clone(), &base, communicator, 3).unwrap()
    });
    for (rank, (resumed, uninterrupted)) in outcomes.iter().zip(&uninterrupted).enumerate() {
        assert_bit_identical(&resumed.parameters, &uninterrupted.parameters, rank);
        assert_same_run(resumed, &alone, &format!("worker {rank}, resumed"));
    }
}

/// A message of every byte value (so 16-bit words up to 0xFFFF), of odd length above 65,535
/// so that its length needs two of the four 16-bit pieces.
fn every_byte_message(root: usize) -> Vec<u8> {
    (0..70_001 + root).map(|i| (i * 7 + root) as u8).collect()
}

#[test]
fn bytes_broadcast_through_the_all_reduce_arrive_exactly_on_every_worker() {
    let world = 3;
    let received = on_threads(world, |communicator| {
        let rank = communicator.rank();
        let mut per_root = Vec::new();
        for root in 0..world {
            // Receivers start with bytes of their own, of another length: all are replaced.
            let mut bytes = if rank == root {
                every_byte_message(root)
            } else {
                vec![0xAB; 5 + rank]
            };
            broadcast_through_all_reduce(&*communicator, &mut bytes, root).unwrap();
            per_root.push(bytes);
        }
        let mut empty = if rank == 1 { Vec::new() } else { vec![1, 2, 3] };
        broadcast_through_all_reduce(&*communicator, &mut empty, 1).unwrap();
        (per_root, empty)
    });
    for (rank, (per_root, empty)) in received.iter().enumerate() {
        for (root, bytes) in per_root.iter().enumerate() {
            assert!(
                *bytes == every_byte_message(root),
                "worker {rank}: the message from root {root} differs"
            );
        }
        assert!(
            empty.is_empty(),
            "worker {rank}: an empty message arrived as {empty:?}"
        );
    }
}

#[test]
fn a_broadcast_from_a_root_outside_the_world_fails_on_every_worker() {
    let outcomes = on_threads(2, |communicator| {
        let mut bytes = vec![1, 2, 3];
        broadcast_through_all_reduce(&*communicator, &mut bytes, 2).map_err(|err| err.to_string())
    });
    for (rank, outcome) in outcomes.into_iter().enumerate() {
        let message = outcome.unwrap_err();
        assert!(
            message.contains("broadcast root") && message.contains("world size 2"),
            "worker {rank}: {message}"
        );
    }
}
