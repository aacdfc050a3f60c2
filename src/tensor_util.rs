//! Small tensor helpers shared by the kernels and objectives.

use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::error::{Error, Result};

/// Per-row host values as a `[R, 1]` f32 column that broadcasts over `[R, N]`.
pub(crate) fn column(values: &[f64], device: &Device) -> Tensor<2> {
    let data: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, [values.len(), 1]), device)
}

/// Per-row host values as an `[R]` f32 vector.
pub(crate) fn vector(values: &[f64], device: &Device) -> Tensor<1> {
    let data: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, [values.len()]), device)
}

/// The tensor in f32: the crate's kernel and objective math is f32 whatever the model's dtype.
pub(crate) fn to_f32<const D: usize>(tensor: Tensor<D>) -> Tensor<D> {
    if tensor.dtype() == FloatDType::F32.into() {
        tensor
    } else {
        tensor.cast(FloatDType::F32)
    }
}

/// Reads a float tensor back to the host as f32 values.
pub(crate) fn host_values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|err| Error::TensorRead(format!("{err:?}")))
}

/// Row indices as an `[len]` integer tensor, for `select`.
pub(crate) fn int_index(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

/// Per-row host values, already f32, as an `[R]` vector.
pub(crate) fn vector_f32(values: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// `mean_N` of a `[R, N]` tensor: the per-row mean over the latent dimensions, `[R]`.
pub(crate) fn row_mean(tensor: Tensor<2>) -> Tensor<1> {
    tensor.mean_dim(1).squeeze_dim::<1>(1)
}

/// Checks that `tensor` is `[rows, dims]`.
pub(crate) fn expect_matrix(
    name: &str,
    tensor: &Tensor<2>,
    rows: usize,
    dims: usize,
) -> Result<()> {
    let shape = tensor.dims();
    if shape != [rows, dims] {
        return Err(Error::shape(
            name,
            format!("[{rows}, {dims}] (rows, latent dims)"),
            shape,
        ));
    }
    Ok(())
}

/// Checks that `tensor` is `[rows]`.
pub(crate) fn expect_vector(name: &str, tensor: &Tensor<1>, rows: usize) -> Result<()> {
    let shape = tensor.dims();
    if shape != [rows] {
        return Err(Error::shape(
            name,
            format!("[{rows}] (one value per row)"),
            shape,
        ));
    }
    Ok(())
}
