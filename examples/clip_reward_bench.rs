//! PickScore of images and prompts in process, timed: the Rust side of
//! `scripts/clip_reward_peer_bench.py` (flow_grpo's scorer on transformers).
//!
//! ```sh
//! PY=/work/peer-venv/bin/python
//! $PY scripts/clip_reward_peer_bench.py --write /tmp/clip-mid --config mid
//! $PY scripts/clip_reward_peer_bench.py --write-images /tmp/clip-images --images 32
//! $PY scripts/clip_reward_peer_bench.py --bench /tmp/clip-mid --images-dir /tmp/clip-images \
//!     --batch-size 16 --save /tmp/clip-mid.scores.json
//! cargo build --release --example clip_reward_bench
//! RAYON_NUM_THREADS=2 target/release/examples/clip_reward_bench --model /tmp/clip-mid \
//!     --images-dir /tmp/clip-images --batch-size 16 --compare /tmp/clip-mid.scores.json
//! ```
//!
//! The timed part is what a training step pays: preprocessing (the PIL bicubic resize, crop
//! and normalisation), both towers in passes of `--batch-size` and the score. The prompt
//! cache is emptied before each run (a fresh reward), so the text tower is timed too, as
//! flow_grpo's scorer recomputes it. Peak memory is `flow_rl::memory::PeakMemory`'s.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use flow_rl::backend::Backend;
use flow_rl::memory::PeakMemory;
use flow_rl::models::clip::{ClipModelWeights, ClipTokenizer};
use flow_rl::reward::{ClipPreference, ClipPreferenceReward, ImageReward};
use flow_rl::{Error, Result};
use image::RgbImage;

/// Time PickScore on a folder of images.
#[derive(Parser, Debug)]
struct Args {
    /// A transformers `CLIPModel` folder (or OpenCLIP-layout file).
    #[arg(long)]
    model: PathBuf,
    /// The CLIP tokenizer folder [default: --model].
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// `NNNN.png` images and `prompts.txt` (one prompt per image), as the peer script writes.
    #[arg(long)]
    images_dir: PathBuf,
    /// Images per CLIP pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Timed runs over all images; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// The peer's scores (a JSON array) to compare ours with.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in.
    #[arg(long)]
    backend: Option<Backend>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let backend = Backend::from_flag(args.backend)?;
    let device = backend.open()?;
    let (images, prompts) = read_images(&args.images_dir)?;

    let mut memory = PeakMemory::new(&device);
    let loading = Instant::now();
    let model = ClipModelWeights::open(&args.model)?.load(None, &device)?;
    let tokenizer = ClipTokenizer::from_folder(args.tokenizer.as_ref().unwrap_or(&args.model))?;
    let load_seconds = loading.elapsed().as_secs_f64();
    memory.sample();

    let fresh_reward = || {
        ClipPreferenceReward::new(
            ClipPreference::PickScore,
            model.clone(),
            tokenizer.clone(),
            &device,
        )
        .with_batch_size(args.batch_size)
    };
    let warm_up = args.batch_size.min(images.len());
    fresh_reward()?.score_images(&images[..warm_up], &prompts[..warm_up])?;
    memory.sample();
    let mut best = f64::INFINITY;
    let mut scores = Vec::new();
    for _ in 0..args.repeats.max(1) {
        let reward = fresh_reward()?;
        let started = Instant::now();
        scores = reward.score_images(&images, &prompts)?;
        best = best.min(started.elapsed().as_secs_f64());
        memory.sample();
    }
    println!(
        "flow-rl on {}: {} images in {best:.2} s ({:.2} images/s), load {load_seconds:.1} s, \
         peak memory {}",
        backend.name(),
        images.len(),
        images.len() as f64 / best,
        memory.report()
    );
    if let Some(path) = &args.compare {
        let text = std::fs::read_to_string(path).map_err(|err| Error::io(path, err))?;
        let theirs: Vec<f32> =
            serde_json::from_str(&text).map_err(|err| Error::InvalidArgument {
                name: "--compare".into(),
                value: path.display().to_string(),
                expected: format!("a JSON array of scores ({err})"),
            })?;
        let worst = scores
            .iter()
            .zip(&theirs)
            .map(|(ours, theirs)| (ours - theirs).abs() / theirs.abs().max(1e-6))
            .fold(0f32, f32::max);
        println!("largest relative difference to the peer's scores: {worst:.2e}");
    }
    Ok(())
}

/// The images `0000.png`, `0001.png`, ... and their prompts from `prompts.txt`.
fn read_images(folder: &Path) -> Result<(Vec<RgbImage>, Vec<String>)> {
    let list = folder.join("prompts.txt");
    let prompts: Vec<String> = std::fs::read_to_string(&list)
        .map_err(|err| Error::io(&list, err))?
        .lines()
        .map(str::to_owned)
        .collect();
    let images = (0..prompts.len())
        .map(|index| {
            let path = folder.join(format!("{index:04}.png"));
            image::open(&path)
                .map(|image| image.to_rgb8())
                .map_err(|err| Error::InvalidArgument {
                    name: "image".into(),
                    value: path.display().to_string(),
                    expected: format!("a PNG ({err})"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((images, prompts))
}
