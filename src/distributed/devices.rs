//! [`Communicator`] between several devices of one process, one thread per device, through
//! burn's collective `all_reduce` (feature `cuda`; on CUDA it runs over NCCL).
//!
//! Unverified: burn 0.22's CUDA backend cannot be linked offline, so this is type-checked in
//! CI but has never run (docs/distributed.md).

use burn::prelude::*;
use burn::tensor::distributed::{
    DistributedConfig, DistributedContext, ReduceOperation, all_reduce,
};

use super::{Communicator, broadcast_through_all_reduce};
use crate::error::Result;
use crate::tensor_util::host_values;

/// Worker `rank` of several devices in one process; each worker thread owns one.
///
/// ```no_run
/// use burn::prelude::*;
/// use flow_rl::distributed::{Communicator, DeviceCommunicator};
///
/// let devices = vec![Device::cuda(0), Device::cuda(1)];
/// let (_context, workers) = DeviceCommunicator::for_devices(devices);
/// std::thread::scope(|scope| {
///     for worker in workers {
///         scope.spawn(move || {
///             let mut ones = vec![1.0_f32; 4];
///             worker.all_reduce_sum(&mut ones).unwrap();
///             assert_eq!(ones[0], 2.0);
///         });
///     }
/// });
/// ```
#[derive(Debug, Clone)]
pub struct DeviceCommunicator {
    rank: usize,
    devices: Vec<Device>,
}

impl DeviceCommunicator {
    /// Starts burn's communication server for `devices` and returns one worker per device,
    /// in order. Keep the context alive while the workers run: dropping it stops the server.
    pub fn for_devices(devices: Vec<Device>) -> (DistributedContext, Vec<DeviceCommunicator>) {
        let context = DistributedContext::init(
            devices.clone(),
            DistributedConfig {
                all_reduce_op: ReduceOperation::Sum,
            },
        );
        let workers = (0..devices.len())
            .map(|rank| DeviceCommunicator {
                rank,
                devices: devices.clone(),
            })
            .collect();
        (context, workers)
    }

    /// This worker's device.
    pub fn device(&self) -> &Device {
        &self.devices[self.rank]
    }
}

impl Communicator for DeviceCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.devices.len()
    }

    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let data = TensorData::new(values.to_vec(), [values.len()]);
        let local = Tensor::<1>::from_data(data, self.device());
        let summed = all_reduce(local, ReduceOperation::Sum, self.devices.clone()).resolve();
        values.copy_from_slice(&host_values(summed)?);
        Ok(())
    }

    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        broadcast_through_all_reduce(self, bytes, root)
    }

    fn barrier(&self) -> Result<()> {
        self.all_reduce_sum(&mut [0.0])
    }
}
