//! The committed MMDiT fixture (`tests/fixtures/mmdit`, made by `scripts/mmdit_fixture.py`):
//! paths into it, and its inputs and diffusers' outputs (`cases.safetensors`).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use safetensors::SafeTensors;

/// A path inside the fixture folder: under the repository the test was built from, or under
/// `FLOW_RL_REPOSITORY` when that is set (a test binary carried to another machine with a copy
/// of `tests/fixtures`, as `scripts/gpu_check.sh` does).
pub fn fixture(relative: &str) -> PathBuf {
    let repository = std::env::var_os("FLOW_RL_REPOSITORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    repository.join("tests/fixtures/mmdit").join(relative)
}

/// The fixture's f32 inputs and expected outputs, by name.
pub struct Cases {
    bytes: Vec<u8>,
}

impl Cases {
    pub fn load() -> Self {
        Self {
            bytes: std::fs::read(fixture("cases.safetensors")).expect("fixture cases"),
        }
    }

    /// The values and shape of case `name`.
    pub fn values(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let file = SafeTensors::deserialize(&self.bytes).expect("safetensors");
        let view = file
            .tensor(name)
            .unwrap_or_else(|_| panic!("no `{name}` in cases"));
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (values, view.shape().to_vec())
    }

    /// Case `name` as a tensor on `device`.
    pub fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let (values, shape) = self.values(name);
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// The tensors and metadata of fixture files, to be edited and written elsewhere.
pub struct EditableFile {
    /// `(key, data)` in the order read.
    pub tensors: Vec<(String, TensorData)>,
    pub metadata: std::collections::HashMap<String, String>,
}

impl EditableFile {
    /// Reads the fixture files at `relative` paths into one set of tensors (the shards of a
    /// diffusers folder, say), keeping the first file's metadata.
    pub fn read(relative: &[&str]) -> Self {
        let mut tensors = Vec::new();
        let mut metadata = None;
        for path in relative {
            let bytes = std::fs::read(fixture(path)).expect("fixture file");
            let (_, header) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
            metadata.get_or_insert_with(|| header.metadata().clone().unwrap_or_default());
            let file = SafeTensors::deserialize(&bytes).expect("safetensors");
            for (key, view) in file.tensors() {
                let dtype = match view.dtype() {
                    safetensors::Dtype::F32 => burn::tensor::DType::F32,
                    safetensors::Dtype::F16 => burn::tensor::DType::F16,
                    safetensors::Dtype::BF16 => burn::tensor::DType::BF16,
                    other => panic!("fixture tensor `{key}` is {other:?}"),
                };
                let data =
                    TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype);
                tensors.push((key, data));
            }
        }
        Self {
            tensors,
            metadata: metadata.unwrap_or_default(),
        }
    }

    /// The tensor stored under `key`.
    pub fn get_mut(&mut self, key: &str) -> &mut TensorData {
        self.tensors
            .iter_mut()
            .find(|(stored, _)| stored == key)
            .map(|(_, data)| data)
            .unwrap_or_else(|| panic!("no `{key}` in the fixture"))
    }

    /// Every tensor converted to `dtype`.
    pub fn convert_all(&mut self, dtype: burn::tensor::DType) {
        for (_, data) in &mut self.tensors {
            *data = data.clone().convert_dtype(dtype);
        }
    }

    /// Writes the tensors and metadata to `path`.
    pub fn write(&self, path: &Path) {
        let views: Vec<(&str, safetensors::tensor::TensorView)> = self
            .tensors
            .iter()
            .map(|(key, data)| {
                let dtype = match data.dtype() {
                    burn::tensor::DType::F32 => safetensors::Dtype::F32,
                    burn::tensor::DType::F16 => safetensors::Dtype::F16,
                    burn::tensor::DType::BF16 => safetensors::Dtype::BF16,
                    other => panic!("cannot write {other:?}"),
                };
                let view = safetensors::tensor::TensorView::new(
                    dtype,
                    data.shape().to_vec(),
                    data.as_bytes(),
                )
                .expect("a consistent tensor");
                (key.as_str(), view)
            })
            .collect();
        let metadata = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        let bytes = safetensors::serialize(views, metadata).expect("serialise");
        std::fs::write(path, bytes).expect("write the edited file");
    }
}
