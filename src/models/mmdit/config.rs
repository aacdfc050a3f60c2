//! The architecture of an SD3-family MMDiT, its presets, and its size.

use burn::config::Config;

use crate::error::{Error, Result};

/// The architecture of an SD3-family MMDiT (SD3, SD3.5-medium with MMDiT-X, SD3.5-large).
///
/// The hidden width is `heads × head_dim`. Presets: [`MmditConfig::sd3_medium`],
/// [`MmditConfig::sd35_medium`], [`MmditConfig::sd35_large`] and [`MmditConfig::tiny`];
/// [`MmditCheckpoint::infer_config`](super::MmditCheckpoint::infer_config) reads one off a
/// checkpoint.
#[derive(Config, Debug, PartialEq)]
pub struct MmditConfig {
    /// The number of joint blocks.
    pub depth: usize,
    /// The number of attention heads.
    pub heads: usize,
    /// The width of one attention head.
    #[config(default = 64)]
    pub head_dim: usize,
    /// Latent channels in (16 for the SD3 VAE).
    #[config(default = 16)]
    pub in_channels: usize,
    /// Velocity channels out.
    #[config(default = 16)]
    pub out_channels: usize,
    /// The side of a square patch.
    #[config(default = 2)]
    pub patch_size: usize,
    /// The side of the learned positional-embedding table, in patches; larger latents are
    /// rejected, smaller ones use its centre.
    #[config(default = 192)]
    pub pos_embed_max_size: usize,
    /// The width of a context (text-token) embedding: 4096 for CLIP-L/G + T5-XXL.
    #[config(default = 4096)]
    pub context_dim: usize,
    /// The width of the pooled text embedding: 2048 for CLIP-L + CLIP-G.
    #[config(default = 2048)]
    pub pooled_dim: usize,
    /// The MLP's hidden width as a multiple of the model width.
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// The number of sinusoidal frequency channels of the timestep embedding.
    #[config(default = 256)]
    pub timestep_channels: usize,
    /// RMSNorm on queries and keys, per head (SD3.5).
    #[config(default = false)]
    pub qk_norm: bool,
    /// Blocks with MMDiT-X's second, image-only self-attention (SD3.5-medium: 0..=12).
    #[config(default = "Vec::new()")]
    pub dual_attention_layers: Vec<usize>,
}

impl MmditConfig {
    /// SD3-medium: 24 blocks of width 1536, a 192² positional table, no qk-norm.
    pub fn sd3_medium() -> Self {
        Self::new(24, 24)
    }

    /// SD3.5-medium: SD3-medium's shape with qk-norm, MMDiT-X dual attention in blocks
    /// 0–12 and a 384² positional table (2.47 B parameters).
    pub fn sd35_medium() -> Self {
        Self::new(24, 24)
            .with_qk_norm(true)
            .with_pos_embed_max_size(384)
            .with_dual_attention_layers((0..=12).collect())
    }

    /// SD3.5-large: 38 blocks of width 2432 with qk-norm (8.15 B parameters).
    pub fn sd35_large() -> Self {
        Self::new(38, 38).with_qk_norm(true)
    }

    /// A 2-block, width-64 SD3.5-medium-like model for tests: qk-norm, dual attention in
    /// block 0, narrow text embeddings (64 and 32 wide) and a 16² positional table.
    pub fn tiny() -> Self {
        Self::new(2, 2)
            .with_head_dim(32)
            .with_qk_norm(true)
            .with_dual_attention_layers(vec![0])
            .with_pos_embed_max_size(16)
            .with_context_dim(64)
            .with_pooled_dim(32)
    }

    /// The model width, `heads × head_dim`.
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Whether block `index` has the MMDiT-X second self-attention.
    pub fn is_dual(&self, index: usize) -> bool {
        self.dual_attention_layers.contains(&index)
    }

    /// Checks that every size is positive and every dual-attention layer exists.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("depth", self.depth),
            ("heads", self.heads),
            ("head_dim", self.head_dim),
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("patch_size", self.patch_size),
            ("pos_embed_max_size", self.pos_embed_max_size),
            ("context_dim", self.context_dim),
            ("pooled_dim", self.pooled_dim),
            ("mlp_ratio", self.mlp_ratio),
        ] {
            if value == 0 {
                return Err(Error::invalid(name, value, "at least 1"));
            }
        }
        if self.timestep_channels < 2 || !self.timestep_channels.is_multiple_of(2) {
            return Err(Error::invalid(
                "timestep_channels",
                self.timestep_channels,
                "an even number of at least 2 (half sine, half cosine)",
            ));
        }
        if let Some(&bad) = self
            .dual_attention_layers
            .iter()
            .find(|&&layer| layer >= self.depth)
        {
            return Err(Error::invalid(
                "dual_attention_layers",
                bad,
                format!("block indices below depth = {}", self.depth),
            ));
        }
        Ok(())
    }

    /// The number of parameters, computed from the configuration alone (the positional
    /// table included).
    pub fn num_params(&self) -> usize {
        let hidden = self.hidden();
        let linear = |d_in: usize, d_out: usize| d_in * d_out + d_out;
        let mlp = linear(hidden, self.mlp_ratio * hidden) + linear(self.mlp_ratio * hidden, hidden);
        let qk_norm = if self.qk_norm { 2 * self.head_dim } else { 0 };
        let attention = 4 * linear(hidden, hidden) + qk_norm;
        let patch = self.patch_size * self.patch_size;

        let embeddings = linear(self.in_channels * patch, hidden)
            + self.pos_embed_max_size * self.pos_embed_max_size * hidden
            + linear(self.timestep_channels, hidden)
            + linear(hidden, hidden)
            + linear(self.pooled_dim, hidden)
            + linear(hidden, hidden)
            + linear(self.context_dim, hidden);
        let blocks: usize = (0..self.depth)
            .map(|index| {
                let dual = self.is_dual(index);
                let image_chunks = if dual { 9 } else { 6 };
                let image = linear(hidden, image_chunks * hidden)
                    + attention
                    + mlp
                    + if dual { attention } else { 0 };
                let context = if index + 1 == self.depth {
                    // The last block's context side only produces q, k and v.
                    linear(hidden, 2 * hidden) + 3 * linear(hidden, hidden) + qk_norm
                } else {
                    linear(hidden, 6 * hidden) + attention + mlp
                };
                image + context
            })
            .sum();
        let final_layer = linear(hidden, 2 * hidden) + linear(hidden, patch * self.out_channels);
        embeddings + blocks + final_layer
    }
}
