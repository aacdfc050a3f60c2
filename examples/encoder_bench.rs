//! Prompts per second of SD3's prompt encoding (`PromptEncoder::encode`: CLIP-L, CLIP-G and
//! T5), load time and peak memory; the flow-rl half of a comparison with transformers
//! (`scripts/encoder_peer_bench.py`, which writes random-weight encoder folders, the prompt
//! list and its own output for `--compare`).
//!
//! ```sh
//! PY=/work/peer-venv/bin/python
//! $PY scripts/encoder_peer_bench.py --write /tmp/enc-mid --config mid
//! $PY scripts/encoder_peer_bench.py --write-prompts /tmp/enc-prompts.txt --prompts 32
//! $PY scripts/encoder_peer_bench.py --bench /tmp/enc-mid --prompt-file /tmp/enc-prompts.txt \
//!     --prompts 32 --batch-size 8 --max-sequence-length 256 --save /tmp/enc-mid.py.safetensors
//! cargo build --release --example encoder_bench
//! RAYON_NUM_THREADS=2 target/release/examples/encoder_bench --model /tmp/enc-mid \
//!     --prompt-file /tmp/enc-prompts.txt --prompts 32 --batch-size 8 \
//!     --max-sequence-length 256 --precision f32 --compare /tmp/enc-mid.py.safetensors
//! ```
//!
//! One untimed warm-up pass encodes the first `--batch-size` prompts; then `--repeats` timed
//! calls of `encode` take all `--prompts` (in passes of `--batch-size`). Peak memory is
//! `flow_rl::memory::PeakMemory`'s, sampled after every call: the device pool's reserved
//! bytes, or on `flex` the process's peak resident set, which also counts the pages of the
//! memory-mapped weight files that loading reads; a thread sampling `/proc/self/status` every
//! 20 ms prints the largest anonymous and file-backed parts apart. `--compare FILE` reads `context` and
//! `pooled` (f32) from a safetensors file and prints `max |ours − theirs| / max |theirs|` for
//! each; docs/benchmarks.md has the measured figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "common/encoder_precision.rs"]
mod encoder_precision;

use burn::prelude::*;
use clap::Parser;
use encoder_precision::Precision;
use flow_rl::backend::Backend;
use flow_rl::memory::{PeakMemory, ResidentSet, process_resident_set};
use flow_rl::models::prompt_encoder::{
    DEFAULT_ENCODE_BATCH_SIZE, DEFAULT_MAX_SEQUENCE_LENGTH, PromptEncoder, read_prompt_list,
};
use flow_rl::{Error, Result};

/// Time SD3's prompt encoding on a diffusers text-encoder folder.
#[derive(Parser, Debug)]
struct Args {
    /// A diffusers SD3/SD3.5 folder (`text_encoder*/`, `tokenizer*/`).
    #[arg(long)]
    model: PathBuf,
    /// One prompt per line, or a JSON array of strings (`.json`).
    #[arg(long)]
    prompt_file: PathBuf,
    /// Encode the first N prompts of the file [default: all].
    #[arg(long)]
    prompts: Option<usize>,
    /// Prompts per encoder pass.
    #[arg(long, default_value_t = DEFAULT_ENCODE_BATCH_SIZE)]
    batch_size: usize,
    /// T5 tokens per prompt (diffusers' default 256; flow_grpo uses 128).
    #[arg(long, default_value_t = DEFAULT_MAX_SEQUENCE_LENGTH)]
    max_sequence_length: usize,
    /// Weight precision of the encoders.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Timed calls of `encode` over all the prompts (after one warm-up pass).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// A safetensors file with `context` and `pooled` (f32) of the same prompts, such as
    /// `encoder_peer_bench.py --save` writes: print the largest relative difference.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in [default:
    /// $BURN_DEVICE, else the build's default: cuda, vulkan, wgpu, tch-cuda, tch, then flex]
    #[arg(long)]
    backend: Option<Backend>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.repeats == 0 {
        return Err(invalid("--repeats", 0, "at least one timed run"));
    }
    let backend = Backend::from_flag(args.backend)?;
    let device = backend.open()?;
    let prompts = first_prompts(&args.prompt_file, args.prompts)?;
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let dtype = args.precision.dtype();

    let mut memory = PeakMemory::new(&device);
    let resident = ResidentPeaks::start();
    let loading = Instant::now();
    let encoder = PromptEncoder::from_diffusers_folder(
        &args.model,
        Some(dtype),
        args.max_sequence_length,
        &device,
    )?
    .with_batch_size(args.batch_size)?;
    let load_seconds = loading.elapsed().as_secs_f64();
    memory.sample();
    let loaded_memory = memory.report();

    let warm_up = &prompts[..args.batch_size.min(prompts.len())];
    let warmed_up = encoder.encode(warm_up)?;
    memory.sample();
    read_back(&warmed_up.context)?;
    drop(warmed_up);

    let encoding = Instant::now();
    let mut embeddings = None;
    for _ in 0..args.repeats {
        let encoded = encoder.encode(&prompts)?;
        memory.sample();
        // Reading one value waits for the device, so the time is the computation's.
        read_back(&encoded.context)?;
        embeddings = Some(encoded);
    }
    let seconds = encoding.elapsed().as_secs_f64() / args.repeats as f64;
    let embeddings = embeddings.expect("at least one timed run");

    println!(
        "flow-rl on {}, {dtype:?}: {}",
        backend.name(),
        args.model.display()
    );
    println!(
        "loaded in {load_seconds:.1} s; encoded {} prompts in passes of {}, \
         max_sequence_length {}: {seconds:.2} s ({:.2} prompts/s), context {:?}, pooled {:?}",
        prompts.len(),
        args.batch_size,
        args.max_sequence_length,
        prompts.len() as f64 / seconds,
        embeddings.context.dims(),
        embeddings.pooled.dims()
    );
    println!(
        "peak memory {} (after loading {loaded_memory})",
        memory.report()
    );
    if let Some(peaks) = resident.stop() {
        println!(
            "resident set sampled every {} ms, the largest of each part: {peaks} (file-backed: \
             the mapped weight files, which the kernel may drop under memory pressure)",
            ResidentPeaks::PERIOD.as_millis()
        );
    }
    if let Some(path) = &args.compare {
        let context = relative_difference(path, "context", embeddings.context)?;
        let pooled = relative_difference(path, "pooled", embeddings.pooled)?;
        println!(
            "max |ours - theirs| / max |theirs| against {}: context {context:.2e}, pooled \
             {pooled:.2e}",
            path.display()
        );
    }
    Ok(())
}

/// The largest anonymous and file-backed parts of the resident set, sampled on a thread:
/// the peak resident set alone counts the weight files' mapped pages, which loading reads.
struct ResidentPeaks {
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<Option<ResidentSet>>,
}

impl ResidentPeaks {
    const PERIOD: Duration = Duration::from_millis(20);

    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let sampler = std::thread::spawn(move || {
            let mut peaks: Option<ResidentSet> = None;
            loop {
                let now = process_resident_set()?;
                let peak = peaks.get_or_insert(now);
                peak.anonymous = peak.anonymous.max(now.anonymous);
                peak.file_backed = peak.file_backed.max(now.file_backed);
                peak.shared = peak.shared.max(now.shared);
                if stopped.load(Ordering::Relaxed) {
                    return peaks;
                }
                std::thread::sleep(Self::PERIOD);
            }
        });
        Self { stop, sampler }
    }

    /// The peaks, `None` where `/proc/self/status` has no resident-set split (not Linux).
    fn stop(self) -> Option<ResidentSet> {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().ok().flatten()
    }
}

/// The first `count` prompts of the file (all of them for `None`).
fn first_prompts(path: &Path, count: Option<usize>) -> Result<Vec<String>> {
    let mut prompts = read_prompt_list(path)?;
    match count {
        None => Ok(prompts),
        Some(count) if (1..=prompts.len()).contains(&count) => {
            prompts.truncate(count);
            Ok(prompts)
        }
        Some(count) => Err(invalid(
            "--prompts",
            count,
            format!("1 to the {} prompts of {}", prompts.len(), path.display()),
        )),
    }
}

/// Waits for the device by reading one value of `tensor` `[P, T, D]`.
fn read_back(tensor: &Tensor<3>) -> Result<()> {
    let value = tensor
        .clone()
        .slice([0..1, 0..1, 0..1])
        .into_scalar::<f32>();
    if value.is_finite() {
        Ok(())
    } else {
        Err(invalid("the first context value", value, "a finite number"))
    }
}

/// `max |ours − theirs| / max |theirs|` for the f32 tensor `name` of the safetensors file at
/// `path`, which must have `ours`' shape.
fn relative_difference<const D: usize>(path: &Path, name: &str, ours: Tensor<D>) -> Result<f64> {
    let bytes = std::fs::read(path).map_err(|err| Error::io(path, err))?;
    let unreadable = |message: String| Error::Checkpoint {
        path: path.display().to_string(),
        message,
    };
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|err| unreadable(format!("not a safetensors file: {err}")))?;
    let view = file
        .tensor(name)
        .map_err(|err| unreadable(format!("no `{name}` tensor: {err}")))?;
    if view.dtype() != safetensors::Dtype::F32 {
        return Err(unreadable(format!(
            "`{name}` is {:?}; expected F32",
            view.dtype()
        )));
    }
    if view.shape() != ours.dims() {
        return Err(Error::ShapeMismatch {
            name: format!("`{name}` of {}", path.display()),
            expected: format!("{:?}, ours", ours.dims()),
            found: format!("{:?}", view.shape()),
        });
    }
    let theirs: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        .collect();
    let ours = ours
        .cast(burn::tensor::DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|err| invalid(name, format!("{err:?}"), "f32 values"))?;
    let (difference, scale) =
        ours.iter()
            .zip(&theirs)
            .fold((0f64, 0f64), |(difference, scale), (&a, &b)| {
                (
                    difference.max((a as f64 - b as f64).abs()),
                    scale.max((b as f64).abs()),
                )
            });
    Ok(difference / scale)
}

fn invalid(name: &str, value: impl std::fmt::Display, expected: impl Into<String>) -> Error {
    Error::InvalidArgument {
        name: name.into(),
        value: value.to_string(),
        expected: expected.into(),
    }
}
