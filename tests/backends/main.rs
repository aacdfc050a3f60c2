//! Backend conformance: the crate's numerics on every compiled backend, compared with `flex`:
//! kernels, objectives, advantages, trainer steps and the SD3-family MMDiT.
//!
//! Each check builds its inputs on the host from a seeded [`flow_rl::Rng`], moves them to the
//! device under test and to the reference device (`Device::flex()`), runs the same public API
//! on both, and compares every result within a tolerance stated beside it, with its reason
//! (see `harness`). Where an independent f64 host computation exists, the device result is
//! checked against it too, so a build with only `flex` still tests something: flex against
//! the host references, and flex against itself (the crate promises identical results for
//! identical seeds).
//!
//! The same checks run once per compiled backend, as modules named after it (`flex::…`,
//! `tch::…`, `tch_cuda::…`, `wgpu::…`, `vulkan::…`, `cuda::…`):
//!
//! ```sh
//! cargo test --test backends                    # flex only
//! cargo test --features wgpu --test backends    # + wgpu (Mesa's lavapipe on a CPU)
//! eval "$(scripts/libtorch_env.sh)"
//! cargo test --features tch --test backends     # + LibTorch on the CPU
//! ```
//!
//! A compiled backend whose device does not open fails every one of its checks with a message
//! saying what to install; it is never skipped.

#[path = "../common/mod.rs"]
mod common;

mod advantages;
mod harness;
mod kernels;
mod mmdit;
mod objectives;
mod trainer;

/// One module of checks per compiled backend, each check a `#[test]`.
macro_rules! conformance_suite {
    ($($module:ident => $backend:ident if $feature:literal),* $(,)?) => {$(
        #[cfg(feature = $feature)]
        mod $module {
            use flow_rl::backend::Backend;

            use super::{advantages, harness, kernels, mmdit, objectives, trainer};

            fn device() -> burn::prelude::Device {
                harness::device_under_test(Backend::$backend)
            }

            #[test]
            fn flow_sde_kernel() {
                kernels::check(kernels::KernelCase::FlowSde, &device());
            }

            #[test]
            fn dance_sde_kernel() {
                kernels::check(kernels::KernelCase::DanceSde, &device());
            }

            #[test]
            fn cps_kernel() {
                kernels::check(kernels::KernelCase::Cps, &device());
            }

            #[test]
            fn ode_kernel() {
                kernels::check(kernels::KernelCase::Ode, &device());
            }

            #[test]
            fn objectives_losses_metrics_and_gradients() {
                objectives::check(&device());
            }

            #[test]
            fn advantages_from_device_rewards() {
                advantages::check(&device());
            }

            #[test]
            fn five_trainer_steps_of_the_mlp_toy() {
                trainer::check(&device());
            }

            #[test]
            fn mmdit_forward_lora_and_gradient() {
                mmdit::check(&device());
            }
        }
    )*};
}

conformance_suite! {
    flex => Flex if "flex",
    tch => Tch if "tch",
    tch_cuda => TchCuda if "tch-cuda",
    wgpu => Wgpu if "wgpu",
    vulkan => Vulkan if "vulkan",
    cuda => Cuda if "cuda",
}
