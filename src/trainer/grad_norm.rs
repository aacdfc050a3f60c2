//! The global gradient norm and PyTorch-style clipping of it (`clip_grad_norm_`).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::error::Result;
use crate::tensor_util::host_values;

/// The L2 norm of all of `module`'s gradients together.
pub(crate) fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> Result<f64> {
    struct SquaredSum<'a> {
        grads: &'a GradientsParams,
        terms: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for SquaredSum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                let grad = grad.flatten::<1>(0, D - 1);
                self.terms.push((grad.clone() * grad).sum());
            }
        }
    }
    let mut visitor = SquaredSum {
        grads,
        terms: Vec::new(),
    };
    module.visit(&mut visitor);
    if visitor.terms.is_empty() {
        return Ok(0.0);
    }
    let total = host_values(Tensor::cat(visitor.terms, 0).sum())?[0] as f64;
    Ok(total.sqrt())
}

/// Multiplies every gradient of `module` by `factor`.
pub(crate) fn scale_grads<M: Module>(module: &M, grads: &mut GradientsParams, factor: f64) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, grad.mul_scalar(self.factor));
            }
        }
    }
    module.visit(&mut Scale { grads, factor });
}
