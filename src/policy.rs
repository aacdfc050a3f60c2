//! The policy a user implements: a velocity model, and classifier-free guidance around it.

use burn::module::{Module, ModuleDisplay};
use burn::prelude::*;

use crate::error::{Error, Result};

/// A batch of conditions: class labels, prompt embeddings, or nothing.
///
/// Rollouts and trainers only need to count, pick and join conditions.
pub trait ConditionBatch: Clone + std::fmt::Debug + Send + Sync {
    /// The number of conditions in the batch.
    fn len(&self) -> usize;

    /// Whether the batch is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The conditions at `indices`, in that order (indices may repeat).
    fn pick(&self, indices: &[usize]) -> Self;

    /// The batches one after another.
    fn concat(batches: &[Self]) -> Self;

    /// Checks that `other`'s conditions can follow these in one batch, so that a join the
    /// caller is about to make fails with an [`Error`] rather than a panic in
    /// [`concat`](ConditionBatch::concat). Accepts everything by default.
    fn check_joinable(&self, other: &Self) -> Result<()> {
        let _ = other;
        Ok(())
    }
}

/// The condition of a model that takes none; only its count matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unconditional(
    /// The number of samples.
    pub usize,
);

impl ConditionBatch for Unconditional {
    fn len(&self) -> usize {
        self.0
    }

    fn pick(&self, indices: &[usize]) -> Self {
        Unconditional(indices.len())
    }

    fn concat(batches: &[Self]) -> Self {
        Unconditional(batches.iter().map(|b| b.0).sum())
    }
}

/// Row-indexed tensors (embeddings `[B, ...]`) are condition batches.
impl<const D: usize> ConditionBatch for Tensor<D> {
    fn len(&self) -> usize {
        self.dims()[0]
    }

    fn pick(&self, indices: &[usize]) -> Self {
        self.clone()
            .select(0, crate::tensor_util::int_index(indices, &self.device()))
    }

    fn concat(batches: &[Self]) -> Self {
        Tensor::cat(batches.to_vec(), 0)
    }

    /// Rows join when their shapes past the batch axis agree (e.g. the token count `L` of
    /// context embeddings `[B, L, D]`).
    fn check_joinable(&self, other: &Self) -> Result<()> {
        let (ours, theirs) = (self.dims(), other.dims());
        if ours[1..] == theirs[1..] {
            return Ok(());
        }
        Err(Error::shape(
            "condition",
            format!(
                "[_, {}] to join a condition batch of shape {ours:?}",
                ours[1..]
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            theirs,
        ))
    }
}

/// Pairs of condition batches (e.g. SD3's context and pooled embeddings) are batches.
impl<A: ConditionBatch, B: ConditionBatch> ConditionBatch for (A, B) {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn pick(&self, indices: &[usize]) -> Self {
        (self.0.pick(indices), self.1.pick(indices))
    }

    fn concat(batches: &[Self]) -> Self {
        let first: Vec<A> = batches.iter().map(|b| b.0.clone()).collect();
        let second: Vec<B> = batches.iter().map(|b| b.1.clone()).collect();
        (A::concat(&first), B::concat(&second))
    }

    fn check_joinable(&self, other: &Self) -> Result<()> {
        self.0.check_joinable(&other.0)?;
        self.1.check_joinable(&other.1)
    }
}

/// A velocity model `v_θ(x_t, σ, c)`, as a burn [`Module`].
///
/// Latents are flattened to `[B, N]`: a model with structured latents (`[B, C, H, W]`)
/// reshapes inside `velocity`. `sigma` is the noise level per sample in `[0, 1]`, 1 being
/// pure noise; SD3-family networks take `1000·σ` as their timestep.
///
/// The crate calls a policy through [`checked_velocity`], which runs
/// [`validate_input`](FlowPolicy::validate_input) first, so `velocity` may assume inputs
/// that passed it.
pub trait FlowPolicy: Module + ModuleDisplay {
    /// A batch of conditions.
    type Condition: ConditionBatch;

    /// The velocity `[B, N]` for latents `[B, N]`, noise levels `[B]` and B conditions.
    fn velocity(
        &self,
        latents: Tensor<2>,
        sigma: Tensor<1>,
        condition: &Self::Condition,
    ) -> Tensor<2>;

    /// Checks latents of shape `[B, N]` and their conditions before a forward pass, so that
    /// input the model cannot take fails with an [`Error`] that says what was expected,
    /// rather than a panic inside the network. Accepts everything by default.
    ///
    /// Implement it for any model with a fixed latent size or condition shape: return
    /// [`Error::ShapeMismatch`] naming the value (e.g. `latent_dims`) when N differs from
    /// the size the model was built for, since `TrainerConfig::latent_dims` comes from the
    /// user and a mismatch would otherwise panic in the first layer.
    fn validate_input(&self, latents: [usize; 2], condition: &Self::Condition) -> Result<()> {
        let _ = (latents, condition);
        Ok(())
    }
}

/// The device of the policy's first parameter.
pub(crate) fn first_device<P: Module>(policy: &P) -> Result<Device> {
    policy.devices().into_iter().next().ok_or_else(|| {
        Error::invalid(
            "policy",
            "a module without parameters",
            "a policy with parameters",
        )
    })
}

/// Checks a policy's output shape against its input, so a wrong model fails with an error
/// instead of a broadcast.
pub fn checked_velocity<P: FlowPolicy>(
    policy: &P,
    latents: Tensor<2>,
    sigma: Tensor<1>,
    condition: &P::Condition,
) -> Result<Tensor<2>> {
    let shape = latents.dims();
    if condition.len() != shape[0] {
        return Err(Error::shape(
            "condition",
            format!("{} conditions, one per latent", shape[0]),
            [condition.len()],
        ));
    }
    policy.validate_input(shape, condition)?;
    let velocity = policy.velocity(latents, sigma, condition);
    if velocity.dims() != shape {
        return Err(Error::shape(
            "policy velocity",
            format!("{shape:?}, the latents' shape"),
            velocity.dims(),
        ));
    }
    Ok(velocity)
}

/// Classifier-free guidance around a policy: `v = v_u + w·(v_c − v_u)`.
///
/// Both branches run in one batched forward of `2B` rows. Train the wrapped policy through
/// this wrapper so that rollout and replay use the same guided velocity.
#[derive(Module, Debug)]
pub struct Guided<P: FlowPolicy> {
    /// The wrapped policy.
    pub policy: P,
    /// The guidance scale w (1 is no guidance).
    #[module(skip)]
    scale: f64,
    /// One unconditional condition, repeated for every row.
    #[module(skip)]
    unconditional: P::Condition,
}

impl<P: FlowPolicy> Guided<P> {
    /// Wraps `policy`; `unconditional` is a batch of exactly one condition (e.g. the empty
    /// prompt's embedding).
    pub fn new(policy: P, scale: f64, unconditional: P::Condition) -> Result<Self> {
        if !scale.is_finite() {
            return Err(Error::invalid("guidance scale", scale, "a finite scale"));
        }
        if unconditional.len() != 1 {
            return Err(Error::shape(
                "unconditional",
                "a batch of exactly 1 condition",
                [unconditional.len()],
            ));
        }
        Ok(Self {
            policy,
            scale,
            unconditional,
        })
    }

    /// The guidance scale w.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

impl<P: FlowPolicy> FlowPolicy for Guided<P> {
    type Condition = P::Condition;

    fn velocity(
        &self,
        latents: Tensor<2>,
        sigma: Tensor<1>,
        condition: &Self::Condition,
    ) -> Tensor<2> {
        let rows = latents.dims()[0];
        let unconditional = self.unconditional.pick(&vec![0; rows]);
        let both = P::Condition::concat(&[condition.clone(), unconditional]);
        let velocity = self.policy.velocity(
            Tensor::cat(vec![latents.clone(), latents], 0),
            Tensor::cat(vec![sigma.clone(), sigma], 0),
            &both,
        );
        let mut halves = velocity.chunk(2, 0).into_iter();
        let (conditional, unconditional) = (halves.next().unwrap(), halves.next().unwrap());
        unconditional.clone() + (conditional - unconditional).mul_scalar(self.scale)
    }

    fn validate_input(&self, latents: [usize; 2], condition: &Self::Condition) -> Result<()> {
        self.policy.validate_input(latents, condition)?;
        self.policy
            .validate_input([1, latents[1]], &self.unconditional)?;
        // Both branches run as one batch.
        condition.check_joinable(&self.unconditional)
    }
}
