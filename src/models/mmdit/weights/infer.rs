//! Reading an SD3-family architecture off a checkpoint's tensor shapes.

use super::checkpoint::MmditCheckpoint;
use super::keymap::WeightLayout;
use crate::error::{Result, WeightProblem};
use crate::models::mmdit::MmditConfig;

impl MmditCheckpoint {
    /// The architecture the stored shapes describe.
    ///
    /// The head width is read off the qk-norm weights where there are any; without qk-norm
    /// (SD3-medium) it is taken to be 64, as in every released SD3-family model. The depth
    /// is the number of consecutive blocks from block 0 that hold the keys every block has
    /// (both streams' modulation and query projection, the image stream's MLP).
    ///
    /// Fails with [`Error::WeightMismatch`](crate::Error::WeightMismatch) when a tensor read
    /// here has the wrong rank (listed as mis-shaped; as the sizes are what is being
    /// inferred, the expected shape gives only the rank, each size shown as 0) or block keys
    /// lie past the last complete block (listed as unexpected), and with
    /// [`Error::Checkpoint`](crate::Error::Checkpoint) when there are no blocks or the sizes
    /// do not fit together.
    pub fn infer_config(&self) -> Result<MmditConfig> {
        let names = Names::of(self.layout);
        let depth = self.complete_blocks(&names);
        let past_the_last_block = self.keys_past_block(&names, depth);
        if !past_the_last_block.is_empty() {
            return Err(self.mismatch(past_the_last_block));
        }
        if depth == 0 {
            return Err(self.unreadable(format!(
                "no complete joint block (`{}0.*`)",
                names.block_prefix
            )));
        }
        let mut shapes = ShapeReader::new(self);
        let context = shapes.read(names.context_embed, 2)?;
        let pooled = shapes.read(names.pooled_embed, 2)?;
        let timestep = shapes.read(names.time_embed, 2)?;
        let patch = shapes.read(names.patch_embed, 4)?;
        let position = shapes.read(names.position, 3)?;
        let output = shapes.read(names.final_proj, 2)?;
        let head_norm_key = (0..depth)
            .map(|block| names.query_norm(block))
            .find(|key| self.tensors.contains_key(key));
        let head_norm = match &head_norm_key {
            Some(key) => Some(shapes.read(key, 1)?),
            None => None,
        };
        let mlp = shapes.read(&names.mlp(0), 2)?;
        shapes.finish()?;
        let (hidden, context_dim) = (context[0], context[1]);
        let head_dim = head_norm.map_or(64, |shape| shape[0]);
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
            .with_mlp_ratio(mlp[0] / hidden.max(1))
            .with_timestep_channels(timestep[1])
            .with_qk_norm(head_norm_key.is_some())
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

    /// The number of consecutive blocks from block 0 that hold every key all blocks have.
    fn complete_blocks(&self, names: &Names) -> usize {
        (0..)
            .take_while(|&block| {
                names
                    .block_keys(block)
                    .iter()
                    .all(|key| self.tensors.contains_key(key))
            })
            .count()
    }

    /// Every key of a block numbered `depth` or more, as an unexpected key.
    fn keys_past_block(&self, names: &Names, depth: usize) -> Vec<WeightProblem> {
        self.tensors
            .iter()
            .filter(|(key, _)| {
                key.strip_prefix(names.block_prefix)
                    .and_then(|rest| rest.split('.').next()?.parse::<usize>().ok())
                    .is_some_and(|block| block >= depth)
            })
            .map(|(key, tensor)| WeightProblem::unexpected(key.clone(), tensor.shape.to_vec()))
            .collect()
    }
}

/// Reads tensor shapes, collecting every tensor of the wrong rank before failing.
struct ShapeReader<'a> {
    checkpoint: &'a MmditCheckpoint,
    wrong_rank: Vec<WeightProblem>,
}

impl<'a> ShapeReader<'a> {
    fn new(checkpoint: &'a MmditCheckpoint) -> Self {
        Self {
            checkpoint,
            wrong_rank: Vec::new(),
        }
    }

    /// The shape of `key`, which must have `rank` axes; a tensor of another rank is noted
    /// (and read as zeros so that reading can go on) for [`ShapeReader::finish`] to report.
    fn read(&mut self, key: &str, rank: usize) -> Result<Vec<usize>> {
        let tensor = self
            .checkpoint
            .tensors
            .get(key)
            .ok_or_else(|| self.checkpoint.unreadable(format!("no tensor `{key}`")))?;
        let shape = tensor.shape.to_vec();
        if shape.len() == rank {
            return Ok(shape);
        }
        self.wrong_rank
            .push(WeightProblem::mis_shaped(key, vec![0; rank], shape));
        Ok(vec![0; rank])
    }

    /// Fails with every tensor of the wrong rank.
    fn finish(self) -> Result<()> {
        if self.wrong_rank.is_empty() {
            Ok(())
        } else {
            Err(self.checkpoint.mismatch(self.wrong_rank))
        }
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

    /// The keys every block has: both streams' modulation and query projection, and the
    /// image stream's MLP (the last block's context stream has no MLP).
    fn block_keys(&self, block: usize) -> [String; 5] {
        let key = |suffix: &str| format!("{}{block}.{suffix}", self.block_prefix);
        match self.layout {
            WeightLayout::Official => [
                key("x_block.adaLN_modulation.1.weight"),
                key("x_block.attn.qkv.weight"),
                key("x_block.mlp.fc1.weight"),
                key("context_block.adaLN_modulation.1.weight"),
                key("context_block.attn.qkv.weight"),
            ],
            WeightLayout::Diffusers => [
                key("norm1.linear.weight"),
                key("attn.to_q.weight"),
                key("ff.net.0.proj.weight"),
                key("norm1_context.linear.weight"),
                key("attn.add_q_proj.weight"),
            ],
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
