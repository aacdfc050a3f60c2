//! The reward-server clients against real HTTP servers on 127.0.0.1: what they send, how
//! they read answers, and how they fail (timeouts, malformed answers, wrong counts,
//! retried 5xx, refused connections, unretried 4xx), also inside a trainer step.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use burn::prelude::*;
use burn::tensor::Distribution;
use common::module_values;
use flow_rl::models::mmdit::{MmditCondition, MmditConfig, MmditLoraConfig};
use flow_rl::reward::http::{
    DRM_PROTOCOL_HEADER, GenevalReward, GenevalScore, LatentReward, RewardServerConfig,
    UnirlReward, load_geneval_metadata,
};
use flow_rl::reward::{ImageReward, Reward, RewardSet};
use flow_rl::trainer::{Trainer, TrainerConfig};
use flow_rl::{Error, ServerFailure};
use image::RgbImage;
use serde_pickle::{HashableValue, Value};

/// One scripted answer: status, body, and how long to wait before sending it.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    delay: Duration,
}

impl Answer {
    fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self::status(200, body)
    }

    fn status(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn json(value: serde_json::Value) -> Self {
        Self::ok(serde_json::to_vec(&value).unwrap())
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
struct Received {
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A server on 127.0.0.1 that answers with `answer(request, index)`, records what it
/// receives and stops after `requests` requests.
struct TestServer {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl TestServer {
    fn scripted(answers: Vec<Answer>) -> Self {
        let count = answers.len();
        Self::answering(count, move |_, index| answers[index].clone())
    }

    fn answering(
        requests: usize,
        answer: impl Fn(&Received, usize) -> Answer + Send + 'static,
    ) -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for index in 0..requests {
                let Ok(mut request) = server.recv() else {
                    return;
                };
                let mut body = Vec::new();
                request.as_reader().read_to_end(&mut body).unwrap();
                let seen = Received {
                    url: request.url().to_owned(),
                    headers: request
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                };
                let reply = answer(&seen, index);
                log.lock().unwrap().push(seen);
                std::thread::sleep(reply.delay);
                let _ = request.respond(
                    tiny_http::Response::from_data(reply.body).with_status_code(reply.status),
                );
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            received,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A short timeout and backoff, so failing tests are fast.
fn quick() -> RewardServerConfig {
    RewardServerConfig::new()
        .with_timeout_secs(5.0)
        .with_retries(2)
        .with_initial_backoff_secs(0.01)
}

fn images() -> Vec<RgbImage> {
    vec![
        RgbImage::from_pixel(16, 12, image::Rgb([200, 30, 40])),
        RgbImage::from_pixel(16, 12, image::Rgb([10, 220, 90])),
    ]
}

fn prompts() -> Vec<String> {
    vec!["a red square".to_owned(), "a green square".to_owned()]
}

/// Checks that a JPEG decodes to `expected`'s size and roughly its (flat) colour.
fn assert_jpeg_of(jpeg: &[u8], expected: &RgbImage) {
    let decoded = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .unwrap()
        .to_rgb8();
    assert_eq!(decoded.dimensions(), expected.dimensions());
    for (got, want) in decoded.pixels().zip(expected.pixels()) {
        for channel in 0..3 {
            let difference = (got[channel] as i32 - want[channel] as i32).abs();
            assert!(difference <= 6, "pixel {got:?}, sent {want:?}");
        }
    }
}

fn server_failure(error: &Error) -> (&ServerFailure, usize) {
    match error {
        Error::RewardServer {
            failure, attempts, ..
        } => (failure, *attempts),
        other => panic!("expected a reward-server error, got {other:?}"),
    }
}

fn pickscore_answer(scores: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "results": scores.iter().map(|s| serde_json::json!({"pickscore": {"pickscore": s, "raw": s * 26.0}})).collect::<Vec<_>>(),
        "errors": scores.iter().map(|_| serde_json::json!({})).collect::<Vec<_>>(),
    })
}

#[test]
fn unirl_sends_base64_jpegs_with_prompts_and_reads_the_first_sub_metric() {
    let server = TestServer::scripted(vec![
        Answer::json(pickscore_answer(&[0.75, -0.25])),
        Answer::json(pickscore_answer(&[0.75, -0.25])),
    ]);
    let reward = UnirlReward::new(&format!("{}/", server.url), "pickscore", &quick()).unwrap();
    assert_eq!(reward.name(), "pickscore");
    let scores = reward.score_images(&images(), &prompts()).unwrap();
    assert_eq!(scores, vec![0.75, -0.25]);
    let raw = reward
        .with_sub_metric("raw")
        .score_images(&images(), &prompts())
        .unwrap();
    assert_eq!(raw, vec![19.5, -6.5]);

    let received = server.received();
    assert_eq!(received[0].url, "/score");
    assert_eq!(received[0].header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    let requests = body["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    for ((request, image), prompt) in requests.iter().zip(images()).zip(prompts()) {
        assert_eq!(
            request["required_rewards"],
            serde_json::json!(["pickscore"])
        );
        let turn = &request["history"][0];
        assert_eq!(turn["text"], prompt);
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(turn["image_b64"].as_str().unwrap())
            .unwrap();
        assert_jpeg_of(&jpeg, &image);
    }
}

#[test]
fn unirl_sample_errors_and_missing_sub_metrics_are_errors_not_zeros() {
    let server = TestServer::scripted(vec![
        Answer::json(serde_json::json!({
            "results": [{"pickscore": {"pickscore": 0.5}}, {}],
            "errors": [{}, {"pickscore": "CUDA out of memory"}],
        })),
        Answer::json(pickscore_answer(&[0.1, 0.2])),
    ]);
    let reward = UnirlReward::new(&server.url, "pickscore", &quick()).unwrap();
    let error = reward.score_images(&images(), &prompts()).unwrap_err();
    let (failure, attempts) = server_failure(&error);
    assert_eq!(
        failure,
        &ServerFailure::SampleError {
            sample: 1,
            message: "CUDA out of memory".into()
        }
    );
    assert_eq!(attempts, 1, "a sample error is not retried");
    let message = error.to_string();
    assert!(
        message.contains(&server.url)
            && message.contains("pickscore")
            && message.contains("sample 1"),
        "{message}"
    );

    let error = reward
        .with_sub_metric("hps")
        .score_images(&images(), &prompts())
        .unwrap_err();
    assert!(
        matches!(server_failure(&error).0, ServerFailure::Malformed(what) if what.contains("hps"))
    );
}

fn metadata_file() -> common::ScratchPath {
    let path = common::scratch("evaluation_metadata.jsonl");
    let mut file = std::fs::File::create(&*path).unwrap();
    writeln!(
        file,
        r#"{{"tag": "single_object", "include": [{{"class": "square", "count": 1}}], "prompt": "a red square"}}"#
    )
    .unwrap();
    writeln!(
        file,
        r#"{{"tag": "colors", "include": [{{"class": "square", "count": 1, "color": "green"}}], "prompt": "a green square", "exclude": null, "weight": 0.5}}"#
    )
    .unwrap();
    path
}

fn key(name: &str) -> HashableValue {
    HashableValue::String(name.into())
}

fn pickled_geneval_answer() -> Vec<u8> {
    let list = |values: &[f64]| Value::List(values.iter().map(|&v| Value::F64(v)).collect());
    let answer = Value::Dict(BTreeMap::from([
        (key("scores"), list(&[0.75, 1.0])),
        (key("rewards"), list(&[0.0, 1.0])),
        (key("strict_rewards"), list(&[0.0, 1.0])),
        (key("group_rewards"), Value::Dict(BTreeMap::new())),
        (key("group_strict_rewards"), Value::Dict(BTreeMap::new())),
    ]));
    serde_pickle::value_to_vec(&answer, serde_pickle::SerOptions::new()).unwrap()
}

#[test]
fn geneval_pickles_jpegs_and_metadata_and_returns_the_chosen_score() {
    let metadata_path = metadata_file();
    let metadata = load_geneval_metadata(&*metadata_path).unwrap();
    assert_eq!(metadata.len(), 2);
    let server = TestServer::scripted(vec![
        Answer::ok(pickled_geneval_answer()),
        Answer::ok(pickled_geneval_answer()),
    ]);
    let reward = GenevalReward::new(&server.url, metadata.clone(), &quick()).unwrap();
    assert_eq!(
        reward.score_images(&images(), &prompts()).unwrap(),
        vec![0.75, 1.0],
        "flow_grpo trains on the partial-credit scores"
    );
    let strict = reward.with_score(GenevalScore::Correct);
    assert_eq!(
        strict.score_images(&images(), &prompts()).unwrap(),
        vec![0.0, 1.0]
    );

    let received = server.received();
    for (request, only_strict) in received.iter().zip([true, false]) {
        let Value::Dict(body) =
            serde_pickle::value_from_slice(&request.body, serde_pickle::DeOptions::new()).unwrap()
        else {
            panic!("the request is not a pickled dict");
        };
        assert_eq!(body[&key("only_strict")], Value::Bool(only_strict));
        let Value::List(jpegs) = &body[&key("images")] else {
            panic!("images is not a list");
        };
        for (jpeg, image) in jpegs.iter().zip(images()) {
            let Value::Bytes(jpeg) = jpeg else {
                panic!("an image is not bytes");
            };
            assert_jpeg_of(jpeg, &image);
        }
        let Value::List(sent) = &body[&key("meta_datas")] else {
            panic!("meta_datas is not a list");
        };
        let Value::Dict(second) = &sent[1] else {
            panic!("metadata is not a dict");
        };
        assert_eq!(
            second[&key("prompt")],
            Value::String("a green square".into())
        );
        assert_eq!(second[&key("tag")], Value::String("colors".into()));
        assert_eq!(second[&key("exclude")], Value::None);
        assert_eq!(second[&key("weight")], Value::F64(0.5));
        let Value::List(include) = &second[&key("include")] else {
            panic!("include is not a list");
        };
        let Value::Dict(requirement) = &include[0] else {
            panic!("a requirement is not a dict");
        };
        assert_eq!(requirement[&key("count")], Value::I64(1));
        assert_eq!(requirement[&key("color")], Value::String("green".into()));
    }
}

#[test]
fn geneval_names_a_prompt_without_metadata_before_sending_anything() {
    let metadata_path = metadata_file();
    let metadata = load_geneval_metadata(&*metadata_path).unwrap();
    let server = TestServer::scripted(vec![Answer::ok(pickled_geneval_answer())]);
    let reward = GenevalReward::new(&server.url, metadata, &quick()).unwrap();
    let error = reward
        .score_images(&images(), &["a red square".into(), "a blue circle".into()])
        .unwrap_err();
    assert!(matches!(error, Error::InvalidArgument { .. }), "{error:?}");
    assert!(error.to_string().contains("a blue circle"), "{error}");
    assert!(server.received().is_empty());

    let bad = common::scratch("bad.jsonl");
    std::fs::write(&*bad, "{\"tag\": \"colors\"}\n").unwrap();
    let error = load_geneval_metadata(&*bad).unwrap_err().to_string();
    assert!(
        error.contains("line 1") && error.contains("prompt"),
        "{error}"
    );
}

/// Samples `[2, 2·2·3]`, conditions of 3 tokens of 4 and pooled 5 wide, all distinct.
fn latent_batch(device: &Device) -> (Tensor<2>, MmditCondition) {
    let ramp = |n: usize, scale: f32| (0..n).map(|i| i as f32 * scale - 1.0).collect::<Vec<_>>();
    let samples = Tensor::<2>::from_data(TensorData::new(ramp(24, 0.1), [2, 12]), device);
    let context = Tensor::<3>::from_data(TensorData::new(ramp(24, 0.01), [2, 3, 4]), device);
    let pooled = Tensor::<2>::from_data(TensorData::new(ramp(10, 0.5), [2, 5]), device);
    (samples, MmditCondition::new(context, pooled))
}

fn tensor_f32(tensors: &safetensors::SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = tensors.tensor(name).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    let values = view
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), values)
}

#[test]
fn latent_reward_sends_each_latent_with_its_embeddings_and_maps_the_raw_score() {
    let device = Device::default();
    let (samples, conditions) = latent_batch(&device);
    // The server scores each latent by the sum of its values.
    let server = TestServer::answering(2, |request, _| {
        let tensors = safetensors::SafeTensors::deserialize(&request.body).unwrap();
        let (_, latents) = tensor_f32(&tensors, "latents");
        let sum: f32 = latents.iter().sum();
        Answer::json(serde_json::json!({"protocol_version": "1", "raw_scores": [sum]}))
    });
    let reward = LatentReward::new(&format!("{}/v1/score", server.url), [2, 2, 3], &quick())
        .unwrap()
        .with_score_map(0.1, 1.0);
    let scores = reward.score(&samples, &conditions).unwrap();

    let latents = samples.clone().into_data().try_to_vec::<f32>().unwrap();
    let context = conditions
        .context
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let pooled = conditions
        .pooled
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let received = server.received();
    assert_eq!(received.len(), 2, "one request per sample");
    for (sample, request) in received.iter().enumerate() {
        assert_eq!(request.url, "/v1/score");
        assert_eq!(request.header(DRM_PROTOCOL_HEADER), Some("1"));
        assert_eq!(
            request.header("content-type"),
            Some("application/octet-stream")
        );
        let tensors = safetensors::SafeTensors::deserialize(&request.body).unwrap();
        let (shape, sent) = tensor_f32(&tensors, "latents");
        assert_eq!(shape, vec![1, 2, 2, 3]);
        assert_eq!(sent, latents[sample * 12..(sample + 1) * 12]);
        let (shape, sent) = tensor_f32(&tensors, "prompt_embeds");
        assert_eq!(shape, vec![1, 3, 4]);
        assert_eq!(sent, context[sample * 12..(sample + 1) * 12]);
        let (shape, sent) = tensor_f32(&tensors, "pooled_prompt_embeds");
        assert_eq!(shape, vec![1, 5]);
        assert_eq!(sent, pooled[sample * 5..(sample + 1) * 5]);
        assert_eq!(tensor_f32(&tensors, "u"), (vec![1], vec![0.4]));
        let seeds = tensors.tensor("seeds").unwrap();
        assert_eq!(seeds.dtype(), safetensors::Dtype::I64);
        assert_eq!(seeds.data(), 0i64.to_le_bytes());
        let sum: f32 = latents[sample * 12..(sample + 1) * 12].iter().sum();
        assert!(
            (scores[sample] - (0.1 * sum + 1.0)).abs() < 1e-5,
            "{scores:?}"
        );
    }

    let error = reward
        .score(&Tensor::<2>::zeros([2, 10], &device), &conditions)
        .unwrap_err();
    assert!(matches!(error, Error::ShapeMismatch { .. }), "{error:?}");
}

#[test]
fn a_slow_answer_times_out() {
    let server = TestServer::scripted(vec![Answer {
        delay: Duration::from_millis(1500),
        ..Answer::json(pickscore_answer(&[1.0, 2.0]))
    }]);
    let config = quick().with_timeout_secs(0.3).with_retries(0);
    let reward = UnirlReward::new(&server.url, "pickscore", &config).unwrap();
    let error = reward.score_images(&images(), &prompts()).unwrap_err();
    assert_eq!(
        server_failure(&error),
        (&ServerFailure::TimedOut { seconds: 0.3 }, 1),
        "{error}"
    );
}

#[test]
fn malformed_answers_are_not_retried() {
    let server = TestServer::scripted(vec![Answer::ok("{\"results\": [1, 2"), Answer::ok("no")]);
    let error = UnirlReward::new(&server.url, "pickscore", &quick())
        .unwrap()
        .score_images(&images(), &prompts())
        .unwrap_err();
    assert!(
        matches!(server_failure(&error), (ServerFailure::Malformed(_), 1)),
        "{error}"
    );

    let metadata_path = metadata_file();
    let metadata = load_geneval_metadata(&*metadata_path).unwrap();
    let pickle_server = TestServer::scripted(vec![Answer::ok(b"\x80\x03}q\x00(X".to_vec())]);
    let error = GenevalReward::new(&pickle_server.url, metadata, &quick())
        .unwrap()
        .score_images(&images(), &prompts())
        .unwrap_err();
    assert!(
        matches!(server_failure(&error), (ServerFailure::Malformed(what), 1) if what.contains("pickle")),
        "{error}"
    );
    assert_eq!(server.received().len(), 1);
    assert_eq!(pickle_server.received().len(), 1);
}

#[test]
fn a_wrong_score_count_or_a_non_finite_score_is_an_error() {
    let server = TestServer::scripted(vec![Answer::json(pickscore_answer(&[0.5]))]);
    let error = UnirlReward::new(&server.url, "pickscore", &quick())
        .unwrap()
        .score_images(&images(), &prompts())
        .unwrap_err();
    assert_eq!(
        server_failure(&error).0,
        &ServerFailure::WrongCount {
            expected: 2,
            found: 1
        }
    );
    assert!(
        error.to_string().contains("1 scores for 2 samples"),
        "{error}"
    );

    let device = Device::default();
    let (samples, conditions) = latent_batch(&device);
    let huge = TestServer::scripted(vec![Answer::json(
        serde_json::json!({"protocol_version": "1", "raw_scores": [1e39]}),
    )]);
    let error = LatentReward::new(&huge.url, [2, 2, 3], &quick())
        .unwrap()
        .score(&samples, &conditions)
        .unwrap_err();
    assert!(
        matches!(server_failure(&error).0, ServerFailure::Malformed(what) if what.contains("finite")),
        "{error}"
    );
}

#[test]
fn a_server_error_is_retried_until_an_answer_comes() {
    let server = TestServer::scripted(vec![
        Answer::status(500, "Traceback (most recent call last): ..."),
        Answer::status(503, ""),
        Answer::json(pickscore_answer(&[3.0, 4.0])),
    ]);
    let scores = UnirlReward::new(&server.url, "pickscore", &quick())
        .unwrap()
        .score_images(&images(), &prompts())
        .unwrap();
    assert_eq!(scores, vec![3.0, 4.0]);
    assert_eq!(server.received().len(), 3);
}

#[test]
fn a_refused_connection_is_unreachable_after_every_retry() {
    let dead_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{dead_port}");
    let error = UnirlReward::new(&url, "pickscore", &quick())
        .unwrap()
        .score_images(&images(), &prompts())
        .unwrap_err();
    let (failure, attempts) = server_failure(&error);
    assert!(matches!(failure, ServerFailure::Unreachable(_)), "{error}");
    assert_eq!(attempts, 3, "1 attempt and 2 retries");
    assert!(error.to_string().contains(&url), "{error}");
}

#[test]
fn a_client_error_is_not_retried() {
    let server = TestServer::scripted(vec![
        Answer::status(400, "{\"detail\": \"unknown reward 'pickscor'\"}"),
        Answer::json(pickscore_answer(&[1.0, 1.0])),
    ]);
    let error = UnirlReward::new(&server.url, "pickscor", &quick())
        .unwrap()
        .score_images(&images(), &prompts())
        .unwrap_err();
    let (failure, attempts) = server_failure(&error);
    assert!(
        matches!(failure, ServerFailure::HttpStatus { code: 400, body } if body.contains("unknown reward")),
        "{error}"
    );
    assert_eq!(attempts, 1);
    assert_eq!(server.received().len(), 1);
}

#[test]
fn https_urls_and_bad_settings_are_refused_up_front() {
    let error = UnirlReward::new("https://rewards.example.com", "pickscore", &quick()).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("https://rewards.example.com") && message.contains("TLS"),
        "{message}"
    );
    assert!(UnirlReward::new("localhost:8000", "pickscore", &quick()).is_err());
    assert!(
        RewardServerConfig::new()
            .with_timeout_secs(f64::NAN)
            .validate()
            .is_err()
    );
    assert!(
        RewardServerConfig::new()
            .with_initial_backoff_secs(-1.0)
            .validate()
            .is_err()
    );
    assert!(LatentReward::new("http://127.0.0.1:1", [16, 0, 4], &quick()).is_err());
    assert!(
        LatentReward::new("http://127.0.0.1:1", [16, 4, 4], &quick())
            .unwrap()
            .with_noise(1.5, None)
            .is_err()
    );
}

#[test]
fn a_trainer_step_whose_reward_server_fails_changes_nothing() {
    let device = Device::default().autodiff();
    device.seed(5);
    let base = MmditLoraConfig::new()
        .with_rank(2)
        .apply(MmditConfig::tiny().init(&device).unwrap())
        .unwrap();
    let normal = Distribution::Normal(0.0, 1.0);
    let conditions = MmditCondition::new(
        Tensor::<3>::random([1, 3, 64], normal, &device),
        Tensor::<2>::random([1, 32], normal, &device),
    );
    let server = TestServer::answering(usize::MAX, |_, _| Answer::status(502, "bad gateway"));
    let reward = RewardSet::single(
        LatentReward::new(&server.url, [16, 4, 4], &quick().with_retries(1)).unwrap(),
    );
    let config = TrainerConfig::new(16 * 4 * 4)
        .with_group_size(2)
        .with_groups_per_rollout(1)
        .with_minibatches_per_rollout(1)
        .with_learning_rate(1e-3);
    let mut trainer = Trainer::new(config, base.clone(), &device).unwrap();
    let before = module_values(trainer.policy());
    let error = trainer.step(&conditions, &reward).unwrap_err();
    assert!(
        matches!(
            server_failure(&error),
            (ServerFailure::HttpStatus { code: 502, .. }, 2)
        ),
        "{error}"
    );
    assert_eq!(trainer.steps_done(), 0);
    assert_eq!(module_values(trainer.policy()), before);
    assert_eq!(
        server.received().len(),
        2,
        "the first sample's request and its retry"
    );
}

/// Checks the clients against `scripts/reward_server.py` serving a local CLIP model
/// folder: `REWARD_SERVER_URL=http://127.0.0.1:8000 cargo test --test reward_servers --
/// --ignored`.
#[test]
#[ignore = "needs scripts/reward_server.py running at REWARD_SERVER_URL"]
fn unirl_against_the_reference_server() {
    let url = std::env::var("REWARD_SERVER_URL").expect("REWARD_SERVER_URL");
    let reward = UnirlReward::new(&url, "pickscore", &RewardServerConfig::new()).unwrap();
    let scores = reward.score_images(&images(), &prompts()).unwrap();
    println!("pickscore of {:?}: {scores:?}", prompts());
    assert_eq!(scores.len(), 2);
}
