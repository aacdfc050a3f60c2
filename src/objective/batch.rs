use burn::prelude::*;

use crate::error::{Error, Result};
use crate::tensor_util::{expect_matrix, expect_vector};

/// The inputs of a trust-region objective: R rows, each one (sample, denoising step) pair,
/// with latents flattened to N dimensions.
///
/// Only `new_mean` should carry a gradient; `old_mean`, `sample` and `ref_mean` are
/// detached by the objectives whatever the caller passes.
#[derive(Debug, Clone)]
pub struct RowBatch {
    /// `μ_new`, the current policy's transition mean, `[R, N]`, differentiable.
    pub new_mean: Tensor<2>,
    /// `μ_old`, the rollout policy's transition mean (the anchor), `[R, N]`.
    pub old_mean: Tensor<2>,
    /// `x'`, the latent the rollout actually drew, `[R, N]`.
    pub sample: Tensor<2>,
    /// `s`, the transition std of each row's step, `[R]`, all > 0 with `s²` a normal f32
    /// (about 1.1e-19 < s < 1.8e19).
    pub std: Tensor<1>,
    /// `dt = σ' − σ` of each row's step, `[R]` (negative; GRPO-Guard weights by `1/|dt|`).
    pub dt: Tensor<1>,
    /// `A`, the advantage of each row's sample, `[R]`.
    pub advantages: Tensor<1>,
    /// `μ_ref`, the frozen reference policy's mean, `[R, N]`; needed by
    /// [`ReferenceKl`](super::ReferenceKl) when β > 0.
    pub ref_mean: Option<Tensor<2>>,
    /// `b`, the kernel's velocity coefficient of each row, `[R]`
    /// ([`StepCoefficients::velocity_scale`](crate::kernel::StepCoefficients)); needed by
    /// [`FlowDppo`](super::FlowDppo) with a velocity-space divergence, which it computes as
    /// `mean_N(d²)/b² = mean_N((v_new − v_old)²)`.
    pub velocity_scale: Option<Tensor<1>>,
}

impl RowBatch {
    /// A batch without a reference mean or velocity scale.
    pub fn new(
        new_mean: Tensor<2>,
        old_mean: Tensor<2>,
        sample: Tensor<2>,
        std: Tensor<1>,
        dt: Tensor<1>,
        advantages: Tensor<1>,
    ) -> Self {
        Self {
            new_mean,
            old_mean,
            sample,
            std,
            dt,
            advantages,
            ref_mean: None,
            velocity_scale: None,
        }
    }

    /// Adds the reference policy's mean `[R, N]`.
    pub fn with_ref_mean(mut self, ref_mean: Tensor<2>) -> Self {
        self.ref_mean = Some(ref_mean);
        self
    }

    /// Adds the kernel's per-row velocity coefficient `[R]`.
    pub fn with_velocity_scale(mut self, velocity_scale: Tensor<1>) -> Self {
        self.velocity_scale = Some(velocity_scale);
        self
    }

    /// The number of rows R.
    pub fn rows(&self) -> usize {
        self.new_mean.dims()[0]
    }

    /// Checks that every tensor agrees with `new_mean`'s `[R, N]` and that the batch is not
    /// empty; returns `(R, N)`.
    pub fn validate(&self) -> Result<(usize, usize)> {
        let [rows, dims] = self.new_mean.dims();
        if rows == 0 || dims == 0 {
            return Err(Error::shape(
                "new_mean",
                "[R, N] with R ≥ 1 rows and N ≥ 1 latent dims",
                [rows, dims],
            ));
        }
        expect_matrix("old_mean", &self.old_mean, rows, dims)?;
        expect_matrix("sample", &self.sample, rows, dims)?;
        expect_vector("std", &self.std, rows)?;
        expect_vector("dt", &self.dt, rows)?;
        expect_vector("advantages", &self.advantages, rows)?;
        if let Some(ref_mean) = &self.ref_mean {
            expect_matrix("ref_mean", ref_mean, rows, dims)?;
        }
        if let Some(velocity_scale) = &self.velocity_scale {
            expect_vector("velocity_scale", velocity_scale, rows)?;
        }
        Ok((rows, dims))
    }
}
