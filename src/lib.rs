//! flow-rl
pub mod error;
pub mod kernel;
pub mod objective;
mod rng;
pub mod schedule;
mod tensor_util;

pub use error::{Error, Result};
pub use rng::Rng;
