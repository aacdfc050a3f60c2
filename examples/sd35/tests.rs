//! The whole example on the tiny preset with random weights: rollout, VAE decode, JPEG and
//! HTTP rewards, micro-batched updates, the files it writes, and an exact resume.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use flow_rl::metrics::{StepMetrics, read_json_lines};
use flow_rl::models::mmdit::PromptEmbeddings;

use crate::eval::{EVAL_FILE, EVAL_FOLDER};
use crate::report::PLOT_FILE;
use crate::rewards::{RewardKind, RewardSpec};
use crate::text_encoder_folder;
use crate::{ADAPTER_FOLDER, Args, CHECKPOINT_FILE, METRICS_FILE};

/// Runs one at a time: the runs seed and draw from the process-wide device RNG, so two runs on
/// parallel test threads would interleave their draws.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `run` while holding [`ONE_RUN_AT_A_TIME`].
fn run(args: Args) -> flow_rl::Result<Option<StepMetrics>> {
    let _only = ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    crate::run(args)
}

/// The tiny preset's arguments with `extra` appended, writing into `out`.
fn tiny_args(out: &Path, extra: &[&str]) -> Args {
    small_run_args(out, &["--preset", "tiny", "--random-init"], extra)
}

/// A small run's arguments: `source` (the model), then `extra`, writing into `out`.
fn small_run_args(out: &Path, source: &[&str], extra: &[&str]) -> Args {
    let mut argv = vec!["sd35"];
    argv.extend_from_slice(source);
    argv.extend_from_slice(&[
        "--group-size",
        "2",
        "--prompts-per-rollout",
        "2",
        "--denoising-steps",
        "4",
        "--sde-steps",
        "2",
        "--minibatches",
        "2",
        "--micro-batch-rows",
        "1",
        "--rollout-batch-size",
        "3",
        "--decode-batch-size",
        "3",
        "--eval-prompts",
        "3",
        "--lora-rank",
        "4",
        "--lora-alpha",
        "8",
        "--learning-rate",
        "1e-2",
        "--out",
    ]);
    let out = out.to_str().unwrap();
    argv.push(out);
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv).unwrap()
}

/// The adapters' tensors by name, as saved in the PEFT folder.
fn adapter_tensors(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(out.join(ADAPTER_FOLDER).join("adapter_model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.names()
        .into_iter()
        .map(|name| (name.to_owned(), file.tensor(name).unwrap().data().to_vec()))
        .collect()
}

/// A step's metrics without its timings, which differ between runs.
fn without_timings(mut metrics: StepMetrics) -> StepMetrics {
    metrics.rollout_seconds = 0.0;
    metrics.reward_seconds = 0.0;
    metrics.update_seconds = 0.0;
    metrics
}

/// A UniRL reward service on 127.0.0.1 that scores each image by its JPEG's size and counts
/// the images it scored; it serves until the test process ends.
fn unirl_server() -> (String, Arc<AtomicUsize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let scored = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&scored);
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = String::new();
            request.as_reader().read_to_string(&mut body).unwrap();
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            let samples = body["requests"].as_array().unwrap();
            let results: Vec<serde_json::Value> = samples
                .iter()
                .map(|sample| {
                    let jpeg = sample["history"][0]["image_b64"].as_str().unwrap();
                    serde_json::json!({"pickscore": {"pickscore": jpeg.len() as f64 / 1e4}})
                })
                .collect();
            count.fetch_add(samples.len(), Ordering::SeqCst);
            let errors = vec![serde_json::json!({}); samples.len()];
            let answer = serde_json::json!({"results": results, "errors": errors}).to_string();
            request
                .respond(tiny_http::Response::from_string(answer))
                .unwrap();
        }
    });
    (url, scored)
}

#[test]
fn the_tiny_preset_trains_and_writes_the_grid_metrics_plot_and_adapter() {
    let out = tempfile::tempdir().unwrap();
    let (url, scored) = unirl_server();
    let unirl = format!("unirl:{url}:pickscore=0.5");
    let args = tiny_args(
        out.path(),
        &[
            "--train-steps",
            "2",
            "--eval-every",
            "2",
            "--reward",
            "jpeg",
            "--reward",
            "jpeg-incompressibility=0.01",
            "--reward",
            &unirl,
        ],
    );
    let last = run(args).unwrap().unwrap();
    assert_eq!(last.step, 1);
    assert_eq!(last.rewards.len(), 3);
    // 2 rollouts of 2 × 2 samples and one evaluation of 3 prompts.
    assert_eq!(scored.load(Ordering::SeqCst), 2 * 4 + 3);
    assert!(
        last.rewards
            .iter()
            .all(|r| r.mean.is_finite() && r.std > 0.0)
    );
    assert!(last.updates == 2, "two mini-batches per rollout");

    let metrics: Vec<StepMetrics> = read_json_lines(out.path().join(METRICS_FILE)).unwrap();
    assert_eq!(metrics.len(), 2);
    let grid = image::open(out.path().join(EVAL_FOLDER).join("step_000002.png")).unwrap();
    // 3 evaluation images of 16² pixels (8² latents, VAE factor 2) in a 2 × 2 grid.
    assert_eq!((grid.width(), grid.height()), (2 * 16, 2 * 16));
    let prompts = std::fs::read_to_string(out.path().join(EVAL_FOLDER).join("step_000002.txt"));
    assert_eq!(prompts.unwrap().lines().count(), 3);
    assert!(out.path().join(EVAL_FILE).exists());
    assert!(out.path().join(PLOT_FILE).exists());
    assert!(
        out.path()
            .join(ADAPTER_FOLDER)
            .join("adapter_config.json")
            .exists()
    );
    let adapters = adapter_tensors(out.path());
    assert!(!adapters.is_empty());
    assert!(
        adapters
            .iter()
            .filter(|(name, _)| name.contains("lora_B"))
            .any(|(_, data)| data.iter().any(|&byte| byte != 0)),
        "the updates moved the B factors away from zero"
    );
}

#[test]
fn a_resumed_run_continues_exactly_as_the_uninterrupted_one() {
    let (whole, split) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let steps = |out: &Path, total: &str, resume: bool| {
        let mut extra = vec!["--train-steps", total, "--eval-every", "1"];
        if resume {
            extra.push("--resume");
        }
        run(tiny_args(out, &extra)).unwrap()
    };
    steps(whole.path(), "2", false);
    steps(split.path(), "1", false);
    steps(split.path(), "2", true);

    let read = |out: &Path| -> Vec<StepMetrics> {
        let metrics: Vec<StepMetrics> = read_json_lines(out.join(METRICS_FILE)).unwrap();
        metrics.into_iter().map(without_timings).collect()
    };
    assert_eq!(read(split.path()), read(whole.path()));
    assert_eq!(adapter_tensors(split.path()), adapter_tensors(whole.path()));
    // Nothing is left to do: a third call trains no step.
    assert!(steps(split.path(), "2", true).is_none());
}

#[test]
fn the_transformer_and_the_vae_load_from_weights_files() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let path = |relative: &str| fixtures.join(relative).display().to_string();
    let (weights, vae, embeddings) = (
        path("mmdit/dual/official.safetensors"),
        path("vae/diffusers"),
        path("mmdit/prompts.safetensors"),
    );
    let out = tempfile::tempdir().unwrap();
    // The fixture MMDiT's 8² positional table and the fixture VAE's factor 4: 32² images.
    let source = [
        "--weights",
        &weights,
        "--vae",
        &vae,
        "--embeddings",
        &embeddings,
        "--precision",
        "f32",
        "--resolution",
        "32",
    ];
    let last = run(small_run_args(out.path(), &source, &["--train-steps", "1"]))
        .unwrap()
        .unwrap();
    assert!(last.rewards[0].mean.is_finite());
    let grid = image::open(out.path().join(EVAL_FOLDER).join("step_000001.png")).unwrap();
    // The fixture has 2 prompts: a 2 × 1 grid of 32² images.
    assert_eq!((grid.width(), grid.height()), (2 * 32, 32));

    let elsewhere = tempfile::tempdir().unwrap();
    let tiny_with_weights = small_run_args(
        elsewhere.path(),
        &["--preset", "tiny", "--weights", &weights],
        &[],
    );
    let error = run(tiny_with_weights).unwrap_err();
    assert!(error.to_string().contains("--random-init"), "{error}");
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none(),
        "nothing written"
    );
}

#[test]
fn an_existing_run_is_not_overwritten_and_a_missing_one_not_resumed() {
    let out = tempfile::tempdir().unwrap();
    let error = run(tiny_args(out.path(), &["--train-steps", "1", "--resume"])).unwrap_err();
    assert!(error.to_string().contains("--resume needs"), "{error}");
    run(tiny_args(out.path(), &["--train-steps", "1"])).unwrap();
    let error = run(tiny_args(out.path(), &["--train-steps", "2"])).unwrap_err();
    assert!(error.to_string().contains(CHECKPOINT_FILE), "{error}");
    assert!(error.to_string().contains("pass --resume"), "{error}");
}

#[test]
fn reward_options_parse_with_urls_and_weights() {
    let parse = |text: &str| text.parse::<RewardSpec>();
    assert_eq!(
        parse("jpeg").unwrap(),
        RewardSpec {
            kind: RewardKind::JpegCompressibility,
            weight: 1.0
        }
    );
    assert_eq!(
        parse("unirl:http://127.0.0.1:8000:pickscore=0.5").unwrap(),
        RewardSpec {
            kind: RewardKind::Unirl {
                url: "http://127.0.0.1:8000".into(),
                reward: "pickscore".into()
            },
            weight: 0.5
        }
    );
    assert_eq!(
        parse("latent:http://host:9000/score?a=b").unwrap().kind,
        RewardKind::Latent {
            url: "http://host:9000/score?a=b".into()
        }
    );
    assert_eq!(
        parse("geneval:http://host:18085=2").unwrap(),
        RewardSpec {
            kind: RewardKind::Geneval {
                url: "http://host:18085".into()
            },
            weight: 2.0
        }
    );
    assert_eq!(
        parse("pickscore:/models/PickScore_v1=0.5").unwrap(),
        RewardSpec {
            kind: RewardKind::Clip {
                preference: flow_rl::reward::ClipPreference::PickScore,
                weights: "/models/PickScore_v1".into()
            },
            weight: 0.5
        }
    );
    assert_eq!(
        parse("aesthetic:sac+logos+ava1-l14-linearMSE.pth")
            .unwrap()
            .kind,
        RewardKind::Aesthetic {
            predictor: "sac+logos+ava1-l14-linearMSE.pth".into()
        }
    );
    for bad in [
        "pickscore",
        "hpsv2:",
        "unirl:http://host:8000",
        "geneval:host",
        "jpeg=inf",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

/// A diffusers pipeline folder of the fixtures: the MMDiT, the VAE and the three text
/// encoders with their tokenizers.
fn fixture_pipeline(root: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    text_encoder_folder::copy_folder(
        &fixtures.join("mmdit/dual/diffusers"),
        &root.join("transformer"),
    );
    text_encoder_folder::copy_folder(&fixtures.join("vae/diffusers"), &root.join("vae"));
    text_encoder_folder::write_text_encoders(root);
}

#[test]
fn a_prompt_list_is_encoded_once_and_cached_beside_it() {
    let model = tempfile::tempdir().unwrap();
    fixture_pipeline(model.path());
    let lists = tempfile::tempdir().unwrap();
    let list = lists.path().join("prompts.txt");
    std::fs::write(&list, "a red cube\ntwo blue spheres\n").unwrap();
    let weights = model.path().to_str().unwrap();
    let attempt = |extra: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let mut source = vec!["--weights", weights, "--prompts", list.to_str().unwrap()];
        source.extend_from_slice(extra);
        source.extend_from_slice(&["--precision", "f32", "--resolution", "32"]);
        run(small_run_args(out.path(), &source, &["--train-steps", "1"])).unwrap_err()
    };

    // The fixture T5 is 32 wide and the fixture MMDiT takes 24: the run stops at the width
    // check, after the embeddings were encoded and cached.
    let error = attempt(&["--max-sequence-length", "6"]);
    assert!(error.to_string().contains("context_dim"), "{error}");
    let cache = crate::prompts::cache_path(&list, 6, burn::tensor::FloatDType::F32);
    let cached = PromptEmbeddings::load(&cache, &burn::prelude::Device::default()).unwrap();
    assert_eq!(cached.prompts, ["a red cube", "two blue spheres"]);
    assert_eq!(cached.context.dims(), [2, 77 + 6, 32]);
    assert_eq!(cached.encoding().unwrap().max_sequence_length, 6);

    // Without T5's weights, only the cache can serve the same list at the same length.
    std::fs::remove_dir_all(model.path().join("text_encoder_3")).unwrap();
    let error = attempt(&["--max-sequence-length", "6"]);
    assert!(error.to_string().contains("context_dim"), "{error}");
    for stale in [attempt(&["--max-sequence-length", "7"]), {
        std::fs::write(&list, "a red cube\n").unwrap();
        attempt(&["--max-sequence-length", "6"])
    }] {
        assert!(stale.to_string().contains("text_encoder_3"), "{stale}");
    }
}

#[test]
fn embeddings_of_another_length_than_asked_for_are_refused() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let embeddings = fixtures.join("mmdit/prompts.safetensors");
    let stored = PromptEmbeddings::load(&embeddings, &burn::prelude::Device::default()).unwrap();
    // The fixture's 7 tokens are no 77 + L: any --max-sequence-length disagrees.
    assert_eq!(stored.context_tokens(), 7);
    let out = tempfile::tempdir().unwrap();
    let mut args = tiny_args(out.path(), &["--train-steps", "1"]);
    args.embeddings = Some(embeddings);
    args.max_sequence_length = Some(128);
    let error = run(args).unwrap_err();
    assert!(
        error.to_string().contains("205 context tokens per prompt"),
        "{error}"
    );
}

#[test]
fn clip_rewards_score_the_decoded_images_in_process() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let path = |relative: &str| fixtures.join(relative).display().to_string();
    let (clip, tokenizer, predictor) = (
        path("clip_model/hf"),
        path("clip/clip_l/tokenizer"),
        path("clip_rewards/aesthetic.pth"),
    );
    let pickscore = format!("pickscore:{clip}");
    let aesthetic = format!("aesthetic:{predictor}=0.1");
    let out = tempfile::tempdir().unwrap();
    let last = run(tiny_args(
        out.path(),
        &[
            "--train-steps",
            "1",
            "--reward",
            &pickscore,
            "--reward",
            &aesthetic,
            "--clip-tokenizer",
            &tokenizer,
            "--aesthetic-clip",
            &clip,
        ],
    ))
    .unwrap()
    .unwrap();
    let names: Vec<&str> = last
        .rewards
        .iter()
        .map(|reward| reward.name.as_str())
        .collect();
    assert_eq!(names, ["pickscore", "aesthetic"]);
    assert!(last.rewards.iter().all(|reward| reward.mean.is_finite()));

    let elsewhere = tempfile::tempdir().unwrap();
    let error = run(tiny_args(
        elsewhere.path(),
        &["--train-steps", "1", "--reward", &aesthetic],
    ))
    .unwrap_err();
    assert!(error.to_string().contains("--aesthetic-clip"), "{error}");
}
