//! Clients of reward servers: the rewards run in their own Python environment (their
//! model stacks rarely agree with one another) and are asked over plain HTTP.
//!
//! - [`UnirlReward`]: UniRL's reward service (JSON `POST /score`, base64 JPEGs and
//!   prompts): PickScore, HPSv2, CLIP, ImageReward, OCR, GenEval2;
//! - [`GenevalReward`]: flow_grpo's GenEval server (pickled JPEGs and each prompt's
//!   GenEval metadata, from [`load_geneval_metadata`]);
//! - [`LatentReward`]: verl-omni's latent protocol of diffusion-native reward models
//!   (DiNa-LRM): safetensors of the latents and prompt embeddings, no VAE.
//!
//! All share a [`RewardServerClient`] configured by [`RewardServerConfig`]: transient
//! failures are retried, everything else is an
//! [`Error::RewardServer`](crate::Error::RewardServer) naming the server and the reward.
//! The protocols are described in `docs/rewards.md`.

mod client;
mod geneval;
mod latent;
mod unirl;

pub use client::{RewardServerClient, RewardServerConfig};
pub use geneval::{GenevalReward, GenevalScore, load_geneval_metadata};
pub use latent::{DRM_PROTOCOL_HEADER, DRM_PROTOCOL_VERSION, LatentReward};
pub use unirl::{UNIRL_JPEG_QUALITY, UnirlReward};

use crate::error::{Error, Result};

/// Checks that an image reward got one prompt per image.
fn check_prompt_count(reward: &str, images: usize, prompts: usize) -> Result<()> {
    if images != prompts {
        return Err(Error::shape(
            format!("prompts of reward {reward:?}"),
            format!("{images} prompts, one per image"),
            [prompts],
        ));
    }
    Ok(())
}
