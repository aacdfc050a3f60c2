//! Small safetensors files read whole and written atomically: LoRA adapters and prompt
//! embeddings. (Model weights go through `burn::store`, memory-mapped.)

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::{DType, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::io::{read_regular_file, write_atomically};

/// The float dtypes these files hold, as safetensors and burn name them.
const FLOAT_DTYPES: [(Dtype, DType); 4] = [
    (Dtype::F32, DType::F32),
    (Dtype::F16, DType::F16),
    (Dtype::BF16, DType::BF16),
    (Dtype::F64, DType::F64),
];

/// Named tensors and string metadata, held on the host.
#[derive(Debug, Clone, Default)]
pub(crate) struct SafetensorsFile {
    tensors: BTreeMap<String, TensorData>,
    metadata: HashMap<String, String>,
}

impl SafetensorsFile {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Reads a whole file; a missing path, a folder or a device is an [`Error::Io`] that
    /// says which.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let error = |message: String| Error::Checkpoint {
            path: path.display().to_string(),
            message,
        };
        let bytes = read_regular_file(path)?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|err| error(format!("not a safetensors file: {err}")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|err| error(format!("not a safetensors file: {err}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let dtype = FLOAT_DTYPES
                .iter()
                .find(|(stored, _)| *stored == view.dtype())
                .map(|&(_, dtype)| dtype)
                .ok_or_else(|| {
                    error(format!(
                        "`{name}` is {:?}; expected a float tensor (f32, f16, bf16, f64)",
                        view.dtype()
                    ))
                })?;
            let data =
                TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype);
            tensors.insert(name, data);
        }
        Ok(Self { tensors, metadata })
    }

    /// Adds a tensor.
    pub(crate) fn insert(&mut self, name: impl Into<String>, data: TensorData) {
        self.tensors.insert(name.into(), data);
    }

    /// Sets a metadata entry.
    pub(crate) fn metadata(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.insert(key.to_owned(), value.into());
    }

    /// A metadata entry.
    pub(crate) fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The tensors by name.
    pub(crate) fn tensors(&self) -> &BTreeMap<String, TensorData> {
        &self.tensors
    }

    /// Serialises the file.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        let views = self
            .tensors
            .iter()
            .map(|(name, data)| {
                let dtype = FLOAT_DTYPES
                    .iter()
                    .find(|(_, dtype)| *dtype == data.dtype())
                    .map(|&(stored, _)| stored)
                    .ok_or_else(|| {
                        Error::invalid(
                            format!("dtype of `{name}`"),
                            format!("{:?}", data.dtype()),
                            "a float dtype (f32, f16, bf16, f64)",
                        )
                    })?;
                let view = TensorView::new(dtype, data.shape().to_vec(), data.as_bytes())
                    .map_err(|err| Error::invalid(name.clone(), err, "a consistent tensor"))?;
                Ok((name.as_str(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::serialize(views, metadata)
            .map_err(|err| Error::invalid("safetensors file", err, "a serialisable set of tensors"))
    }
}

/// Writes `file` to `path` atomically.
pub(crate) fn write_file_atomically(path: &Path, file: &SafetensorsFile) -> Result<()> {
    write_atomically(path, &file.to_bytes()?)
}
