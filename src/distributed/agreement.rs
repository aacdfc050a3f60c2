//! Collectives built on [`Communicator`]'s primitives: gathering every worker's values,
//! broadcasting bytes through the all-reduce alone, and agreeing on whether a phase of a
//! step succeeded everywhere.

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

/// Root's `bytes` on every worker, sent through the all-reduce alone: for a communicator
/// whose only native collective is a sum of f32 buffers (burn's collective `all_reduce`).
/// Receivers' `bytes` are replaced; the root's are left as they are.
///
/// The root's values added to the others' zeros arrive exactly, so the length travels as
/// four 16-bit pieces and the bytes as 16-bit words, each of which an f32 holds exactly.
///
/// # Errors
/// [`Error::InvalidArgument`] when `root` is not below the world size (on every worker, so
/// none waits on the others), and whatever the all-reduce returns.
///
/// ```
/// use flow_rl::distributed::{SingleProcess, broadcast_through_all_reduce};
///
/// let mut bytes = b"rank 0's configuration".to_vec();
/// broadcast_through_all_reduce(&SingleProcess, &mut bytes, 0)?;
/// assert_eq!(bytes, b"rank 0's configuration");
/// assert!(broadcast_through_all_reduce(&SingleProcess, &mut bytes, 1).is_err());
/// # Ok::<(), flow_rl::Error>(())
/// ```
pub fn broadcast_through_all_reduce(
    communicator: &dyn Communicator,
    bytes: &mut Vec<u8>,
    root: usize,
) -> Result<()> {
    let world = communicator.world_size();
    if root >= world {
        return Err(Error::invalid(
            "broadcast root",
            root,
            format!("a rank below the world size {world}"),
        ));
    }
    let is_root = communicator.rank() == root;

    let length = if is_root { bytes.len() as u64 } else { 0 };
    let mut length_pieces: Vec<f32> = (0..LENGTH_PIECES)
        .map(|piece| f32::from((length >> (16 * piece)) as u16))
        .collect();
    communicator.all_reduce_sum(&mut length_pieces)?;
    let length = length_pieces
        .iter()
        .enumerate()
        .fold(0u64, |length, (piece, &value)| {
            length | (u64::from(value as u16) << (16 * piece))
        }) as usize;

    let mut words: Vec<f32> = if is_root {
        bytes
            .chunks(2)
            .map(|pair| {
                f32::from(u16::from_le_bytes([
                    pair[0],
                    pair.get(1).copied().unwrap_or(0),
                ]))
            })
            .collect()
    } else {
        vec![0.0; length.div_ceil(2)]
    };
    communicator.all_reduce_sum(&mut words)?;
    if !is_root {
        *bytes = words
            .iter()
            .flat_map(|&word| (word as u16).to_le_bytes())
            .take(length)
            .collect();
    }
    Ok(())
}

/// 16-bit pieces of a broadcast's 64-bit length.
const LENGTH_PIECES: u32 = 4;

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
