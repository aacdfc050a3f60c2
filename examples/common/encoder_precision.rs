//! The `--precision` flag of the prompt-encoding examples (`encode_prompts`, `encoder_bench`),
//! shared through `#[path]` so that both accept the same values.

use burn::tensor::FloatDType;
use clap::ValueEnum;

/// The encoders' weight dtype.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Precision {
    /// bf16 (f16 downloads are cast on load: T5 overflows in f16).
    Bf16,
    /// f32.
    F32,
}

impl Precision {
    /// The dtype the encoders are loaded in.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::Bf16 => FloatDType::BF16,
            Precision::F32 => FloatDType::F32,
        }
    }
}
