//! The committed MMDiT fixture (`tests/fixtures/mmdit`, made by `scripts/mmdit_fixture.py`):
//! paths into it, and its inputs and diffusers' outputs (`cases.safetensors`).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use safetensors::SafeTensors;

/// A path inside the fixture folder.
pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mmdit")
        .join(relative)
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
