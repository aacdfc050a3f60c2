//! The condition batch of an [`Mmdit`](super::Mmdit) policy: text embeddings, and the
//! prompts they encode for rewards that read them.

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::policy::ConditionBatch;

/// Per-sample context tokens `[B, L, context_dim]`, pooled embeddings `[B, pooled_dim]`
/// and, optionally, the B prompts they encode.
///
/// The prompts travel with the rows through the rollout's picks and joins, so that a
/// reward scoring images with their prompts (an
/// [`ImageReward`](crate::reward::ImageReward)) sees the prompt of every sample.
/// [`PromptEmbeddings::condition`](super::PromptEmbeddings::condition) fills them in.
///
/// ```
/// use burn::prelude::*;
/// use flow_rl::models::mmdit::MmditCondition;
/// use flow_rl::policy::ConditionBatch;
///
/// let device = Device::default();
/// let condition = MmditCondition::new(Tensor::zeros([2, 5, 64], &device), Tensor::zeros([2, 32], &device))
///     .with_prompts(vec!["a red circle".into(), "two blue squares".into()])?;
/// let picked = condition.pick(&[1, 1, 0]);
/// assert_eq!(picked.prompts().unwrap()[0], "two blue squares");
/// # Ok::<(), flow_rl::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MmditCondition {
    /// Context tokens `[B, L, context_dim]`.
    pub context: Tensor<3>,
    /// Pooled embeddings `[B, pooled_dim]`.
    pub pooled: Tensor<2>,
    prompts: Option<Vec<String>>,
}

impl MmditCondition {
    /// A condition without prompts (random or precomputed embeddings only).
    pub fn new(context: Tensor<3>, pooled: Tensor<2>) -> Self {
        Self {
            context,
            pooled,
            prompts: None,
        }
    }

    /// Attaches the prompts, one per row.
    pub fn with_prompts(mut self, prompts: Vec<String>) -> Result<Self> {
        let rows = self.context.dims()[0];
        if prompts.len() != rows {
            return Err(Error::shape(
                "prompts",
                format!("{rows} prompts, one per condition row"),
                [prompts.len()],
            ));
        }
        self.prompts = Some(prompts);
        Ok(self)
    }

    /// The prompts, one per row, where they were attached.
    pub fn prompts(&self) -> Option<&[String]> {
        self.prompts.as_deref()
    }
}

impl From<(Tensor<3>, Tensor<2>)> for MmditCondition {
    fn from((context, pooled): (Tensor<3>, Tensor<2>)) -> Self {
        Self::new(context, pooled)
    }
}

impl ConditionBatch for MmditCondition {
    fn len(&self) -> usize {
        self.context.dims()[0]
    }

    fn pick(&self, indices: &[usize]) -> Self {
        Self {
            context: self.context.pick(indices),
            pooled: self.pooled.pick(indices),
            prompts: self
                .prompts
                .as_ref()
                .map(|prompts| indices.iter().map(|&i| prompts[i].clone()).collect()),
        }
    }

    fn concat(batches: &[Self]) -> Self {
        let contexts: Vec<Tensor<3>> = batches.iter().map(|b| b.context.clone()).collect();
        let pooled: Vec<Tensor<2>> = batches.iter().map(|b| b.pooled.clone()).collect();
        let prompts: Option<Vec<Vec<String>>> = batches.iter().map(|b| b.prompts.clone()).collect();
        Self {
            context: Tensor::<3>::concat(&contexts),
            pooled: Tensor::<2>::concat(&pooled),
            prompts: prompts.map(|lists| lists.concat()),
        }
    }

    /// Rows join when their token counts and widths agree and either all or none carry
    /// prompts.
    fn check_joinable(&self, other: &Self) -> Result<()> {
        self.context.check_joinable(&other.context)?;
        self.pooled.check_joinable(&other.pooled)?;
        if self.prompts.is_some() != other.prompts.is_some() {
            return Err(Error::invalid(
                "condition prompts",
                if other.prompts.is_some() {
                    "present"
                } else {
                    "absent"
                },
                "prompts on every joined condition batch or on none",
            ));
        }
        Ok(())
    }
}
