//! Where each parameter of a [`ClipModel`](super::ClipModel) lies in a whole-CLIP checkpoint,
//! in transformers' `CLIPModel` naming or OpenCLIP's, and how to cut it out.
//!
//! OpenCLIP stores each attention's q, k and v projections fused (`attn.in_proj_weight`
//! `[3·width, width]`, `attn.in_proj_bias` `[3·width]`, q first, as `nn.MultiheadAttention`
//! holds them) and both towers' projections as `[width, projection]` matrices that multiply
//! from the right, the transpose of a `Linear` weight.

use burn::store::bridge::map_data;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::tensor::{Shape, TensorData};

use super::weights::stored_key as text_stored_key;

/// How a parameter is made from its stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transform {
    /// Stored as the parameter is.
    Same,
    /// Stored transposed: `[in, out]` for a `Linear` weight that PyTorch holds `[out, in]`.
    Transposed,
    /// The `n`-th third along the first axis of a fused q/k/v tensor.
    Third(usize),
    /// A 0-d tensor (or `[1]`) for a parameter of shape `[1]`.
    Scalar,
}

/// The stored key of a parameter and the transform that turns it into the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    /// The checkpoint key, without the file's prefix.
    pub key: String,
    /// How the parameter is cut out of it.
    pub transform: Transform,
}

impl Source {
    fn same(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            transform: Transform::Same,
        }
    }

    /// The stored shapes this source accepts for a parameter of `shape` (PyTorch layout);
    /// the first is the one a mismatch report names.
    pub fn stored_shapes(&self, shape: &[usize]) -> Vec<Vec<usize>> {
        match self.transform {
            Transform::Same => vec![shape.to_vec()],
            Transform::Transposed => vec![shape.iter().rev().copied().collect()],
            Transform::Third(_) => {
                let mut fused = shape.to_vec();
                fused[0] *= 3;
                vec![fused]
            }
            Transform::Scalar => vec![vec![], shape.to_vec()],
        }
    }

    /// The parameter `name` of `shape` (PyTorch layout), cut lazily out of `stored`.
    pub fn extract(&self, stored: PackTensor, name: &str, shape: &[usize]) -> PackTensor {
        let dtype = stored.dtype;
        let target = Shape::from(shape.to_vec());
        let name = name.to_owned();
        match self.transform {
            Transform::Same => {
                let mut renamed = stored;
                renamed.name = name;
                renamed
            }
            Transform::Transposed => map_data(stored, name, dtype, target, transpose),
            Transform::Third(part) => {
                let target_dims = shape.to_vec();
                map_data(stored, name, dtype, target, move |data| {
                    third(data, part, &target_dims)
                })
            }
            Transform::Scalar => {
                let target_dims = shape.to_vec();
                map_data(stored, name, dtype, target, move |data| {
                    let dtype = data.dtype();
                    TensorData::from_bytes(data.into_bytes(), target_dims.clone(), dtype)
                })
            }
        }
    }
}

/// The source of parameter `param` (a [`ClipModel`](super::ClipModel) path in PyTorch
/// naming) in transformers' `CLIPModel` layout.
pub(crate) fn transformers_source(param: &str) -> Source {
    if param == "logit_scale" {
        return Source {
            key: param.to_owned(),
            transform: Transform::Scalar,
        };
    }
    if let Some(rest) = param.strip_prefix("text.") {
        return Source::same(text_stored_key(rest));
    }
    let rest = param.strip_prefix("vision.").unwrap_or(param);
    let key = if rest.starts_with("visual_projection.") {
        rest.to_owned()
    } else if ["patch_embedding.", "class_embedding", "position_embedding."]
        .iter()
        .any(|start| rest.starts_with(start))
    {
        format!("vision_model.embeddings.{rest}")
    } else if rest.starts_with("layers.") {
        format!("vision_model.encoder.{rest}")
    } else {
        format!("vision_model.{rest}")
    };
    Source::same(key)
}

/// The source of parameter `param` in OpenCLIP's layout (`visual.*` for the vision tower,
/// unprefixed keys for the text tower).
pub(crate) fn open_clip_source(param: &str) -> Source {
    if param == "logit_scale" {
        return Source {
            key: param.to_owned(),
            transform: Transform::Scalar,
        };
    }
    if let Some(rest) = param.strip_prefix("text.") {
        return tower_source(
            rest,
            "",
            TEXT_NAMES,
            "text_projection.weight",
            "text_projection",
        );
    }
    let rest = param.strip_prefix("vision.").unwrap_or(param);
    tower_source(
        rest,
        "visual.",
        VISION_NAMES,
        "visual_projection.weight",
        "visual.proj",
    )
}

/// A tower's own tensors: our name (a prefix of the path) and OpenCLIP's.
type Names = &'static [(&'static str, &'static str)];

const TEXT_NAMES: Names = &[
    ("token_embedding.weight", "token_embedding.weight"),
    ("position_embedding.weight", "positional_embedding"),
    ("final_layer_norm.", "ln_final."),
];

const VISION_NAMES: Names = &[
    ("patch_embedding.weight", "conv1.weight"),
    ("class_embedding", "class_embedding"),
    ("position_embedding.weight", "positional_embedding"),
    ("pre_layrnorm.", "ln_pre."),
    ("post_layernorm.", "ln_post."),
];

/// An encoder layer's tensors, ours and OpenCLIP's `ResidualAttentionBlock`'s.
const LAYER_NAMES: Names = &[
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("self_attn.out_proj.", "attn.out_proj."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
];

fn tower_source(
    rest: &str,
    tower_prefix: &str,
    names: Names,
    projection: &str,
    stored_projection: &str,
) -> Source {
    if rest == projection {
        return Source {
            key: stored_projection.to_owned(),
            transform: Transform::Transposed,
        };
    }
    if let Some(layer) = rest.strip_prefix("layers.") {
        let (index, within) = layer.split_once('.').unwrap_or((layer, ""));
        let block = format!("{tower_prefix}transformer.resblocks.{index}.");
        for (part, name) in ["q_proj.", "k_proj.", "v_proj."].iter().enumerate() {
            if let Some(field) = within
                .strip_prefix("self_attn.")
                .and_then(|attn| attn.strip_prefix(name))
            {
                return Source {
                    key: format!("{block}attn.in_proj_{field}"),
                    transform: Transform::Third(part),
                };
            }
        }
        return Source::same(format!("{block}{}", renamed(within, LAYER_NAMES)));
    }
    Source::same(format!("{tower_prefix}{}", renamed(rest, names)))
}

/// `path` with the first matching prefix of `names` replaced; unchanged when none matches.
fn renamed(path: &str, names: Names) -> String {
    names
        .iter()
        .find_map(|(ours, theirs)| {
            path.strip_prefix(ours)
                .map(|tail| format!("{theirs}{tail}"))
        })
        .unwrap_or_else(|| path.to_owned())
}

/// A 2-D tensor transposed, element by element whatever the dtype.
fn transpose(data: TensorData) -> TensorData {
    let dtype = data.dtype();
    let (rows, cols) = (data.shape()[0], data.shape()[1]);
    let size = dtype.size();
    let bytes = data.as_bytes();
    let mut out = vec![0u8; bytes.len()];
    for row in 0..rows {
        for col in 0..cols {
            let from = (row * cols + col) * size;
            let to = (col * rows + row) * size;
            out[to..to + size].copy_from_slice(&bytes[from..from + size]);
        }
    }
    TensorData::from_bytes_vec(out, [cols, rows], dtype)
}

/// The `part`-th third along the first axis (row-major, so one contiguous byte range).
fn third(data: TensorData, part: usize, shape: &[usize]) -> TensorData {
    let dtype = data.dtype();
    let bytes = data.as_bytes();
    let length = bytes.len() / 3;
    let slice = bytes[part * length..(part + 1) * length].to_vec();
    TensorData::from_bytes_vec(slice, shape.to_vec(), dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transformers_keys_follow_clip_model() {
        let cases = [
            ("logit_scale", "logit_scale"),
            (
                "text.token_embedding.weight",
                "text_model.embeddings.token_embedding.weight",
            ),
            ("text.text_projection.weight", "text_projection.weight"),
            (
                "vision.patch_embedding.weight",
                "vision_model.embeddings.patch_embedding.weight",
            ),
            (
                "vision.class_embedding",
                "vision_model.embeddings.class_embedding",
            ),
            (
                "vision.layers.3.self_attn.k_proj.bias",
                "vision_model.encoder.layers.3.self_attn.k_proj.bias",
            ),
            (
                "vision.pre_layrnorm.weight",
                "vision_model.pre_layrnorm.weight",
            ),
            (
                "vision.visual_projection.weight",
                "visual_projection.weight",
            ),
        ];
        for (param, key) in cases {
            assert_eq!(transformers_source(param).key, key, "{param}");
        }
    }

    #[test]
    fn open_clip_keys_follow_open_clip() {
        let cases = [
            (
                "text.position_embedding.weight",
                "positional_embedding",
                Transform::Same,
            ),
            (
                "text.final_layer_norm.bias",
                "ln_final.bias",
                Transform::Same,
            ),
            (
                "text.text_projection.weight",
                "text_projection",
                Transform::Transposed,
            ),
            (
                "text.layers.1.self_attn.v_proj.weight",
                "transformer.resblocks.1.attn.in_proj_weight",
                Transform::Third(2),
            ),
            (
                "vision.layers.0.self_attn.q_proj.bias",
                "visual.transformer.resblocks.0.attn.in_proj_bias",
                Transform::Third(0),
            ),
            (
                "vision.layers.10.mlp.fc2.weight",
                "visual.transformer.resblocks.10.mlp.c_proj.weight",
                Transform::Same,
            ),
            (
                "vision.layers.2.layer_norm1.weight",
                "visual.transformer.resblocks.2.ln_1.weight",
                Transform::Same,
            ),
            (
                "vision.patch_embedding.weight",
                "visual.conv1.weight",
                Transform::Same,
            ),
            (
                "vision.post_layernorm.weight",
                "visual.ln_post.weight",
                Transform::Same,
            ),
            (
                "vision.visual_projection.weight",
                "visual.proj",
                Transform::Transposed,
            ),
            ("logit_scale", "logit_scale", Transform::Scalar),
        ];
        for (param, key, transform) in cases {
            let source = open_clip_source(param);
            assert_eq!(
                (source.key.as_str(), source.transform),
                (key, transform),
                "{param}"
            );
        }
    }

    #[test]
    fn transpose_and_third_move_whole_elements() {
        let data = TensorData::new((0..6).map(|v| v as f32).collect::<Vec<_>>(), [2, 3]);
        let transposed = transpose(data.clone());
        assert_eq!(transposed.shape().to_vec(), vec![3, 2]);
        assert_eq!(
            transposed.try_to_vec::<f32>().unwrap(),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        let fused = TensorData::new((0..6).map(|v| v as f32).collect::<Vec<_>>(), [6]);
        assert_eq!(
            third(fused, 1, &[2]).try_to_vec::<f32>().unwrap(),
            vec![2.0, 3.0]
        );
    }
}
