//! The trainer as one worker of a data-parallel run: joining the others, and the
//! collectives of a step (see `flow_rl::distributed`).

use std::rc::Rc;

use super::Trainer;
use crate::distributed::{
    Communicator, RolloutShard, agree, all_gather_bytes, broadcast_trainable, gather_f32,
};
use crate::error::{Error, Result};
use crate::metrics::non_finite;
use crate::objective::ObjectiveMetrics;
use crate::policy::{ConditionBatch, FlowPolicy};
use crate::reward::RewardScores;
use crate::trainer::TrainerConfig;

impl<P: FlowPolicy> Trainer<P> {
    /// Makes this trainer one worker of a data-parallel run over `communicator`'s workers.
    /// Every worker must call it, with the same configuration and a policy built from the
    /// same base weights.
    ///
    /// - The configurations are compared (all of it, except `metrics_path`,
    ///   `rollout_batch_size` and `micro_batch_rows`, which may differ per worker): a
    ///   difference fails every worker, naming the fields.
    /// - `groups_per_rollout` must divide by the world size: each worker samples its share of
    ///   whole groups ([`RolloutShard`]). Every worker is still given all
    ///   `groups_per_rollout` conditions in [`Trainer::step`].
    /// - The trainable parameters are set to rank 0's, so a random initialisation need not
    ///   be seeded alike.
    /// - Only rank 0 writes the metrics log and checkpoints.
    ///
    /// With the same seed, a run then gives the same samples and, up to the order of float
    /// sums, the same parameters and metrics on any number of workers. The communicator is
    /// shared (`Rc`), so that several trainers of one process (a resumed one, say) can use
    /// the one MPI communicator a process may have.
    ///
    /// ```no_run
    /// # #[cfg(feature = "mpi")] {
    /// use std::rc::Rc;
    /// use burn::prelude::*;
    /// use flow_rl::distributed::{Communicator, MpiCommunicator};
    /// use flow_rl::models::mlp::MlpPolicyConfig;
    /// use flow_rl::trainer::{Trainer, TrainerConfig};
    ///
    /// // Started as `mpirun -np 2 ./train`: every process runs this.
    /// let mpi: Rc<dyn Communicator> = Rc::new(MpiCommunicator::init()?);
    /// let device = Device::default().autodiff();
    /// let policy = MlpPolicyConfig::new().init(&device)?;
    /// let config = TrainerConfig::new(2).with_groups_per_rollout(8).with_group_size(4);
    /// let trainer = Trainer::new(config, policy, &device)?.with_communicator(mpi)?;
    /// assert_eq!(trainer.shard().groups().len(), 8 / trainer.communicator().world_size());
    /// # }
    /// # Ok::<(), flow_rl::Error>(())
    /// ```
    pub fn with_communicator(mut self, communicator: Rc<dyn Communicator>) -> Result<Self> {
        let same_config = check_same_config(&*communicator, &self.config);
        agree(&*communicator, "the configuration check", same_config)?;
        let shard = RolloutShard::new(
            self.config.groups_per_rollout,
            self.config.group_size,
            communicator.world_size(),
            communicator.rank(),
        )?;
        self.policy = broadcast_trainable(&*communicator, self.policy)?;
        if communicator.rank() != 0 {
            self.metrics_log = None;
        }
        self.shard = shard;
        self.communicator = communicator;
        Ok(self)
    }

    /// The workers this trainer trains with ([`SingleProcess`](crate::distributed::SingleProcess)
    /// unless [`Trainer::with_communicator`] was called).
    pub fn communicator(&self) -> &dyn Communicator {
        &*self.communicator
    }

    /// This worker's share of each rollout.
    pub fn shard(&self) -> RolloutShard {
        self.shard
    }

    /// This worker's groups' conditions out of the whole rollout's.
    pub(super) fn local_conditions(&self, conditions: &P::Condition) -> P::Condition {
        if self.communicator.world_size() == 1 {
            conditions.clone()
        } else {
            conditions.pick(&self.shard.groups().collect::<Vec<_>>())
        }
    }
}

/// Errors on a worker whose configuration differs from rank 0's, naming the fields.
fn check_same_config(communicator: &dyn Communicator, config: &TrainerConfig) -> Result<()> {
    let own = config.comparable_json();
    let mut root = own.clone().into_bytes();
    communicator.broadcast(&mut root, 0)?;
    if root == own.as_bytes() {
        return Ok(());
    }
    let fields = |json: &[u8]| -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_slice(json).unwrap_or_default()
    };
    let (root, own) = (fields(&root), fields(own.as_bytes()));
    let mut differing: Vec<&str> = own
        .iter()
        .filter(|(name, value)| root.get(*name) != Some(value))
        .map(|(name, _)| name.as_str())
        .chain(
            root.keys()
                .filter(|name| !own.contains_key(*name))
                .map(String::as_str),
        )
        .collect();
    differing.sort_unstable();
    Err(Error::invalid(
        "TrainerConfig",
        format!(
            "worker {}'s, which differs from worker 0's in {}",
            communicator.rank(),
            differing.join(", ")
        ),
        "the same configuration on every worker (metrics_path, rollout_batch_size and \
         micro_batch_rows may differ)",
    ))
}

/// Every worker's scores joined in rank order: the scores of the whole rollout.
pub(super) fn gather_scores(
    communicator: &dyn Communicator,
    local: RewardScores,
) -> Result<RewardScores> {
    if communicator.world_size() == 1 {
        return Ok(local);
    }
    let values = local
        .values
        .iter()
        .map(|values| gather_f32(communicator, values))
        .collect::<Result<_>>()?;
    Ok(RewardScores {
        names: local.names,
        values,
    })
}

/// The metrics of a mini-batch over every worker's rows, merged from each worker's
/// (`None` where a worker had no rows in it).
pub(super) fn merge_worker_metrics(
    communicator: &dyn Communicator,
    local: Option<ObjectiveMetrics>,
) -> Result<Option<ObjectiveMetrics>> {
    if communicator.world_size() == 1 {
        return Ok(local);
    }
    let encoding_error = |err: serde_json::Error| Error::Distributed {
        operation: "gathering the objective's metrics".into(),
        message: err.to_string(),
    };
    let bytes = non_finite::to_value(&local)
        .and_then(|value| serde_json::to_vec(&value))
        .map_err(encoding_error)?;
    let parts = all_gather_bytes(communicator, &bytes)?
        .into_iter()
        .map(|bytes| {
            serde_json::from_slice(&bytes)
                .and_then(non_finite::from_value::<Option<ObjectiveMetrics>>)
                .map_err(encoding_error)
        })
        .collect::<Result<Vec<_>>>()?;
    let present: Vec<ObjectiveMetrics> = parts.into_iter().flatten().collect();
    Ok(ObjectiveMetrics::merge(&present))
}
