//! Image rewards on latents: the shared decoder, prompts in conditions, JPEG sizes, and the
//! PEFT adapter folder.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::prelude::*;
use flow_rl::Error;
use flow_rl::models::mmdit::{
    DIFFUSERS_LORA_METADATA, MmditCondition, MmditConfig, MmditLoraConfig, PEFT_CONFIG_FILE,
    PEFT_WEIGHTS_FILE,
};
use flow_rl::policy::ConditionBatch;
use flow_rl::reward::{
    DecodedReward, ImageDecoder, ImageReward, JpegSize, LatentDecoder, RewardSet,
};
use image::RgbImage;

/// Maps channel 0 of each latent to a grey image and counts its passes.
struct CountingDecoder {
    passes: Arc<AtomicUsize>,
}

impl ImageDecoder for CountingDecoder {
    fn latent_channels(&self) -> usize {
        2
    }

    fn decode_images(
        &self,
        latents: Tensor<4>,
        chunk_size: usize,
    ) -> flow_rl::Result<Vec<RgbImage>> {
        let [batch, channels, height, width] = latents.dims();
        assert_eq!(channels, 2);
        self.passes
            .fetch_add(batch.div_ceil(chunk_size), Ordering::SeqCst);
        let values = latents.into_data().try_to_vec::<f32>().unwrap();
        Ok((0..batch)
            .map(|b| {
                RgbImage::from_fn(width as u32, height as u32, |x, y| {
                    let index = b * channels * height * width + y as usize * width + x as usize;
                    image::Rgb([((values[index] + 1.0) * 127.5).clamp(0.0, 255.0) as u8; 3])
                })
            })
            .collect())
    }
}

/// Records the images and prompts it is given; scores each image by its first pixel.
struct FirstPixel;

impl ImageReward for FirstPixel {
    fn name(&self) -> &str {
        "first_pixel"
    }

    fn score_images(&self, images: &[RgbImage], prompts: &[String]) -> flow_rl::Result<Vec<f32>> {
        assert_eq!(images.len(), prompts.len());
        Ok(images
            .iter()
            .zip(prompts)
            .map(|(image, prompt)| image.get_pixel(0, 0)[0] as f32 + prompt.len() as f32 * 1000.0)
            .collect())
    }
}

fn condition(rows: usize, device: &Device) -> MmditCondition {
    MmditCondition::new(
        Tensor::zeros([rows, 3, 8], device),
        Tensor::zeros([rows, 4], device),
    )
}

#[test]
fn rewards_sharing_a_decoder_decode_each_batch_once_in_chunks() {
    let device = Device::default();
    let passes = Arc::new(AtomicUsize::new(0));
    let decoder = Arc::new(
        LatentDecoder::new(
            CountingDecoder {
                passes: passes.clone(),
            },
            4,
            6,
        )
        .unwrap()
        .with_chunk_size(2)
        .unwrap(),
    );
    let rewards = RewardSet::single(DecodedReward::new(FirstPixel, decoder.clone())).with(
        DecodedReward::new(JpegSize::incompressibility(), decoder),
        1.0,
    );
    let prompts = vec!["a".to_owned(), "bb".to_owned(), "ccc".to_owned()];
    let conditions = condition(3, &device).with_prompts(prompts).unwrap();
    // Sample i's first latent value is i/4 − 0.5, so its first pixel is known.
    let mut values = vec![0.0f32; 3 * 2 * 4 * 6];
    for (sample, chunk) in values.chunks_mut(48).enumerate() {
        chunk[0] = sample as f32 / 4.0 - 0.5;
    }
    let samples = Tensor::<2>::from_data(TensorData::new(values, [3, 48]), &device);
    let scores = rewards.score(&samples, &conditions).unwrap();
    assert_eq!(
        passes.load(Ordering::SeqCst),
        2,
        "3 images in chunks of 2, decoded once"
    );
    let expected: Vec<f32> = (0..3)
        .map(|i| ((i as f32 / 4.0 + 0.5) * 127.5) as u8 as f32 + (i + 1) as f32 * 1000.0)
        .collect();
    assert_eq!(scores.values[0], expected, "images or prompts out of order");
    assert!(scores.values[1].iter().all(|&kb| kb > 0.0));

    rewards.score(&samples.clone().neg(), &conditions).unwrap();
    assert_eq!(
        passes.load(Ordering::SeqCst),
        4,
        "other latents are decoded again"
    );
}

#[test]
fn decoded_rewards_refuse_conditions_without_prompts_and_wrong_sizes() {
    let device = Device::default();
    let passes = Arc::new(AtomicUsize::new(0));
    let decoder = Arc::new(LatentDecoder::new(CountingDecoder { passes }, 4, 6).unwrap());
    let reward = RewardSet::single(DecodedReward::new(FirstPixel, decoder));
    let samples = Tensor::<2>::zeros([2, 48], &device);
    let error = reward
        .score(&samples, &condition(2, &device))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("prompts") && error.contains("first_pixel"),
        "{error}"
    );

    let with_prompts = condition(2, &device)
        .with_prompts(vec!["a".into(), "b".into()])
        .unwrap();
    let error = reward
        .score(&Tensor::<2>::zeros([2, 40], &device), &with_prompts)
        .unwrap_err();
    assert!(matches!(error, Error::ShapeMismatch { .. }), "{error:?}");
    assert!(error.to_string().contains("4×6"), "{error}");

    assert!(
        condition(2, &device)
            .with_prompts(vec!["a".into()])
            .is_err()
    );
    assert!(
        LatentDecoder::new(
            CountingDecoder {
                passes: Arc::default()
            },
            0,
            6
        )
        .is_err()
    );
}

#[test]
fn conditions_carry_their_prompts_through_picks_and_joins() {
    let device = Device::default();
    let named = condition(2, &device)
        .with_prompts(vec!["x".into(), "y".into()])
        .unwrap();
    let picked = named.pick(&[1, 0, 1]);
    assert_eq!(picked.prompts().unwrap(), ["y", "x", "y"]);
    let joined = MmditCondition::concat(&[picked.clone(), named.clone()]);
    assert_eq!(joined.len(), 5);
    assert_eq!(joined.prompts().unwrap(), ["y", "x", "y", "x", "y"]);
    let error = named
        .check_joinable(&condition(1, &device))
        .unwrap_err()
        .to_string();
    assert!(error.contains("prompts"), "{error}");
}

#[test]
fn jpeg_sizes_grow_with_detail_and_follow_each_scale() {
    let flat = RgbImage::from_pixel(48, 40, image::Rgb([30, 140, 220]));
    let mut state = 12345u32;
    let noisy = RgbImage::from_fn(48, 40, |_, _| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        image::Rgb([(state >> 24) as u8, (state >> 16) as u8, (state >> 8) as u8])
    });
    let images = [flat, noisy];
    let prompts = vec![String::new(); 2];
    let size = JpegSize::incompressibility()
        .score_images(&images, &prompts)
        .unwrap();
    assert!(size[1] > 2.0 * size[0], "{size:?}");
    for (image, kb) in images.iter().zip(&size) {
        assert_eq!(*kb, JpegSize::encoded_bytes(image).unwrap() as f32 / 1000.0);
        // The encoder's output is a real JPEG of the same size.
        let mut encoded = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 95)
            .encode_image(image)
            .unwrap();
        let decoded = image::load_from_memory(encoded.get_ref()).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (48, 40));
    }
    let flow_grpo = JpegSize::compressibility()
        .score_images(&images, &prompts)
        .unwrap();
    let ddpo = JpegSize::compressibility_ddpo()
        .score_images(&images, &prompts)
        .unwrap();
    for i in 0..2 {
        assert!((flow_grpo[i] + size[i] / 500.0).abs() <= 1e-6 * size[i].abs());
        assert!((ddpo[i] + size[i]).abs() <= 1e-6 * size[i].abs());
    }
}

#[test]
fn the_peft_folder_holds_the_adapters_and_their_lora_config() {
    let device = Device::default().autodiff();
    device.seed(3);
    let model = MmditLoraConfig::new()
        .with_rank(4)
        .with_alpha(8.0)
        .apply(MmditConfig::tiny().init(&device).unwrap())
        .unwrap();
    let folder = tempfile::tempdir().unwrap();
    let adapter = folder.path().join("adapter");
    model.save_peft_adapter(&adapter).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(adapter.join(PEFT_CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    let targets = config["target_modules"].as_array().unwrap();
    assert!(
        targets
            .iter()
            .any(|t| t.as_str().unwrap().ends_with("attn.to_q")),
        "{targets:?}"
    );

    // The weights file is save_lora's, and loads back onto a fresh base.
    let single = folder.path().join("lora.safetensors");
    model.save_lora(&single).unwrap();
    let (ours, peft) = (
        std::fs::read(&single).unwrap(),
        std::fs::read(adapter.join(PEFT_WEIGHTS_FILE)).unwrap(),
    );
    let (ours, peft) = (
        safetensors::SafeTensors::deserialize(&ours).unwrap(),
        safetensors::SafeTensors::deserialize(&peft).unwrap(),
    );
    assert_eq!(
        ours.len(),
        2 * targets.len(),
        "an A and a B factor per target"
    );
    for name in ours.names() {
        assert_eq!(
            ours.tensor(name).unwrap().data(),
            peft.tensor(name).unwrap().data(),
            "{name}"
        );
    }
    // diffusers' load_lora_weights reads alpha only from this metadata: without it, it
    // would take alpha = r and halve the update.
    let bytes = std::fs::read(adapter.join(PEFT_WEIGHTS_FILE)).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().as_ref().unwrap();
    let diffusers: serde_json::Value =
        serde_json::from_str(&metadata[DIFFUSERS_LORA_METADATA]).unwrap();
    assert_eq!(diffusers["transformer.r"], 4);
    assert_eq!(diffusers["transformer.lora_alpha"], 8.0);
    assert_eq!(
        diffusers["transformer.target_modules"],
        config["target_modules"]
    );
    assert_eq!(diffusers["transformer.peft_type"], "LORA");

    let base = MmditConfig::tiny().init(&device).unwrap();
    let reloaded = base
        .load_lora(adapter.join(PEFT_WEIGHTS_FILE), None)
        .unwrap();
    assert_eq!(reloaded.lora(), Some((4, 8.0)));

    // A file diffusers wrote carries alpha in its metadata alone.
    let mut tensors = Vec::new();
    for name in peft.names() {
        tensors.push((name.to_owned(), peft.tensor(name).unwrap()));
    }
    let only_diffusers = std::collections::HashMap::from([
        ("format".to_owned(), "pt".to_owned()),
        (
            DIFFUSERS_LORA_METADATA.to_owned(),
            r#"{"transformer.lora_alpha": 2.0, "transformer.r": 4}"#.to_owned(),
        ),
    ]);
    let diffusers_file = folder.path().join("from_diffusers.safetensors");
    safetensors::serialize_to_file(tensors, Some(only_diffusers), &diffusers_file).unwrap();
    let reloaded = MmditConfig::tiny()
        .init(&device)
        .unwrap()
        .load_lora(&diffusers_file, None)
        .unwrap();
    assert_eq!(reloaded.lora(), Some((4, 2.0)));
}

/// Writes a PEFT adapter of the dual MMDiT fixture (rank 4, alpha 8, random non-zero B) into
/// `$FLOW_RL_PEFT_ADAPTER_OUT`, for `scripts/peft_adapter_check.py` to load in diffusers:
///
/// ```sh
/// FLOW_RL_PEFT_ADAPTER_OUT=/tmp/adapter cargo test --test image_rewards -- --ignored peft_adapter_for
/// /work/peer-venv/bin/python scripts/peft_adapter_check.py \
///     --transformer tests/fixtures/mmdit/dual/diffusers --adapter /tmp/adapter
/// ```
#[test]
#[ignore = "writes an adapter for the diffusers check in scripts/peft_adapter_check.py"]
fn peft_adapter_for_the_diffusers_check() {
    let out = std::env::var("FLOW_RL_PEFT_ADAPTER_OUT")
        .expect("set FLOW_RL_PEFT_ADAPTER_OUT to the adapter folder to write");
    let device = Device::default().autodiff();
    device.seed(5);
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mmdit/dual/diffusers");
    let checkpoint = flow_rl::models::mmdit::MmditCheckpoint::open(&fixture).unwrap();
    let base = checkpoint.infer_config().unwrap().init(&device).unwrap();
    let base = checkpoint.load_into(base, None).unwrap();
    let model = MmditLoraConfig::new()
        .with_rank(4)
        .with_alpha(8.0)
        .apply(base)
        .unwrap();
    // B starts at zero; give it values so that the check compares real factors.
    let folder = tempfile::tempdir().unwrap();
    let plain = folder.path().join("lora.safetensors");
    model.save_lora(&plain).unwrap();
    let bytes = std::fs::read(&plain).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    let mut values = Vec::new();
    for name in file.names() {
        let view = file.tensor(name).unwrap();
        let count: usize = view.shape().iter().product();
        let data: Vec<u8> = (0..count)
            .flat_map(|i| (((i * 7919) % 101) as f32 / 101.0 - 0.5).to_le_bytes())
            .collect();
        values.push((name.to_owned(), view.shape().to_vec(), data));
    }
    for (name, shape, data) in &values {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .unwrap();
        tensors.push((name.clone(), view));
    }
    let metadata = std::collections::HashMap::from([("lora_alpha".to_owned(), "8".to_owned())]);
    safetensors::serialize_to_file(tensors, Some(metadata), &plain).unwrap();
    let base = checkpoint.infer_config().unwrap().init(&device).unwrap();
    let reloaded = checkpoint
        .load_into(base, None)
        .unwrap()
        .load_lora(&plain, None)
        .unwrap();
    reloaded.save_peft_adapter(&out).unwrap();
    println!("wrote {out}");
}
