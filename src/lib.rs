//! # flow-rl
//!
//! Online reinforcement-learning fine-tuning of flow-matching image models (SD3/SD3.5,
//! FLUX-style MMDiTs, or any velocity model) with interchangeable trust-region objectives,
//! built on [burn](https://burn.dev) 0.22.
//!
//! Each denoising step of a flow model, run as an SDE, is a Gaussian policy with a known std.
//! The crate provides:
//!
//! - [`schedule`]: the SD3 shifted σ schedule and the choice of stochastic (trained) steps;
//! - [`kernel`]: the step kernels (Flow-SDE, Dance-SDE, CPS, ODE) as Gaussian transitions,
//!   with the exact log-probability and KL;
//! - [`objective`]: ratio clipping (Flow-GRPO), GRPO-Guard and Flow-DPPO behind one
//!   object-safe [`TrustRegionObjective`](objective::TrustRegionObjective) trait, plus a
//!   reference-KL penalty that composes with any of them;
//! - [`advantage`]: group-relative advantages, multi-reward combination (weighted or GDPO)
//!   and a per-prompt statistics tracker;
//! - [`policy`]: the [`FlowPolicy`](policy::FlowPolicy) trait you implement for your model,
//!   and classifier-free guidance as a wrapper;
//! - [`rollout`], [`buffer`], [`reward`] and [`trainer`]: the online RL loop, with atomic
//!   checkpoints and JSON-lines [`metrics`]; [`memory`]: a run's peak memory;
//! - [`models`]: a small MLP policy and flow-matching pre-training, and
//!   [`models::mmdit`], the SD3/SD3.5 transformer: official and diffusers weights, LoRA,
//!   prompt-embedding files (see `docs/sd35.md`); [`drift`]: the exact trajectory KL between
//!   two policies.
//!
//! All reductions over latent dimensions are **means**, never sums: the reference thresholds
//! (τ = 1e-5, ε = 1e-4) are calibrated in those units.
//!
//! ## One step of a hand-written loop
//!
//! ```
//! use burn::prelude::*;
//! use burn::tensor::Distribution;
//! use flow_rl::prelude::*;
//!
//! let device = Device::default().autodiff();
//! let schedule = SigmaScheduleConfig::new().init()?; // T = 10, shift 3
//! let kernel = FlowSdeConfig::new().init()?; // η = 0.7
//! let (sigma, sigma_next) = schedule.step(1)?;
//! let (rows, dims) = (8, 16);
//!
//! // Rollout: the old policy's velocity gives the anchor Gaussian; draw x' from it.
//! let x = Tensor::<2>::random([rows, dims], Distribution::Normal(0.0, 1.0), &device);
//! let old_velocity = Tensor::<2>::random([rows, dims], Distribution::Normal(0.0, 1.0), &device);
//! let sigmas = (vec![sigma; rows], vec![sigma_next; rows]);
//! let old = kernel.transition(x.clone(), old_velocity.clone(), &sigmas.0, &sigmas.1)?;
//! let noise = Tensor::<2>::random([rows, dims], Distribution::Normal(0.0, 1.0), &device);
//! let sample = old.sample(noise)?.detach();
//!
//! // Rewards → group-relative advantages (2 groups of 4 siblings).
//! let rewards = [0.1, 0.5, 0.2, 0.9, 0.3, 0.3, 0.8, 0.1];
//! let advantages = AdvantageConfig::new().compute(&rewards, 4)?;
//!
//! // Update: the new policy's velocity (here a perturbed stand-in) gives the new mean.
//! let new_velocity = (old_velocity + 0.01).require_grad();
//! let new = kernel.transition(x, new_velocity.clone(), &sigmas.0, &sigmas.1)?;
//! let batch = RowBatch::new(
//!     new.mean,
//!     old.mean.detach(),
//!     sample,
//!     old.std,
//!     Tensor::full([rows], sigma_next - sigma, &device),
//!     Tensor::from_floats(advantages.values.as_slice(), &device),
//! );
//! let objective = ObjectiveConfig::from_name("flow-dppo")?.init()?; // or "ratio-clip", "grpo-guard"
//! let output = objective.loss(&batch)?;
//! let grads = output.loss.backward();
//! assert!(new_velocity.grad(&grads).is_some());
//! assert!(output.metrics.kl_mean > 0.0);
//! # Ok::<(), flow_rl::Error>(())
//! ```
//!
//! ## Backends
//!
//! The crate is written against burn's runtime [`Device`](burn::prelude::Device): `flex`
//! (CPU, the default feature), `wgpu`/`vulkan` and `cuda` are cargo features that enable the
//! corresponding burn backend. [`backend::Backend`] picks one at run time (a `--backend`
//! flag, or burn's `BURN_DEVICE` variable) with errors instead of panics. See the README for
//! what builds where and what CI tests.

#![warn(missing_docs)]

pub mod advantage;
pub mod backend;
pub mod buffer;
pub mod distributed;
pub mod drift;
pub mod error;
pub mod io;
pub mod kernel;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod objective;
pub mod policy;
pub mod reward;
mod rng;
pub mod rollout;
pub mod schedule;
mod tensor_util;
pub mod trainer;

pub use error::{Error, Result, ServerFailure, WeightProblem, WorkerFailure};
pub use rng::Rng;

/// The types most programs need, for a glob import.
pub mod prelude {
    pub use crate::Rng;
    pub use crate::advantage::{
        AdvantageConfig, Advantages, PromptStatTracker, PromptStatTrackerConfig, RewardCombination,
        StdScope,
    };
    pub use crate::backend::Backend;
    pub use crate::error::{Error, Result};
    pub use crate::kernel::{
        Cps, CpsConfig, DanceSde, DanceSdeConfig, FlowSde, FlowSdeConfig, KernelConfig, Ode,
        StepCoefficients, StepKernel, Transition, gaussian_kl, gaussian_log_prob,
    };
    pub use crate::objective::{
        DppoDivergence, DppoMask, FlowDppo, FlowDppoConfig, GrpoGuard, GrpoGuardConfig,
        ObjectiveConfig, ObjectiveMetrics, ObjectiveOutput, RatioClip, RatioClipConfig,
        ReferenceKl, ReferenceKlConfig, RowBatch, RowDiagnostics, RowStatus, TrustRegionObjective,
    };
    pub use crate::policy::{ConditionBatch, FlowPolicy, Guided, Unconditional, checked_velocity};
    pub use crate::reward::{HostReward, Reward, RewardSet};
    pub use crate::rollout::{RolloutConfig, RolloutPlan};
    pub use crate::schedule::{SdeStepSelection, SigmaSchedule, SigmaScheduleConfig};
    pub use crate::trainer::{Trainer, TrainerConfig};
}

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The SD3.5 guide's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/sd35.md")]
pub struct Sd35GuideDoctests;

/// The text-encoder guide's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/text_encoders.md")]
pub struct TextEncodersGuideDoctests;

/// The CLIP guide's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/clip.md")]
pub struct ClipGuideDoctests;

/// The rewards guide's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/rewards.md")]
pub struct RewardsGuideDoctests;
