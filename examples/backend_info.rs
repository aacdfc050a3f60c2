//! What a backend's device is, which reduced float types it computes in, how fast it
//! multiplies matrices and how fast its attention runs at the mid-size MMDiT's joint
//! attention shape (about one second per figure). `scripts/op_peer_bench.py` measures the
//! same two operations in PyTorch.
//!
//! ```sh
//! cargo run --release --example backend_info
//! cargo run --release --features wgpu --example backend_info -- --backend wgpu
//! BURN_DEVICE=wgpu cargo run --release --features wgpu --example backend_info
//! ```

use std::time::{Duration, Instant};

use burn::prelude::*;
use burn::tensor::FloatDType;
use clap::Parser;
use flow_rl::backend::Backend;
use flow_rl::{Result, Rng};

/// Print a backend's device, its bf16/f16 support and a matmul throughput figure.
#[derive(Parser, Debug)]
struct Args {
    /// flex, tch, tch-cuda, wgpu, vulkan or cuda, among those compiled in [default:
    /// $BURN_DEVICE, else the build's default: cuda, vulkan, wgpu, tch-cuda, tch, then flex]
    #[arg(long)]
    backend: Option<Backend>,
    /// Side of the square matrices multiplied.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Seconds spent measuring each dtype.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Attention shape `batch,heads,tokens,head_dim` (default: the mid-size MMDiT's joint
    /// attention, 256 image + 333 context tokens).
    #[arg(
        long,
        default_value = "1,6,589,64",
        value_delimiter = ',',
        num_args = 4
    )]
    attention: Vec<usize>,
}

fn main() {
    if let Err(err) = run(Args::parse()) {
        eprintln!("backend_info failed: {err}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let backend = Backend::from_flag(args.backend)?;
    let compiled: Vec<&str> = Backend::compiled().iter().map(|b| b.name()).collect();
    println!(
        "backend        {backend} (compiled in: {})",
        compiled.join(", ")
    );
    let device = backend.open()?;
    println!("device         {device:?}");
    print_identity(&device);
    let reduced = [("bf16", FloatDType::BF16), ("f16", FloatDType::F16)];
    for (name, dtype) in reduced {
        let supported = device.supports_dtype(dtype);
        println!(
            "{name:<14} {}",
            if supported {
                "supported"
            } else {
                "not supported"
            }
        );
    }
    println!();
    for (name, dtype) in [("f32", FloatDType::F32)].into_iter().chain(reduced) {
        if !device.supports_dtype(dtype) {
            continue;
        }
        let (rate, products, elapsed) = matmul_throughput(&device, dtype, args.size, args.seconds)?;
        println!(
            "matmul {name:<4} {size}x{size}: {rate:>9.1} GFLOP/s ({products} products in {:.2} s)",
            elapsed.as_secs_f64(),
            size = args.size
        );
    }
    // clap takes exactly four values (`num_args = 4`).
    let shape: [usize; 4] =
        args.attention
            .as_slice()
            .try_into()
            .map_err(|_| flow_rl::Error::InvalidArgument {
                name: "--attention".into(),
                value: format!("{:?}", args.attention),
                expected: "four sizes: batch,heads,tokens,head_dim".into(),
            })?;
    let seconds = attention_seconds(&device, shape, args.seconds)?;
    let [batch, heads, tokens, head_dim] = shape;
    // q·kᵀ and p·v: 2·T²·d multiply-adds each.
    let flop = 4.0 * (batch * heads * tokens * tokens * head_dim) as f64;
    println!(
        "attention f32 {batch}x{heads}x{tokens}x{head_dim}: {:>8.3} ms ({:.1} GFLOP/s)",
        seconds * 1e3,
        flop / seconds / 1e9
    );
    Ok(())
}

/// Seconds per call of burn's `attention` (softmax(q·kᵀ/√d)·v) on f32 `shape` inputs, the
/// median of repeated calls, each read back, over about `budget` seconds.
fn attention_seconds(device: &Device, shape: [usize; 4], budget: f64) -> Result<f64> {
    let mut rng = Rng::seed_from(1);
    let [batch, heads, tokens, head_dim] = shape;
    let mut input = || {
        rng.normal_tensor([batch * heads * tokens, head_dim], device)
            .reshape(shape)
    };
    let (query, key, value) = (input(), input(), input());
    let call = || -> Result<f64> {
        let started = Instant::now();
        let out = burn::tensor::module::attention(
            query.clone(),
            key.clone(),
            value.clone(),
            None,
            None,
            Default::default(),
        );
        out.sum()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|err| flow_rl::Error::TensorRead(format!("{err:?}")))?;
        Ok(started.elapsed().as_secs_f64())
    };
    call()?;
    let started = Instant::now();
    let mut times = Vec::new();
    while started.elapsed().as_secs_f64() < budget || times.len() < 5 {
        times.push(call()?);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The adapter's own name and what kernels are compiled for, where the backend reports them.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn print_identity(device: &Device) {
    if let Some(identity) = device.identity() {
        println!("adapter        {}", identity.name);
        println!("compiled for   {}", identity.fingerprint);
    }
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
fn print_identity(_: &Device) {}

/// Multiplies two `size × size` matrices of `dtype` repeatedly for about `seconds`; returns
/// GFLOP/s (2·size³ per product), the number of products and the time they took.
///
/// Products run in batches whose results are summed and read back, which forces the device
/// to finish them (a lazy backend could otherwise skip unread work); the sums cost size² per
/// product, negligible beside size³.
fn matmul_throughput(
    device: &Device,
    dtype: FloatDType,
    size: usize,
    seconds: f64,
) -> Result<(f64, usize, Duration)> {
    let mut rng = Rng::seed_from(0);
    // Entries of variance 1/size keep the products of order 1, within f16's range.
    let scale = 1.0 / (size as f64).sqrt();
    let a = rng
        .normal_tensor([size, size], device)
        .mul_scalar(scale)
        .cast(dtype);
    let b = rng
        .normal_tensor([size, size], device)
        .mul_scalar(scale)
        .cast(dtype);
    let batch = |products: usize| -> Result<Duration> {
        let started = Instant::now();
        let mut total = a.clone().matmul(b.clone());
        for _ in 1..products {
            total = total + a.clone().matmul(b.clone());
        }
        let sum = total.cast(FloatDType::F32).sum().into_data();
        sum.convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|err| flow_rl::Error::TensorRead(format!("{err:?}")))?;
        Ok(started.elapsed())
    };
    // Warm-up: compiles the kernels (and autotunes them on GPU backends).
    batch(2)?;
    // Grow the batch until one takes a tenth of the budget, so the read-back is amortised.
    let mut products = 1;
    while batch(products)?.as_secs_f64() < seconds / 10.0 && products < 1 << 16 {
        products *= 2;
    }
    let (mut done, mut elapsed) = (0, Duration::ZERO);
    while elapsed.as_secs_f64() < seconds {
        elapsed += batch(products)?;
        done += products;
    }
    let flops = 2.0 * (size as f64).powi(3) * done as f64;
    Ok((flops / elapsed.as_secs_f64() / 1e9, done, elapsed))
}
