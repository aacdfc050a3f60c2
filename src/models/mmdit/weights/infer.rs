//! Reading an SD3-family architecture off a checkpoint's tensor shapes.

use super::checkpoint::MmditCheckpoint;
use super::keymap::WeightLayout;
use crate::error::Result;
use crate::models::mmdit::MmditConfig;

impl MmditCheckpoint {
    /// The architecture the stored shapes describe.
    ///
    /// The head width is read off the qk-norm weights where there are any; without qk-norm
    /// (SD3-medium) it is taken to be 64, as in every released SD3-family model.
    pub fn infer_config(&self) -> Result<MmditConfig> {
        let names = Names::of(self.layout);
        let shape = |key: &str| -> Result<Vec<usize>> {
            self.tensors
                .get(key)
                .map(|tensor| tensor.shape.to_vec())
                .ok_or_else(|| self.unreadable(format!("no tensor `{key}`")))
        };
        let context = shape(names.context_embed)?;
        let pooled = shape(names.pooled_embed)?;
        let timestep = shape(names.time_embed)?;
        let patch = shape(names.patch_embed)?;
        let position = shape(names.position)?;
        let output = shape(names.final_proj)?;
        let (hidden, context_dim) = (context[0], context[1]);
        let depth = self.count_blocks(names.block_prefix);
        if depth == 0 || patch.len() != 4 || position.len() != 3 {
            return Err(self.unreadable("no joint blocks, or a malformed patch embedding".into()));
        }
        let head_norm = (0..depth)
            .map(|block| names.query_norm(block))
            .find_map(|key| self.tensors.get(&key));
        let head_dim = head_norm.map_or(64, |tensor| tensor.shape[0]);
        let mlp = self
            .tensors
            .get(&names.mlp(0))
            .map_or(4 * hidden, |tensor| tensor.shape[0]);
        let grid = (position[1] as f64).sqrt().round() as usize;
        let patch_size = patch[2];
        let config = MmditConfig::new(depth, hidden / head_dim.max(1))
            .with_head_dim(head_dim)
            .with_in_channels(patch[1])
            .with_out_channels(output[0] / (patch_size * patch_size).max(1))
            .with_patch_size(patch_size)
            .with_pos_embed_max_size(grid)
            .with_context_dim(context_dim)
            .with_pooled_dim(pooled[1])
            .with_mlp_ratio(mlp / hidden.max(1))
            .with_timestep_channels(timestep[1])
            .with_qk_norm(head_norm.is_some())
            .with_dual_attention_layers(
                (0..depth)
                    .filter(|&block| self.tensors.contains_key(&names.dual(block)))
                    .collect(),
            );
        config.validate()?;
        if config.hidden() != hidden || grid * grid != position[1] {
            return Err(self.unreadable(format!(
                "hidden width {hidden} is not a multiple of the head width {head_dim}, or the \
                 positional table of {} entries is not square",
                position[1]
            )));
        }
        Ok(config)
    }

    fn count_blocks(&self, prefix: &str) -> usize {
        self.tensors
            .keys()
            .filter_map(|key| {
                key.strip_prefix(prefix)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |last| last + 1)
    }
}

/// The keys `infer_config` reads, per layout.
struct Names {
    layout: WeightLayout,
    context_embed: &'static str,
    pooled_embed: &'static str,
    time_embed: &'static str,
    patch_embed: &'static str,
    position: &'static str,
    final_proj: &'static str,
    block_prefix: &'static str,
}

impl Names {
    fn of(layout: WeightLayout) -> Self {
        match layout {
            WeightLayout::Official => Self {
                layout,
                context_embed: "context_embedder.weight",
                pooled_embed: "y_embedder.mlp.0.weight",
                time_embed: "t_embedder.mlp.0.weight",
                patch_embed: "x_embedder.proj.weight",
                position: "pos_embed",
                final_proj: "final_layer.linear.weight",
                block_prefix: "joint_blocks.",
            },
            WeightLayout::Diffusers => Self {
                layout,
                context_embed: "context_embedder.weight",
                pooled_embed: "time_text_embed.text_embedder.linear_1.weight",
                time_embed: "time_text_embed.timestep_embedder.linear_1.weight",
                patch_embed: "pos_embed.proj.weight",
                position: "pos_embed.pos_embed",
                final_proj: "proj_out.weight",
                block_prefix: "transformer_blocks.",
            },
        }
    }

    fn query_norm(&self, block: usize) -> String {
        match self.layout {
            WeightLayout::Official => format!("joint_blocks.{block}.x_block.attn.ln_q.weight"),
            WeightLayout::Diffusers => format!("transformer_blocks.{block}.attn.norm_q.weight"),
        }
    }

    fn dual(&self, block: usize) -> String {
        match self.layout {
            WeightLayout::Official => format!("joint_blocks.{block}.x_block.attn2.proj.weight"),
            WeightLayout::Diffusers => format!("transformer_blocks.{block}.attn2.to_out.0.weight"),
        }
    }

    fn mlp(&self, block: usize) -> String {
        match self.layout {
            WeightLayout::Official => format!("joint_blocks.{block}.x_block.mlp.fc1.weight"),
            WeightLayout::Diffusers => format!("transformer_blocks.{block}.ff.net.0.proj.weight"),
        }
    }
}
