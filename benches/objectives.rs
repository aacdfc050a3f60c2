//! Loss + backward of each objective at SD3.5 scale: 48 rows (three trained steps of 16
//! samples) × 65,536 latent dims (16 channels at 64×64, i.e. 512² pixels).
//!
//! Run with `cargo bench --bench objectives`, or on LibTorch with
//! `BURN_DEVICE=tch cargo bench --features tch --bench objectives` (after
//! `eval "$(scripts/libtorch_env.sh)"`); results are recorded in docs/benchmarks.md.
//! Set `FLOW_RL_BENCH_DEFAULT_MALLOC=1` to keep glibc's adaptive allocator (see below).

use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{Criterion, criterion_group, criterion_main};
use flow_rl::backend::Backend;
use flow_rl::objective::{
    FlowDppoConfig, GrpoGuardConfig, RatioClipConfig, ReferenceKlConfig, RowBatch,
    TrustRegionObjective,
};

const ROWS: usize = 48;
const DIMS: usize = 65_536;

fn batch(device: &Device) -> RowBatch {
    device.seed(0);
    let normal = |shape: [usize; 2], std: f64| {
        Tensor::<2>::random(shape, Distribution::Normal(0.0, std), device)
    };
    let old_mean = normal([ROWS, DIMS], 1.0);
    let sample = old_mean.clone() + normal([ROWS, DIMS], 0.7);
    // A drift of about 3e-3·s puts KL near τ = 1e-5, so masks and clips are mixed.
    let new_mean = old_mean.clone() + normal([ROWS, DIMS], 3e-3);
    let advantages = Tensor::<1>::random([ROWS], Distribution::Normal(0.0, 1.0), device);
    RowBatch::new(
        new_mean,
        old_mean.clone(),
        sample,
        Tensor::full([ROWS], 0.7, device),
        Tensor::full([ROWS], -0.04, device),
        advantages,
    )
    .with_ref_mean(old_mean)
}

fn loss_and_backward(objective: &dyn TrustRegionObjective, batch: &RowBatch) -> f32 {
    let mut batch = batch.clone();
    batch.new_mean = batch.new_mean.clone().detach().require_grad();
    let output = objective.loss(&batch).expect("valid batch");
    let grads = output.loss.backward();
    let grad = batch.new_mean.grad(&grads).expect("gradient");
    // Reading one value forces the backward pass to finish on asynchronous backends.
    grad.slice(s![0..1, 0..1]).into_scalar::<f32>()
}

/// glibc adapts its mmap and trim thresholds to the allocation history, so whether each fresh
/// 12 MiB buffer is page-faulted in again (about 25 MB of faults per evaluation here) depends on
/// what ran before, and differs from one benchmark to the next by up to 2×. Fixing the
/// thresholds makes the figures measure the objectives rather than the allocator's state.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pin_allocator_thresholds() {
    if std::env::var_os("FLOW_RL_BENCH_DEFAULT_MALLOC").is_some() {
        return;
    }
    const ONE_GIB: libc::c_int = 1 << 30;
    // SAFETY: mallopt only changes allocator tuning parameters; it is called before any
    // benchmark allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, ONE_GIB);
        libc::mallopt(libc::M_TRIM_THRESHOLD, ONE_GIB);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn pin_allocator_thresholds() {}

fn bench_objectives(c: &mut Criterion) {
    pin_allocator_thresholds();
    // The backend named by BURN_DEVICE (flex, tch, wgpu, ...), else the build's default.
    let device = match Backend::from_env().and_then(Backend::open) {
        Ok(device) => device.autodiff(),
        Err(err) => panic!("no device to benchmark on: {err}"),
    };
    let batch = batch(&device);
    let objectives: Vec<(&str, Box<dyn TrustRegionObjective>)> = vec![
        (
            "ratio-clip",
            Box::new(RatioClipConfig::new().init().unwrap()),
        ),
        (
            "grpo-guard",
            Box::new(GrpoGuardConfig::new().init().unwrap()),
        ),
        ("flow-dppo", Box::new(FlowDppoConfig::new().init().unwrap())),
        (
            "flow-dppo+reference-kl",
            Box::new(
                ReferenceKlConfig::new()
                    .with_beta(0.04)
                    .init(FlowDppoConfig::new().init().unwrap())
                    .unwrap(),
            ),
        ),
    ];
    let mut group = c.benchmark_group(format!("loss+backward {ROWS}x{DIMS}"));
    group.sample_size(20);
    for (name, objective) in &objectives {
        group.bench_function(*name, |b| {
            b.iter(|| loss_and_backward(objective.as_ref(), &batch))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_objectives);
criterion_main!(benches);
