use burn::prelude::*;

use crate::error::Result;
use crate::tensor_util::{expect_matrix, expect_vector, row_mean, to_f32};

/// `log N(x | μ, s²I)` mean-reduced over the N latent dimensions, per row:
/// `mean_N[−(x − μ)²/(2s²)] − ln s − ½·ln(2π)`.
///
/// `x` and `mean` are `[R, N]`, `std` is `[R]`; the result is `[R]`, f32. `x` is detached, so a
/// gradient reaches only `mean`. Reducing by the mean rather than the sum keeps the values
/// comparable across latent sizes; the summed log-prob is N times the mean one, minus nothing
/// else, since the constant terms are per dimension too.
pub fn gaussian_log_prob(x: Tensor<2>, mean: Tensor<2>, std: Tensor<1>) -> Result<Tensor<1>> {
    let [rows, dims] = mean.dims();
    expect_matrix("x", &x, rows, dims)?;
    expect_vector("std", &std, rows)?;
    let std = to_f32(std);
    let variance = std.clone() * std.clone();
    let error = to_f32(x).detach() - to_f32(mean);
    let squared_error = row_mean(error.clone() * error);
    Ok(squared_error.div(variance.mul_scalar(2.0)).neg()
        - std.log()
        - 0.5 * (2.0 * std::f64::consts::PI).ln())
}

/// The exact `KL(N(μ_p, s²I) ‖ N(μ_q, s²I))` mean-reduced over N, per row:
/// `mean_N[(μ_p − μ_q)²]/(2s²)`.
///
/// With equal covariances the KL is symmetric in the two means. `mean_p` and `mean_q` are
/// `[R, N]`, `std` is `[R]`; the result is `[R]`, f32, differentiable in both means.
pub fn gaussian_kl(mean_p: Tensor<2>, mean_q: Tensor<2>, std: Tensor<1>) -> Result<Tensor<1>> {
    let [rows, dims] = mean_p.dims();
    expect_matrix("mean_q", &mean_q, rows, dims)?;
    expect_vector("std", &std, rows)?;
    let std = to_f32(std);
    let variance = std.clone() * std;
    let distance = to_f32(mean_p) - to_f32(mean_q);
    let squared_distance = row_mean(distance.clone() * distance);
    Ok(squared_distance.div(variance.mul_scalar(2.0)))
}
