//! Files whose float tensors do not share one dtype (an f32 bias among bf16 weights): the
//! dtype they are cast to at load time, so that no layer mixes dtypes in the forward pass.

use burn::store::burn_pack::Tensor as PackTensor;
use burn::tensor::{DType, FloatDType};

/// The float dtype that holds the most elements among `tensors` (`(key, dtype, elements)`)
/// and the keys stored in another float dtype, which the caller casts to it; `None` when
/// there are no float tensors. Ties go to the wider dtype, and between f16 and bf16 to bf16
/// (whose range is f32's, so that no value overflows in the cast).
pub(crate) fn prevailing_dtype<'a>(
    tensors: impl IntoIterator<Item = (&'a str, DType, usize)>,
) -> Option<(DType, Vec<&'a str>)> {
    let floats: Vec<(&str, DType, usize)> = tensors
        .into_iter()
        .filter(|(_, dtype, _)| dtype.is_float())
        .collect();
    let elements_in = |dtype: DType| -> usize {
        floats
            .iter()
            .filter(|(_, stored, _)| *stored == dtype)
            .map(|(_, _, elements)| elements)
            .sum()
    };
    let prevailing = floats
        .iter()
        .map(|&(_, dtype, _)| dtype)
        .max_by_key(|&dtype| (elements_in(dtype), dtype.size(), dtype == DType::BF16))?;
    let others = floats
        .iter()
        .filter(|(_, dtype, _)| *dtype != prevailing)
        .map(|&(key, _, _)| key)
        .collect();
    Some((prevailing, others))
}

/// The dtype to load a file's `tensors` (`(key, tensor)`) in when its float tensors do not
/// share one ([`prevailing_dtype`], the cast keys logged with [`warn_cast`]); `None` when they
/// do, so that each keeps its stored dtype.
pub(crate) fn cast_if_mixed<'a>(
    path: &std::path::Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a PackTensor)>,
) -> Option<FloatDType> {
    let stored = tensors.into_iter().map(|(key, tensor)| {
        let elements = tensor.shape.to_vec().iter().product();
        (key, tensor.dtype, elements)
    });
    let (prevailing, others) = prevailing_dtype(stored)?;
    if others.is_empty() {
        return None;
    }
    warn_cast(path, prevailing, &others);
    Some(prevailing.into())
}

/// Logs the keys cast to the prevailing dtype, naming the file.
pub(crate) fn warn_cast(path: &std::path::Path, prevailing: DType, keys: &[&str]) {
    log::warn!(
        "{}: {} tensor(s) not stored in the file's prevailing dtype {prevailing:?} are cast \
         to it: {}",
        path.display(),
        keys.len(),
        keys.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dtype_with_most_elements_prevails_and_the_others_are_named() {
        let tensors = [
            ("weight", DType::BF16, 64),
            ("bias", DType::F32, 8),
            ("norm", DType::F16, 8),
            ("step", DType::I64, 1000),
        ];
        let (prevailing, others) = prevailing_dtype(tensors).unwrap();
        assert_eq!(prevailing, DType::BF16);
        assert_eq!(others, ["bias", "norm"]);
        let tie = [("a", DType::BF16, 8), ("b", DType::F32, 8)];
        assert_eq!(prevailing_dtype(tie).unwrap(), (DType::F32, vec!["a"]));
        let half_tie = [("a", DType::BF16, 8), ("b", DType::F16, 8)];
        assert_eq!(
            prevailing_dtype(half_tie).unwrap(),
            (DType::BF16, vec!["b"])
        );
        let half_tie = [("b", DType::F16, 8), ("a", DType::BF16, 8)];
        assert_eq!(
            prevailing_dtype(half_tie).unwrap(),
            (DType::BF16, vec!["b"])
        );
        assert_eq!(prevailing_dtype([("step", DType::I64, 1)]), None);
    }
}
