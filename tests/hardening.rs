//! Bad files, forged checkpoints and extreme values: each is an error that says what is
//! wrong, never a panic, a NaN or a file left behind.

mod common;

use std::path::Path;

use burn::prelude::*;
use burn::store::burn_pack::{Reader, Tensor as PackTensor, Writer};
use burn::tensor::Bytes;
use common::toy::pretrained_mlp;
use flow_rl::Error;
use flow_rl::advantage::{AdvantageConfig, RewardCombination};
use flow_rl::metrics::{JsonLinesWriter, RewardStats, StepMetrics, read_json_lines};
use flow_rl::models::mlp::MlpPolicy;
use flow_rl::models::mmdit::{MmditConfig, MmditLoraConfig, PromptEmbeddings};
use flow_rl::objective::{ObjectiveConfig, ObjectiveMetrics};
use flow_rl::policy::Unconditional;
use flow_rl::reward::{HostReward, RewardSet};
use flow_rl::schedule::{MAX_STEPS, SigmaScheduleConfig};
use flow_rl::trainer::{Trainer, TrainerConfig};

/// Larger than Linux's largest possible pid (2^22), so no process has it.
const DEAD_PID: u32 = 4_000_000_000;

fn config() -> TrainerConfig {
    TrainerConfig::new(2)
        .with_group_size(4)
        .with_groups_per_rollout(2)
        .with_objective(ObjectiveConfig::from_name("flow-dppo").unwrap())
        .with_learning_rate(3e-3)
        .with_weight_decay(0.0)
}

fn near_the_origin() -> RewardSet<Unconditional> {
    RewardSet::single(HostReward::new("near-origin", |p: &[f32]| {
        -(p[0] * p[0] + p[1] * p[1])
    }))
}

/// A trainer that has taken one step, so its optimiser holds state.
fn stepped_trainer(base: &MlpPolicy, device: &Device) -> Trainer<MlpPolicy> {
    let mut trainer = Trainer::new(config(), base.clone(), device).unwrap();
    trainer.step(&Unconditional(2), &near_the_origin()).unwrap();
    trainer
}

/// The three sections (header, policy, optimiser) of a format-2 checkpoint.
fn sections(contents: &[u8]) -> Vec<Vec<u8>> {
    let mut rest = &contents[12..contents.len() - 4];
    (0..3)
        .map(|_| {
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let section = rest[8..8 + len].to_vec();
            rest = &rest[8 + len..];
            section
        })
        .collect()
}

/// A checkpoint file of `version` from its sections, with a valid checksum of that version.
fn assemble(version: u32, sections: &[Vec<u8>]) -> Vec<u8> {
    let mut contents = b"FLOWRLCK".to_vec();
    contents.extend_from_slice(&version.to_le_bytes());
    for section in sections {
        contents.extend_from_slice(&(section.len() as u64).to_le_bytes());
        contents.extend_from_slice(section);
    }
    if version == 1 {
        // Format 1: FNV-1a 64.
        let fnv = contents
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
                (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
            });
        contents.extend_from_slice(&fnv.to_le_bytes());
    } else {
        let crc = crc32fast::hash(&contents);
        contents.extend_from_slice(&crc.to_le_bytes());
    }
    contents
}

/// What a forged record holds in place of a state tensor's parameter id.
type Relabel = fn(u64) -> Option<u64>;

/// The optimiser record with every state tensor's parameter id replaced by `param_id`.
fn with_param_ids(record: &[u8], param_id: impl Fn(u64) -> Option<u64>) -> Vec<u8> {
    let reader = Reader::from_bytes(Bytes::from_bytes_vec(record.to_vec())).unwrap();
    let scalars = reader.scalars().clone();
    let metadata = reader.metadata().clone();
    let tensors = reader
        .into_tensors()
        .unwrap()
        .into_iter()
        .map(|tensor| {
            let (name, dtype, shape, id, bytes) = tensor.into_parts().unwrap();
            PackTensor::new(name, dtype, shape, param_id(id.unwrap()), bytes)
        })
        .collect();
    let mut writer = Writer::new(tensors);
    for (key, value) in &scalars {
        writer = writer.with_scalar(key, *value);
    }
    for (key, value) in &metadata {
        writer = writer.with_metadata(key, value);
    }
    writer.into_bytes().unwrap().to_vec()
}

#[test]
fn checkpoints_end_in_a_crc32_and_format_1_is_refused_with_a_reason() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(5, &device);
    let path = common::scratch("state.ckpt");
    stepped_trainer(&base, &device)
        .save_checkpoint(&path)
        .unwrap();
    let contents = std::fs::read(&path).unwrap();
    assert_eq!(&contents[8..12], &2u32.to_le_bytes(), "format version 2");
    let (body, checksum) = contents.split_at(contents.len() - 4);
    assert_eq!(checksum, crc32fast::hash(body).to_le_bytes());

    // The same state in format 1, as the previous release wrote it.
    let old = common::scratch("format-1.ckpt");
    std::fs::write(&old, assemble(1, &sections(&contents))).unwrap();
    let err = Trainer::new(config(), base.clone(), &device)
        .unwrap()
        .load_checkpoint(&old)
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(matches!(err, Error::Checkpoint { .. }), "{message}");
    assert!(
        message.contains("format 1") && message.contains("CRC-32"),
        "{message}"
    );
}

#[test]
fn an_optimiser_record_without_parameter_ids_is_an_error_not_a_panic() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(5, &device);
    let good = common::scratch("good.ckpt");
    stepped_trainer(&base, &device)
        .save_checkpoint(&good)
        .unwrap();
    let mut parts = sections(&std::fs::read(&good).unwrap());
    let optimizer = parts[2].clone();

    let forgeries: [(&str, Relabel, &str); 2] = [
        ("no-ids.ckpt", |_| None, "carries no parameter id"),
        (
            "foreign-ids.ckpt",
            |id| Some(id ^ 0x5555),
            "which the policy does not have",
        ),
    ];
    for (name, param_id, expected) in forgeries {
        parts[2] = with_param_ids(&optimizer, param_id);
        let forged = common::scratch(name);
        std::fs::write(&forged, assemble(2, &parts)).unwrap();
        // Used to panic inside burn-optim.
        let err = Trainer::new(config(), base.clone(), &device)
            .unwrap()
            .load_checkpoint(&forged)
            .err()
            .unwrap();
        let message = err.to_string();
        assert!(matches!(err, Error::Checkpoint { .. }), "{message}");
        assert!(
            message.contains("optimizer record") && message.contains(expected),
            "{message}"
        );
    }
    // The untouched record still loads.
    parts[2] = optimizer;
    let rebuilt = common::scratch("rebuilt.ckpt");
    std::fs::write(&rebuilt, assemble(2, &parts)).unwrap();
    let resumed = Trainer::new(config(), base.clone(), &device)
        .unwrap()
        .load_checkpoint(&rebuilt)
        .unwrap();
    assert_eq!(resumed.steps_done(), 1);
}

#[cfg(target_os = "linux")]
#[test]
fn a_save_removes_temporaries_of_killed_writers_only() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(5, &device);
    let path = common::scratch("run.ckpt");
    let folder = path.folder();
    let stale = [
        format!(".run.ckpt.{DEAD_PID}.q1W2e3.tmp"),
        format!(".run.ckpt.tmp-{DEAD_PID}"),
    ];
    let kept = [
        format!(".run.ckpt.{}.r4T5y6.tmp", std::process::id()),
        format!(".other.ckpt.{DEAD_PID}.q1W2e3.tmp"),
    ];
    for name in stale.iter().chain(&kept) {
        std::fs::write(folder.join(name), vec![0u8; 1024]).unwrap();
    }
    stepped_trainer(&base, &device)
        .save_checkpoint(&path)
        .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = kept.to_vec();
    expected.push("run.ckpt".into());
    expected.sort();
    assert_eq!(names, expected);
}

fn assert_names(err: Error, what: &str) {
    let message = err.to_string();
    assert!(matches!(err, Error::Io { .. }), "{message}");
    assert!(message.contains(what), "{message}");
}

#[test]
fn a_folder_or_a_device_where_a_file_belongs_is_named_as_such() {
    let device = Device::default().autodiff();
    let base = pretrained_mlp(5, &device);
    let folder = tempfile::tempdir().unwrap();
    let folder = folder.path();
    let mut bad: Vec<(&Path, &str)> = vec![(folder, "is a folder")];
    if cfg!(unix) {
        bad.push((Path::new("/dev/null"), "is not a regular file"));
    }
    let tiny = MmditConfig::tiny();
    for (path, what) in bad {
        let trainer = Trainer::new(config(), base.clone(), &device).unwrap();
        assert_names(trainer.load_checkpoint(path).err().unwrap(), what);
        let trainer = Trainer::new(config(), base.clone(), &device).unwrap();
        assert_names(trainer.save_checkpoint(path).unwrap_err(), what);
        assert_names(JsonLinesWriter::append(path).unwrap_err(), what);
        assert_names(PromptEmbeddings::load(path, &device).err().unwrap(), what);
        let model = MmditLoraConfig::new()
            .apply(tiny.init(&device).unwrap())
            .unwrap();
        assert_names(model.load_lora(path, None).err().unwrap(), what);
    }
    if cfg!(unix) {
        let err = flow_rl::models::mmdit::MmditCheckpoint::open("/dev/null")
            .err()
            .unwrap();
        assert_names(err, "is not a regular file");
    }
}

#[test]
fn step_metrics_with_non_finite_values_round_trip_through_json_lines() {
    let path = common::scratch("metrics.jsonl");
    let diverged = StepMetrics {
        step: 7,
        rewards: vec![RewardStats {
            name: "pickscore".into(),
            mean: f64::NAN,
            std: f64::INFINITY,
        }],
        zero_std_group_fraction: 0.25,
        sde_steps: vec![0, 2],
        objective: ObjectiveMetrics {
            loss: f64::NEG_INFINITY,
            reference_kl: Some(f64::NAN),
            ..ObjectiveMetrics::default()
        },
        first_update: None,
        updates: 1,
        skipped_updates: 1,
        grad_norm: f64::NAN,
        rollout_seconds: 1.5,
        reward_seconds: 0.5,
        update_seconds: 2.0,
    };
    let mut log = JsonLinesWriter::append(&path).unwrap();
    log.write(&diverged).unwrap();
    log.write(&diverged).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    // serde_json alone wrote `null`, which cannot be told from a missing value.
    assert!(
        text.contains(r#""grad_norm":"NaN""#)
            && text.contains(r#""std":"inf""#)
            && text.contains(r#""loss":"-inf""#),
        "{text}"
    );
    let lines: Vec<StepMetrics> = read_json_lines(&path).unwrap();
    assert_eq!(lines.len(), 2);
    let back = &lines[1];
    assert!(back.grad_norm.is_nan() && back.rewards[0].mean.is_nan());
    assert_eq!(back.rewards[0].std, f64::INFINITY);
    assert_eq!(back.objective.loss, f64::NEG_INFINITY);
    assert!(back.objective.reference_kl.is_some_and(f64::is_nan));
    assert_eq!(back.first_update, None);
    assert_eq!(
        (back.step, &back.sde_steps, back.update_seconds),
        (7, &vec![0, 2], 2.0)
    );

    std::fs::write(&path, "{\"step\": 1}\n").unwrap();
    let err = read_json_lines::<StepMetrics>(&path).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn huge_step_counts_and_reward_weights_are_errors() {
    for steps in [usize::MAX, 1 << 40] {
        let err = SigmaScheduleConfig::new()
            .with_steps(steps)
            .init()
            .unwrap_err();
        assert!(err.to_string().contains(&MAX_STEPS.to_string()), "{err}");
    }
    let err = AdvantageConfig::new()
        .compute_multi(
            &[[1.0f32, 2.0, 3.0, 4.0]],
            &[1e308],
            RewardCombination::WeightedSum,
            2,
        )
        .unwrap_err();
    assert!(matches!(err, Error::NonFinite { index: 0, .. }), "{err:?}");
}

/// Atomic writes give the permissions a plain file gets, not the temporary's private 0o600.
#[cfg(unix)]
#[test]
fn atomically_written_files_get_the_permissions_of_a_plain_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let folder = tempfile::tempdir().unwrap();
    let plain = folder.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let atomic = folder.path().join("atomic");
    flow_rl::io::write_atomically(&atomic, b"contents").unwrap();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&atomic), mode(&plain));
    assert_eq!(std::fs::read(&atomic).unwrap(), b"contents");
}
