//! Where each of the model's parameters comes from in the official single-file layout and in
//! the diffusers layout.

use crate::models::mmdit::MmditConfig;

/// How a stored tensor (in PyTorch layout: Linear weights `[out, in]`) becomes a parameter.
///
/// Linear weights are transposed afterwards by burn's `PyTorchToBurnAdapter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transform {
    /// Taken as stored.
    AsStored,
    /// Part `index` of `count` equal row blocks of a fused tensor (q, k, v of `qkv`).
    Chunk { index: usize, count: usize },
    /// The two row halves swapped: diffusers' `AdaLayerNormContinuous` yields
    /// `(scale, shift)` where the model's modulation yields `(shift, scale)`.
    SwapHalves,
    /// A leading axis of size 1 dropped (`[1, M², D]` positional table → `[M², D]`).
    DropLeadingAxis,
}

impl Transform {
    /// The stored shape that yields a parameter of (PyTorch-layout) shape `param`.
    pub(crate) fn stored_shape(self, param: &[usize]) -> Vec<usize> {
        let mut shape = param.to_vec();
        match self {
            Transform::AsStored | Transform::SwapHalves => {}
            Transform::Chunk { count, .. } => shape[0] *= count,
            Transform::DropLeadingAxis => shape.insert(0, 1),
        }
        shape
    }
}

/// One parameter's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The parameter's path in the burn module, e.g. `blocks.0.image.attention.query.weight`.
    pub param: String,
    /// The stored key, without the file's model prefix.
    pub key: String,
    /// How the stored tensor becomes the parameter.
    pub transform: Transform,
}

/// A checkpoint's naming convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WeightLayout {
    /// Stability AI's single files (`sd3.5_medium.safetensors`): keys under
    /// `model.diffusion_model.`, fused `qkv` projections.
    Official,
    /// diffusers' `SD3Transformer2DModel` (`transformer/diffusion_pytorch_model*.safetensors`).
    Diffusers,
}

struct Builder {
    entries: Vec<Entry>,
}

impl Builder {
    fn tensor(&mut self, param: String, key: String, transform: Transform) {
        self.entries.push(Entry {
            param,
            key,
            transform,
        });
    }

    /// A Linear or convolution: `weight` and `bias`.
    fn layer(&mut self, param: &str, key: &str, transform: Transform) {
        for part in ["weight", "bias"] {
            self.tensor(
                format!("{param}.{part}"),
                format!("{key}.{part}"),
                transform,
            );
        }
    }
}

/// The parameter → stored tensor table of `layout` for `config`.
pub(crate) fn entries(layout: WeightLayout, config: &MmditConfig) -> Vec<Entry> {
    let mut builder = Builder {
        entries: Vec::new(),
    };
    match layout {
        WeightLayout::Official => official(&mut builder, config),
        WeightLayout::Diffusers => diffusers(&mut builder, config),
    }
    builder.entries
}

/// Which blocks and sides exist: `(block, is_image, is_last)` for each stream of each block.
fn streams(config: &MmditConfig) -> impl Iterator<Item = (usize, bool, bool)> + '_ {
    (0..config.depth).flat_map(move |block| {
        let last = block + 1 == config.depth;
        [(block, false, last), (block, true, last)]
    })
}

fn official(builder: &mut Builder, config: &MmditConfig) {
    use Transform::*;
    builder.layer("patch_embed.proj", "x_embedder.proj", AsStored);
    builder.tensor(
        "patch_embed.position".into(),
        "pos_embed".into(),
        DropLeadingAxis,
    );
    builder.layer("time_embed.linear_1", "t_embedder.mlp.0", AsStored);
    builder.layer("time_embed.linear_2", "t_embedder.mlp.2", AsStored);
    builder.layer("pooled_embed.linear_1", "y_embedder.mlp.0", AsStored);
    builder.layer("pooled_embed.linear_2", "y_embedder.mlp.2", AsStored);
    builder.layer("context_embed", "context_embedder", AsStored);
    for (block, image, last) in streams(config) {
        let (stream, side) = if image {
            ("image", "x_block")
        } else {
            ("context", "context_block")
        };
        let param = format!("blocks.{block}.{stream}");
        let key = format!("joint_blocks.{block}.{side}");
        let pre_only = last && !image;
        builder.layer(
            &format!("{param}.modulation"),
            &format!("{key}.adaLN_modulation.1"),
            AsStored,
        );
        let mut attention = |param: &str, key: &str, with_output: bool| {
            for (index, projection) in ["query", "key", "value"].into_iter().enumerate() {
                builder.layer(
                    &format!("{param}.{projection}"),
                    &format!("{key}.qkv"),
                    Chunk { index, count: 3 },
                );
            }
            if with_output {
                builder.layer(&format!("{param}.output"), &format!("{key}.proj"), AsStored);
            }
            if config.qk_norm {
                for (norm, stored) in [("query_norm", "ln_q"), ("key_norm", "ln_k")] {
                    builder.tensor(
                        format!("{param}.{norm}"),
                        format!("{key}.{stored}.weight"),
                        AsStored,
                    );
                }
            }
        };
        attention(
            &format!("{param}.attention"),
            &format!("{key}.attn"),
            !pre_only,
        );
        if image && config.is_dual(block) {
            attention(
                &format!("{param}.self_attention"),
                &format!("{key}.attn2"),
                true,
            );
        }
        if !pre_only {
            for fc in ["fc1", "fc2"] {
                builder.layer(
                    &format!("{param}.mlp.{fc}"),
                    &format!("{key}.mlp.{fc}"),
                    AsStored,
                );
            }
        }
    }
    builder.layer(
        "final_layer.modulation",
        "final_layer.adaLN_modulation.1",
        AsStored,
    );
    builder.layer("final_layer.proj", "final_layer.linear", AsStored);
}

fn diffusers(builder: &mut Builder, config: &MmditConfig) {
    use Transform::*;
    builder.layer("patch_embed.proj", "pos_embed.proj", AsStored);
    builder.tensor(
        "patch_embed.position".into(),
        "pos_embed.pos_embed".into(),
        DropLeadingAxis,
    );
    for (param, key) in [
        ("time_embed", "time_text_embed.timestep_embedder"),
        ("pooled_embed", "time_text_embed.text_embedder"),
    ] {
        for linear in ["linear_1", "linear_2"] {
            builder.layer(
                &format!("{param}.{linear}"),
                &format!("{key}.{linear}"),
                AsStored,
            );
        }
    }
    builder.layer("context_embed", "context_embedder", AsStored);
    for (block, image, last) in streams(config) {
        let param = format!("blocks.{block}.{}", if image { "image" } else { "context" });
        let key = format!("transformer_blocks.{block}");
        let pre_only = last && !image;
        let (norm, q, k, v, out, q_norm, k_norm, ff) = if image {
            (
                "norm1", "to_q", "to_k", "to_v", "to_out.0", "norm_q", "norm_k", "ff",
            )
        } else {
            (
                "norm1_context",
                "add_q_proj",
                "add_k_proj",
                "add_v_proj",
                "to_add_out",
                "norm_added_q",
                "norm_added_k",
                "ff_context",
            )
        };
        builder.layer(
            &format!("{param}.modulation"),
            &format!("{key}.{norm}.linear"),
            if pre_only { SwapHalves } else { AsStored },
        );
        let mut attention = |param: &str, attn: &str, with_output: bool| {
            for (projection, stored) in [("query", q), ("key", k), ("value", v)] {
                builder.layer(
                    &format!("{param}.{projection}"),
                    &format!("{key}.{attn}.{stored}"),
                    AsStored,
                );
            }
            if with_output {
                builder.layer(
                    &format!("{param}.output"),
                    &format!("{key}.{attn}.{out}"),
                    AsStored,
                );
            }
            if config.qk_norm {
                for (norm, stored) in [("query_norm", q_norm), ("key_norm", k_norm)] {
                    builder.tensor(
                        format!("{param}.{norm}"),
                        format!("{key}.{attn}.{stored}.weight"),
                        AsStored,
                    );
                }
            }
        };
        attention(&format!("{param}.attention"), "attn", !pre_only);
        if image && config.is_dual(block) {
            attention(&format!("{param}.self_attention"), "attn2", true);
        }
        if !pre_only {
            for (fc, stored) in [("fc1", "net.0.proj"), ("fc2", "net.2")] {
                builder.layer(
                    &format!("{param}.mlp.{fc}"),
                    &format!("{key}.{ff}.{stored}"),
                    AsStored,
                );
            }
        }
    }
    builder.layer("final_layer.modulation", "norm_out.linear", SwapHalves);
    builder.layer("final_layer.proj", "proj_out", AsStored);
}

/// The diffusers module name of each of the model's Linear layers that diffusers stores as
/// they are, e.g. `blocks.0.image.attention.query` → `transformer_blocks.0.attn.to_q`: the
/// names LoRA adapter files use. The two adaLN projections diffusers stores with swapped
/// halves (the final layer's and the last block's context side) are left out, since an
/// adapter file's factor for them would need the same swap.
pub(crate) fn diffusers_linear_names(config: &MmditConfig) -> Vec<(String, String)> {
    entries(WeightLayout::Diffusers, config)
        .into_iter()
        .filter(|entry| entry.transform == Transform::AsStored)
        .filter_map(|entry| {
            let module = entry.param.strip_suffix(".weight")?;
            let stored = entry.key.strip_suffix(".weight")?;
            // The patch embedding is a convolution, not a Linear layer.
            (!module.starts_with("patch_embed")).then(|| (module.to_owned(), stored.to_owned()))
        })
        .collect()
}
