//! Data-parallel training over several workers (processes or devices).
//!
//! The trainer talks to the other workers through one small trait, [`Communicator`]: rank,
//! world size, an all-reduce of f32 buffers, a broadcast and a barrier. Implementations:
//!
//! - [`SingleProcess`]: one worker; every operation is the identity. The trainer's default.
//! - `MpiCommunicator` (feature `mpi`): MPI through the `mpi` crate (rsmpi), on any backend
//!   and across machines with `mpirun`. Buffers travel through host memory.
//! - `DeviceCommunicator` (feature `cuda`): several CUDA devices of one process, one thread
//!   each, through burn's collective `all_reduce`. Type-checked only: see docs/distributed.md.
//!
//! How a [`Trainer`](crate::trainer::Trainer) uses it (docs/distributed.md has the why):
//!
//! - every worker is given the whole rollout's conditions and keeps its share of whole
//!   groups ([`RolloutShard`]); `groups_per_rollout` must divide by the world size;
//! - noise is keyed by each sample's global index, and every other draw (stochastic steps,
//!   mini-batch order) comes from a stream all workers share, so a seed gives the same samples
//!   on any number of workers;
//! - rewards are gathered, so advantages, whatever their scope, equal the one-worker values;
//! - each mini-batch is split by row owner, each worker's loss is weighted by its share of the
//!   global mini-batch, and the trainable parameters' gradients are summed once per
//!   optimiser step: the reduced gradient is the one-worker gradient, and gradient clipping
//!   and the non-finite skip see the same values everywhere;
//! - a failure on one worker (a reward error, a non-finite value) reaches every worker at the
//!   next collective, and the step fails everywhere, changing nothing.
//!
//! ```
//! use flow_rl::distributed::{Communicator, SingleProcess};
//!
//! let single = SingleProcess;
//! let mut values = [1.0_f32, 2.0];
//! single.all_reduce_sum(&mut values)?;
//! assert_eq!((single.rank(), single.world_size(), values), (0, 1, [1.0, 2.0]));
//! # Ok::<(), flow_rl::Error>(())
//! ```

mod agreement;
#[cfg(feature = "cuda")]
mod devices;
#[cfg(feature = "mpi")]
mod mpi;
mod parameters;
mod shard;

pub use agreement::{agree, all_gather_bytes, broadcast_through_all_reduce, gather_f32};
#[cfg(feature = "cuda")]
pub use devices::DeviceCommunicator;
#[cfg(feature = "mpi")]
pub use mpi::MpiCommunicator;
pub(crate) use parameters::{broadcast_trainable, reduce_trainable_grads, trainable_param_ids};
pub use shard::RolloutShard;

use crate::error::Result;

/// The collective operations data-parallel training needs. Every worker must call the same
/// operations in the same order, with buffers of the same length (except `broadcast`, whose
/// receivers' buffers are resized).
pub trait Communicator {
    /// This worker's index, in `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of workers.
    fn world_size(&self) -> usize;

    /// Replaces `values` by their element-wise sum over all workers. Every worker ends with
    /// bit-identical values, so decisions taken on them (gradient clipping, skipping a
    /// non-finite update) are the same everywhere.
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()>;

    /// Replaces `bytes` on every worker by worker `root`'s `bytes`.
    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()>;

    /// Returns once every worker has called it.
    fn barrier(&self) -> Result<()>;
}

/// One worker: the identity for every operation.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn broadcast(&self, _bytes: &mut Vec<u8>, _root: usize) -> Result<()> {
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
