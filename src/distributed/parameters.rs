//! The trainable parameters and their gradients as flat host buffers: summed over workers
//! once per optimiser step, and broadcast from rank 0.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::DType;

use super::{Communicator, agree};
use crate::error::{Error, Result};
use crate::tensor_util::host_values;

/// A trainable (gradient-requiring) float parameter: its id, shape, dtype and device.
struct Trainable {
    id: ParamId,
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
}

impl Trainable {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The trainable parameters of `module`, in its visiting order (the same on every worker).
fn trainable_parameters<M: Module>(module: &M) -> Vec<Trainable> {
    struct Collect(Vec<Trainable>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            if value.is_require_grad() {
                self.0.push(Trainable {
                    id: param.id,
                    shape: value.dims().to_vec(),
                    dtype: value.dtype(),
                    device: value.device(),
                });
            }
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// The ids of `module`'s trainable parameters, in its visiting order.
pub(crate) fn trainable_param_ids<M: Module>(module: &M) -> Vec<ParamId> {
    trainable_parameters(module)
        .into_iter()
        .map(|parameter| parameter.id)
        .collect()
}

/// The sum over workers of every worker's `local` gradients of `module`'s trainable
/// parameters (a parameter without a gradient counts as zeros, as on a worker with no rows
/// in the mini-batch). If `local` is an error on any worker, every worker fails
/// ([`agree`]'s errors) and nothing is summed: the failure rides in one extra value of the
/// same all-reduce.
pub(crate) fn reduce_trainable_grads<M: Module>(
    communicator: &dyn Communicator,
    module: &M,
    local: Result<GradientsParams>,
) -> Result<GradientsParams> {
    let parameters = trainable_parameters(module);
    let total: usize = parameters.iter().map(Trainable::len).sum();
    let mut flat = Vec::with_capacity(total + 1);
    if let Ok(grads) = &local {
        for parameter in &parameters {
            append_grad(&mut flat, grads, parameter)?;
        }
    } else {
        flat.resize(total, 0.0);
    }
    let failed_slot = total;
    flat.push(f32::from(u8::from(local.is_err())));
    communicator.all_reduce_sum(&mut flat)?;
    if flat[failed_slot] != 0.0 {
        // Someone failed: agree on who, and with which message.
        return agree(communicator, "the gradient of a mini-batch", local);
    }
    let mut reduced = GradientsParams::new();
    let mut start = 0;
    for parameter in &parameters {
        let values = flat[start..start + parameter.len()].to_vec();
        start += parameter.len();
        register_grad(&mut reduced, parameter, values);
    }
    Ok(reduced)
}

/// Appends `parameter`'s gradient in `grads` (zeros if it has none) to `flat`.
fn append_grad(flat: &mut Vec<f32>, grads: &GradientsParams, parameter: &Trainable) -> Result<()> {
    fn grad_values<const D: usize>(
        grads: &GradientsParams,
        parameter: &Trainable,
    ) -> Result<Option<Vec<f32>>> {
        grads.get::<D>(parameter.id).map(host_values).transpose()
    }
    let values = match parameter.shape.len() {
        1 => grad_values::<1>(grads, parameter)?,
        2 => grad_values::<2>(grads, parameter)?,
        3 => grad_values::<3>(grads, parameter)?,
        4 => grad_values::<4>(grads, parameter)?,
        5 => grad_values::<5>(grads, parameter)?,
        rank => {
            return Err(Error::invalid(
                "trainable parameter rank",
                rank,
                "a parameter of rank 1 to 5",
            ));
        }
    };
    match values {
        Some(values) => flat.extend(values),
        None => flat.extend(std::iter::repeat_n(0.0, parameter.len())),
    }
    Ok(())
}

/// Registers `values` as `parameter`'s gradient in `grads`, in the parameter's dtype, on its
/// device's inner (non-autodiff) backend, where gradients live.
fn register_grad(grads: &mut GradientsParams, parameter: &Trainable, values: Vec<f32>) {
    fn register<const D: usize>(
        grads: &mut GradientsParams,
        parameter: &Trainable,
        values: Vec<f32>,
    ) {
        let device = parameter.device.clone().without_autodiff();
        let data = TensorData::new(values, parameter.shape.clone());
        let grad = Tensor::<D>::from_data(data, &device).cast(parameter.dtype);
        grads.register(parameter.id, grad);
    }
    match parameter.shape.len() {
        1 => register::<1>(grads, parameter, values),
        2 => register::<2>(grads, parameter, values),
        3 => register::<3>(grads, parameter, values),
        4 => register::<4>(grads, parameter, values),
        _ => register::<5>(grads, parameter, values),
    }
}

/// `module` with every trainable parameter set to rank 0's value (frozen parameters are
/// left alone: they come from the same base weights on every worker). Errors on every
/// worker if the trainable parameters differ in size between workers.
pub(crate) fn broadcast_trainable<M: Module>(
    communicator: &dyn Communicator,
    module: M,
) -> Result<M> {
    if communicator.world_size() == 1 {
        return Ok(module);
    }
    let parameters = trainable_parameters(&module);
    let expected: usize = parameters.iter().map(Trainable::len).sum();
    let mut bytes = Vec::new();
    if communicator.rank() == 0 {
        bytes.reserve(expected * 4);
        struct Values<'a>(&'a mut Vec<u8>, Result<()>);
        impl ModuleVisitor for Values<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let value = param.val();
                if value.is_require_grad() && self.1.is_ok() {
                    match host_values(value) {
                        Ok(values) => self.0.extend(values.iter().flat_map(|v| v.to_le_bytes())),
                        Err(err) => self.1 = Err(err),
                    }
                }
            }
        }
        let mut values = Values(&mut bytes, Ok(()));
        module.visit(&mut values);
        values.1?;
    }
    communicator.broadcast(&mut bytes, 0)?;
    let sizes_agree = if bytes.len() == expected * 4 {
        Ok(())
    } else {
        Err(Error::invalid(
            "trainable parameters",
            format!("{expected} values on worker {}", communicator.rank()),
            format!("{} values, as on worker 0", bytes.len() / 4),
        ))
    };
    agree(communicator, "the broadcast of the parameters", sizes_agree)?;
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect();
    Ok(module.map(&mut Replace { values, start: 0 }))
}

/// Replaces each trainable parameter by the next values of `values`.
struct Replace {
    values: Vec<f32>,
    start: usize,
}

impl ModuleMapper for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !param.val().is_require_grad() {
            return param;
        }
        let (values, start) = (&self.values, &mut self.start);
        param.map(|tensor| {
            let shape = tensor.dims();
            let len: usize = shape.iter().product();
            let data = TensorData::new(values[*start..*start + len].to_vec(), shape);
            *start += len;
            Tensor::<D>::from_data(data, &tensor.device())
                .cast(tensor.dtype())
                .require_grad()
        })
    }
}
