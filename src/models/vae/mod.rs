//! The SD3 / SD3.5 VAE decoder: latents `[B, 16, h, w]` from the transformer into pixels
//! `[B, 3, 8h, 8w]` in [-1, 1] and RGB images, equal to diffusers' `AutoencoderKL.decode`
//! of `z / scaling_factor + shift_factor`, clamped.
//!
//! - [`VaeDecoderConfig`]: the architecture, [`sd3`](VaeDecoderConfig::sd3) and a CPU-sized
//!   [`tiny`](VaeDecoderConfig::tiny);
//! - [`VaeDecoder`]: [`decode`](VaeDecoder::decode) (`[B, C, h, w] → [B, 3, f·h, f·w]`),
//!   [`decode_images`](VaeDecoder::decode_images) in chunks, and
//!   [`ImageDecoder`](crate::reward::ImageDecoder) for image rewards on latents;
//! - [`VaeWeights`]: diffusers `vae/` folders and the official single files.
//!
//! ```no_run
//! use std::sync::Arc;
//! use burn::prelude::*;
//! use flow_rl::models::vae::VaeWeights;
//! use flow_rl::reward::LatentDecoder;
//!
//! let device = Device::default();
//! let vae = VaeWeights::open("sd3.5_medium.safetensors")?.load(None, &device)?;
//! let latents = Tensor::<4>::zeros([1, 16, 128, 128], &device);
//! let images = vae.decode_images(latents, 1)?; // one 1024×1024 image
//! let decoder = Arc::new(LatentDecoder::new(vae, 128, 128)?); // for DecodedReward
//! # Ok::<(), flow_rl::Error>(())
//! ```
//!
//! `docs/sd35.md` ("The VAE decoder") describes the layouts and dtypes.

mod attention;
mod config;
mod decoder;
mod resnet;
mod weights;

pub use attention::VaeAttention;
pub use config::{VAE_NORM_EPS, VaeDecoderConfig};
pub use decoder::{VaeDecoder, VaeMidBlock, VaeUpBlock, VaeUpsampler};
pub use resnet::VaeResnet;
pub use weights::VaeWeights;
