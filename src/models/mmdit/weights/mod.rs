//! Loading SD3-family weights: Stability AI's single files and diffusers' layout.

mod checkpoint;
mod files;
mod infer;
mod keymap;

pub use checkpoint::MmditCheckpoint;
pub use keymap::WeightLayout;
pub(crate) use keymap::diffusers_linear_names;
#[cfg(test)]
pub(crate) use keymap::entries;
