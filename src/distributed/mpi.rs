//! [`Communicator`] over MPI (feature `mpi`), through the `mpi` crate (rsmpi).

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives, Root};

use super::Communicator;
use crate::error::{Error, Result};

/// Elements per MPI call: MPI counts are C ints, so larger buffers go in pieces.
const CHUNK: usize = 1 << 28;

/// The processes of `MPI_COMM_WORLD` as workers: start them with `mpirun -np N`. Buffers
/// travel through host memory, so it works with every burn backend.
///
/// The all-reduce is a reduce to rank 0 followed by a broadcast, so every worker receives
/// the same bits (MPI's own all-reduce may round differently on different ranks).
///
/// ```no_run
/// use flow_rl::distributed::{Communicator, MpiCommunicator};
///
/// let mpi = MpiCommunicator::init()?;
/// let mut ones = vec![1.0_f32; 4];
/// mpi.all_reduce_sum(&mut ones)?;
/// assert_eq!(ones[0], mpi.world_size() as f32);
/// # Ok::<(), flow_rl::Error>(())
/// ```
pub struct MpiCommunicator {
    // Declared before the universe so that it is dropped first: dropping the universe
    // finalises MPI.
    world: SimpleCommunicator,
    local_rank: usize,
    _universe: Universe,
}

impl MpiCommunicator {
    /// Initialises MPI and returns the world communicator. Errors if MPI was already
    /// initialised in this process (one `MpiCommunicator` per process).
    pub fn init() -> Result<Self> {
        let universe = mpi::initialize().ok_or_else(|| Error::Distributed {
            operation: "MPI initialisation".into(),
            message: "MPI is already initialised in this process: create one MpiCommunicator \
                      and share it"
                .into(),
        })?;
        let world = universe.world();
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Ok(Self {
            world,
            local_rank,
            _universe: universe,
        })
    }

    /// This process's index among the processes on its machine: the GPU to use when each
    /// machine runs one process per GPU (`Device::cuda(local_rank)`).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world_size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let root = self.world.process_at_rank(0);
        for chunk in values.chunks_mut(CHUNK) {
            if self.rank() == 0 {
                let sent = chunk.to_vec();
                root.reduce_into_root(&sent[..], chunk, SystemOperation::sum());
            } else {
                root.reduce_into(&chunk[..], SystemOperation::sum());
            }
            root.broadcast_into(chunk);
        }
        Ok(())
    }

    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        if root >= self.world_size() {
            return Err(Error::invalid(
                "broadcast root",
                root,
                format!("a rank below the world size {}", self.world_size()),
            ));
        }
        let root = self.world.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        for chunk in bytes.chunks_mut(CHUNK) {
            root.broadcast_into(chunk);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
}
