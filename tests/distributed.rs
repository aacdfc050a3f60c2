//! Data-parallel training over MPI (feature `mpi`): `mpirun -np 2` workers train the MLP toy
//! and the tiny LoRA MMDiT as one process does, refuse bad input on every worker, and share
//! a failure instead of hanging.
//!
//! Each test starts `mpirun` on this test binary itself, running only [`mpi_worker`] with a
//! case named in the environment; every worker writes a report, which the test compares with
//! the same run in one process (here, with `SingleProcess`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use burn::prelude::*;
use common::toy::pretrained_mlp;
use common::workers::{
    Outcome, assert_same_run, fail_a_step_then_retry, mlp_config, single_process,
    tiny_mmdit_worker_setup, train_mlp, train_tiny_mmdit,
};
use flow_rl::distributed::{Communicator, MpiCommunicator};
use flow_rl::metrics::{JsonLinesWriter, read_json_lines};
use serde::{Deserialize, Serialize};

/// The case a worker runs.
const CASE: &str = "FLOW_RL_MPI_CASE";
/// The folder workers write their reports to.
const REPORTS: &str = "FLOW_RL_MPI_REPORTS";
/// Workers per run.
const WORKERS: usize = 2;
/// Steps of the training cases.
const STEPS: usize = 3;

/// What one worker did.
#[derive(Debug, Serialize, Deserialize)]
enum Report {
    Trained(Outcome),
    Failed(String),
    /// A step failed (on some worker); the run then went on.
    FailedThenTrained {
        error: String,
        outcome: Outcome,
    },
}

/// The worker side, started under `mpirun` by [`run_workers`]; `cargo test` skips it.
#[test]
#[ignore = "an MPI worker, started by this file's other tests through mpirun"]
fn mpi_worker() {
    let case = std::env::var(CASE).expect("FLOW_RL_MPI_CASE, set by run_workers");
    let reports = PathBuf::from(std::env::var(REPORTS).expect("FLOW_RL_MPI_REPORTS"));
    let mpi: Rc<dyn Communicator> = Rc::new(MpiCommunicator::init().unwrap());
    let rank = mpi.rank();
    let device = Device::default().autodiff();
    let report = match case.as_str() {
        "mlp" => Report::Trained(
            train_mlp(
                mlp_config("ratio-clip"),
                &pretrained_mlp(100, &device),
                mpi,
                STEPS,
            )
            .unwrap(),
        ),
        "mmdit" => Report::Trained(train_tiny_mmdit(tiny_mmdit_worker_setup(rank), mpi, STEPS)),
        "indivisible" => {
            let config = mlp_config("flow-dppo").with_groups_per_rollout(3);
            Report::Failed(
                train_mlp(config, &pretrained_mlp(1, &device), mpi, 1)
                    .unwrap_err()
                    .to_string(),
            )
        }
        "mismatched" => {
            let learning_rate = if rank == 1 { 0.5 } else { 0.05 };
            let config = mlp_config("flow-dppo").with_learning_rate(learning_rate);
            Report::Failed(
                train_mlp(config, &pretrained_mlp(1, &device), mpi, 1)
                    .unwrap_err()
                    .to_string(),
            )
        }
        "reward-failure" => {
            let (error, outcome) = fail_a_step_then_retry(mpi, &pretrained_mlp(50, &device));
            Report::FailedThenTrained {
                error: error.to_string(),
                outcome,
            }
        }
        other => panic!("unknown case {other}"),
    };
    let path = reports.join(format!("rank-{rank}.jsonl"));
    JsonLinesWriter::append(path)
        .unwrap()
        .write(&report)
        .unwrap();
}

/// Runs `case` on [`WORKERS`] MPI processes and returns their reports, rank 0 first.
fn run_workers(case: &str) -> Vec<Report> {
    let reports = tempfile::tempdir().unwrap();
    let test_binary = std::env::current_exe().unwrap();
    let status = Command::new("mpirun")
        .args([
            "-np",
            &WORKERS.to_string(),
            "--oversubscribe",
            "--timeout",
            "600",
        ])
        .arg(&test_binary)
        .args([
            "mpi_worker",
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CASE, case)
        .env(REPORTS, reports.path())
        // Containers and CI runners often run as root, which Open MPI refuses by default.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .status()
        .unwrap_or_else(|err| {
            panic!("could not start mpirun ({err}): the mpi feature's tests need Open MPI")
        });
    assert!(status.success(), "mpirun for {case}: {status}");
    (0..WORKERS)
        .map(|rank| read_report(&reports.path().join(format!("rank-{rank}.jsonl"))))
        .collect()
}

fn read_report(path: &Path) -> Report {
    let mut lines: Vec<Report> = read_json_lines(path).unwrap();
    assert_eq!(lines.len(), 1, "{}", path.display());
    lines.remove(0)
}

fn trained(report: Report) -> Outcome {
    match report {
        Report::Trained(outcome) => outcome,
        other => panic!("expected a trained run, got {other:?}"),
    }
}

fn failed(report: Report) -> String {
    match report {
        Report::Failed(error) => error,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Both workers end with the same bits, and both equal the one-process run.
fn assert_is_the_one_process_run(outcomes: Vec<Outcome>, alone: &Outcome, what: &str) {
    for (rank, outcome) in outcomes.iter().enumerate() {
        assert!(
            outcome.parameters == outcomes[0].parameters,
            "{what}: worker {rank}'s parameters differ from worker 0's"
        );
        assert_same_run(outcome, alone, &format!("{what}, worker {rank}"));
    }
}

#[test]
fn two_mpi_workers_train_the_mlp_toy_as_one_process_does() {
    let device = Device::default().autodiff();
    let alone = train_mlp(
        mlp_config("ratio-clip"),
        &pretrained_mlp(100, &device),
        single_process(),
        STEPS,
    )
    .unwrap();
    let outcomes = run_workers("mlp").into_iter().map(trained).collect();
    assert_is_the_one_process_run(outcomes, &alone, "MLP toy");
}

#[test]
fn two_mpi_workers_train_the_tiny_lora_mmdit_as_one_process_does() {
    let alone = train_tiny_mmdit(tiny_mmdit_worker_setup(0), single_process(), STEPS);
    let outcomes = run_workers("mmdit").into_iter().map(trained).collect();
    assert_is_the_one_process_run(outcomes, &alone, "tiny LoRA MMDiT");
}

#[test]
fn groups_that_do_not_divide_by_two_mpi_workers_fail_on_both() {
    for error in run_workers("indivisible").into_iter().map(failed) {
        assert!(
            error.contains("groups_per_rollout") && error.contains("world size 2"),
            "{error}"
        );
    }
}

#[test]
fn mpi_workers_with_different_configurations_fail_naming_the_field() {
    let errors: Vec<String> = run_workers("mismatched").into_iter().map(failed).collect();
    assert!(
        errors[1].contains("worker 1") && errors[1].contains("learning_rate"),
        "{}",
        errors[1]
    );
    assert!(
        errors[0].contains("failed on worker 1") && errors[0].contains("learning_rate"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_reward_failure_on_one_mpi_worker_fails_the_step_on_both_and_a_retry_continues() {
    let device = Device::default().autodiff();
    let alone = train_mlp(
        mlp_config("flow-dppo"),
        &pretrained_mlp(50, &device),
        single_process(),
        2,
    )
    .unwrap();
    let reports = run_workers("reward-failure");
    let mut outcomes = Vec::new();
    for (rank, report) in reports.into_iter().enumerate() {
        let Report::FailedThenTrained { error, outcome } = report else {
            panic!("worker {rank}: {report:?}");
        };
        let expected = if rank == 1 {
            "non-finite reward"
        } else {
            "the rollout and its rewards failed on worker 1: non-finite reward"
        };
        assert!(error.contains(expected), "worker {rank}: {error}");
        outcomes.push(outcome);
    }
    assert_is_the_one_process_run(outcomes, &alone, "after a retry");
}
