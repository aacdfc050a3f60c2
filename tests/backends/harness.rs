//! The devices of the conformance suite and its comparisons.
//!
//! Every bound has the form `|got − want| ≤ abs + rel·|want|`. The constants below are the
//! suite's whole tolerance policy; docs/backends.md lists them with the differences measured
//! on lavapipe.

use std::collections::HashMap;
use std::sync::Mutex;

use burn::prelude::*;
use flow_rl::backend::Backend;

/// The device the suite runs on for `backend`, opened once per process.
///
/// Panics (failing the test, never skipping it) if the backend is compiled in but its device
/// does not open, with the backend's hint at what to install.
pub fn device_under_test(backend: Backend) -> Device {
    static OPENED: Mutex<Option<HashMap<Backend, Result<Device, String>>>> = Mutex::new(None);
    let mut opened = OPENED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let opened = opened.get_or_insert_with(HashMap::new);
    let result = opened.entry(backend).or_insert_with(|| {
        backend.open().map_err(|err| {
            format!(
                "the `{backend}` backend is compiled in, so the conformance suite must run on \
                 it, but its device does not open: {err}"
            )
        })
    });
    match result {
        Ok(device) => device.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// The reference device every backend is compared with.
pub fn reference_device() -> Device {
    Device::flex()
}

/// A bound `|got − want| ≤ abs + rel·|want|`.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// The absolute part, for values near zero.
    pub abs: f64,
    /// The relative part.
    pub rel: f64,
}

/// Elementwise f32 arithmetic (`a·x + b·v`, `μ + s·ε`, an affine map of samples): a backend
/// may contract a multiply and an add into one fused operation, or round the two products
/// in another order, so results may differ by a few ulp of the operands (f32 ulp ≈
/// 1.2e-7·|x|; the operands here are O(1)). lavapipe matches flex exactly; the bound leaves
/// room for FMA contraction on GPUs.
pub const ELEMENTWISE: Tolerance = Tolerance {
    abs: 2e-6,
    rel: 2e-6,
};

/// Per-row means over N latent dims, divided by `2s²`, minus `ln s` (log-probs, KLs,
/// log-ratios, loss values and metrics): a GPU reduction sums in another order than flex
/// (rounding error up to about `log2(N)·ε` relative, ε = 6e-8), and GPU `exp`/`log` are
/// accurate to a few ulp rather than correctly rounded (Vulkan allows 3 ulp for `log`
/// outside [0.5, 2] and 2⁻²¹ absolute inside).
pub const REDUCED: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-5,
};

/// Gradients with respect to the new mean: the reduced quantities above, scaled by
/// `1/(R·N·s²)` and by advantages, then back-propagated through `exp`; a few ulp of the
/// largest gradient entry, which `scaled_abs` turns into an absolute bound.
pub const GRADIENT: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-4,
};

/// Five trainer steps: every difference above, plus the MLP's f32 matmuls (another
/// summation order), enters the rollout of the next step and is carried through ten
/// denoising steps and two AdamW updates per step. AdamW divides by `√v`, so a parameter
/// whose gradient is near zero moves by up to the learning rate (3e-3) whatever the
/// gradient's size; rounding differences in such a gradient would show as update
/// differences far above rounding. The bound is about 1e-3 of the parameters' movement over
/// five steps (O(1e-2)) and 100 times what lavapipe shows. A backend that computes f32
/// matmuls in TF32 (10-bit mantissa) would exceed it, rightly: that is not f32.
pub const TRAINER: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-4,
};

/// A transformer's output or input gradient (the MMDiT fixture): f32 matmuls of width up to
/// 128 and softmaxes over up to 13 tokens reduce in another order, through two or three
/// blocks of LayerNorm, RMSNorm and attention, each adding the error of [`REDUCED`]. On flex
/// the forward matches diffusers to 4e-6 of its largest value; the bound is 25 times that,
/// relative to the largest entry.
pub const NETWORK: Tolerance = Tolerance {
    abs: 1e-4,
    rel: 1e-4,
};

/// Against an f64 host computation from the same f32 inputs: f32 rounding of every
/// intermediate (and the same `exp`/`log` caveat as [`REDUCED`]).
pub const HOST: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-5,
};

impl Tolerance {
    /// This bound with its absolute part scaled by the largest `|want|`, for vectors (such as
    /// gradients) whose entries span orders of magnitude.
    pub fn scaled_abs(self, want: &[f64]) -> Tolerance {
        let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        Tolerance {
            abs: self.abs * scale.max(f64::MIN_POSITIVE),
            rel: self.rel,
        }
    }
}

/// Asserts `got` matches `want` elementwise within `tolerance`, naming the check, the
/// quantity, the worst entry and the tolerance. Prints the largest |difference| and how much
/// of the bound it used (shown with `--nocapture`; docs/backends.md quotes these).
pub fn assert_matches(check: &str, what: &str, got: &[f64], want: &[f64], tolerance: Tolerance) {
    assert_eq!(
        got.len(),
        want.len(),
        "{check}: {what} has {} values, the reference {}",
        got.len(),
        want.len()
    );
    let (mut largest, mut used) = (0.0f64, 0.0f64);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let difference = (g - w).abs();
        let allowed = tolerance.abs + tolerance.rel * w.abs();
        // False for a NaN on either side, which then fails the check.
        let within = difference <= allowed;
        assert!(
            within,
            "{check}: {what}[{i}] = {g} but the reference gives {w} (|difference| \
             {difference:.3e} > {:.1e} + {:.1e}·|reference|)",
            tolerance.abs, tolerance.rel
        );
        largest = largest.max(difference);
        used = used.max(difference / allowed);
    }
    println!(
        "{check}: {what}: max |difference| {largest:.2e}, {:.1}% of the bound",
        100.0 * used
    );
}

/// A float tensor's values as f64.
pub fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f64> {
    super::common::values(tensor)
}

/// Host values as an f32 `[rows, cols]` tensor on `device`.
pub fn matrix(values: &[f32], [rows, cols]: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), [rows, cols]), device)
}

/// `count` standard normal draws, rounded to f32.
pub fn normals(rng: &mut flow_rl::Rng, count: usize) -> Vec<f32> {
    (0..count).map(|_| rng.normal() as f32).collect()
}
