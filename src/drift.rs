//! How far a fine-tuned policy has drifted from a reference: the exact per-step KL summed
//! along the sampling trajectory.

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::kernel::{StepKernel, gaussian_kl};
use crate::policy::{ConditionBatch, FlowPolicy, checked_velocity, first_device};
use crate::rng::Rng;
use crate::schedule::SigmaSchedule;
use crate::tensor_util::host_values;

/// `mean_samples( Σ_steps KL(π_θ(·|x_t) ‖ π_ref(·|x_t)) )` along trajectories sampled from
/// `policy` with `kernel` at every step where it is stochastic.
///
/// Each step's KL is the exact Gaussian one, mean-reduced over the N latent dims, so the
/// result is in the same units as the objectives' KL. `conditions` holds one condition per
/// sample. Both policies run under no-grad.
pub fn trajectory_kl<P: FlowPolicy>(
    policy: &P,
    reference: &P,
    conditions: &P::Condition,
    schedule: &SigmaSchedule,
    kernel: &dyn StepKernel,
    latent_dims: usize,
    rng: &mut Rng,
) -> Result<f64> {
    let samples = conditions.len();
    if samples == 0 || latent_dims == 0 {
        return Err(Error::invalid(
            "samples × latent_dims",
            format!("{samples} × {latent_dims}"),
            "both at least 1",
        ));
    }
    let (policy, reference) = (policy.valid(), reference.valid());
    let device = first_device(&policy)?.without_autodiff();
    let mut x = rng.normal_tensor([samples, latent_dims], &device);
    let mut total = Tensor::<1>::zeros([samples], &device);
    for step in 0..schedule.steps() {
        let (sigma, sigma_next) = schedule.step(step)?;
        let sigmas = (vec![sigma; samples], vec![sigma_next; samples]);
        let sigma_row = Tensor::<1>::full([samples], sigma, &device);
        let velocity = checked_velocity(&policy, x.clone(), sigma_row.clone(), conditions)?;
        let reference_velocity = checked_velocity(&reference, x.clone(), sigma_row, conditions)?;
        let ours = kernel.transition(x.clone(), velocity, &sigmas.0, &sigmas.1)?;
        if ours.coefficients[0].std <= 0.0 {
            x = ours.mean;
            continue;
        }
        let theirs = kernel.transition(x, reference_velocity, &sigmas.0, &sigmas.1)?;
        total = total + gaussian_kl(ours.mean.clone(), theirs.mean, ours.std.clone())?;
        let noise = rng.normal_tensor([samples, latent_dims], &device);
        x = ours.sample(noise)?;
    }
    Ok(host_values(total.mean())?[0] as f64)
}
