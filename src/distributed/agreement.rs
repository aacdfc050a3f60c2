//! Collectives built on [`Communicator`]'s primitives: gathering every worker's values, and
//! agreeing on whether a phase of a step succeeded everywhere.

use super::Communicator;
use crate::error::{Error, Result, WorkerFailure};

/// Every worker's `local` values, in rank order (`world_size × local.len()` values). All
/// workers must pass the same number of values.
///
/// Built on the all-reduce: each worker fills its own slot of a zeroed buffer, and adding
/// zeros is exact, so every value arrives bit for bit.
pub fn gather_f32(communicator: &dyn Communicator, local: &[f32]) -> Result<Vec<f32>> {
    let (rank, world) = (communicator.rank(), communicator.world_size());
    if world == 1 {
        return Ok(local.to_vec());
    }
    let mut all = vec![0.0; world * local.len()];
    all[rank * local.len()..(rank + 1) * local.len()].copy_from_slice(local);
    communicator.all_reduce_sum(&mut all)?;
    Ok(all)
}

/// Every worker's `local` bytes, in rank order; lengths may differ between workers. One
/// broadcast per worker: meant for small messages (metrics, error text).
pub fn all_gather_bytes(communicator: &dyn Communicator, local: &[u8]) -> Result<Vec<Vec<u8>>> {
    let rank = communicator.rank();
    (0..communicator.world_size())
        .map(|root| {
            let mut bytes = if root == rank {
                local.to_vec()
            } else {
                Vec::new()
            };
            communicator.broadcast(&mut bytes, root)?;
            Ok(bytes)
        })
        .collect()
}

/// `local` if `phase` succeeded on every worker. Otherwise every worker fails: a worker
/// whose own phase failed returns its own error, the others [`Error::WorkerFailed`] naming
/// each failed worker and its message. Every worker must call it at the same point.
pub fn agree<T>(communicator: &dyn Communicator, phase: &str, local: Result<T>) -> Result<T> {
    if communicator.world_size() == 1 {
        return local;
    }
    let failed = gather_f32(communicator, &[f32::from(u8::from(local.is_err()))])?;
    if failed.iter().all(|&flag| flag == 0.0) {
        return local;
    }
    let message = match &local {
        Ok(_) => String::new(),
        Err(err) => err.to_string(),
    };
    let messages = all_gather_bytes(communicator, message.as_bytes())?;
    // A worker whose own phase failed returns its own error.
    local?;
    Err(Error::WorkerFailed {
        phase: phase.to_owned(),
        failures: failed
            .iter()
            .zip(messages)
            .enumerate()
            .filter(|(_, (flag, _))| **flag != 0.0)
            .map(|(rank, (_, message))| WorkerFailure {
                rank,
                message: String::from_utf8_lossy(&message).into_owned(),
            })
            .collect(),
    })
}
