//! Reading checkpoint files (a single safetensors file, or a diffusers folder with or
//! without shards) and telling their layout and model family from the keys.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::burn_pack::Tensor as PackTensor;

use super::keymap::WeightLayout;
use crate::error::{Error, Result};
use crate::models::safetensors_files::{read_file, read_shards};

/// The key prefix of the transformer in Stability AI's single files.
const OFFICIAL_PREFIX: &str = "model.diffusion_model.";
/// diffusers' unsharded weights file.
const DIFFUSERS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// diffusers' shard index.
const DIFFUSERS_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";

/// A diffusers folder: sharded through the index, or one file; a pipeline root descends
/// into `transformer/`.
fn read_folder(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
    let transformer = path.join("transformer");
    if transformer.is_dir() && !path.join(DIFFUSERS_INDEX).exists() {
        return read_folder(&transformer);
    }
    let index = path.join(DIFFUSERS_INDEX);
    if index.is_file() {
        return read_shards(path, &index);
    }
    let single = path.join(DIFFUSERS_FILE);
    if single.is_file() {
        return read_file(&single);
    }
    Err(Error::Checkpoint {
        path: path.display().to_string(),
        message: format!(
            "expected a diffusers transformer folder holding `{DIFFUSERS_INDEX}` with its \
             shards or `{DIFFUSERS_FILE}`, or a pipeline folder with `transformer/`"
        ),
    })
}

/// A checkpoint's transformer tensors, sorted out from the rest of its file.
pub(super) struct Classified {
    /// The naming convention of the keys.
    pub layout: WeightLayout,
    /// The transformer's tensors by key, without the file's prefix.
    pub tensors: BTreeMap<String, PackTensor>,
    /// The prefix the file puts before the transformer's keys.
    pub key_prefix: &'static str,
    /// Tensors of other components in the same file.
    pub other_components: usize,
}

/// The transformer's tensors in a single file or a diffusers folder, read lazily.
pub(super) fn read_transformer(path: &Path) -> Result<Classified> {
    let tensors = if path.is_dir() {
        read_folder(path)?
    } else {
        read_file(path)?
    };
    classify(path, tensors)
}

/// Which layout the keys follow; or an error naming the family the file looks like.
fn classify(path: &Path, tensors: BTreeMap<String, PackTensor>) -> Result<Classified> {
    let has = |prefix: &str| tensors.keys().any(|key| key.starts_with(prefix));
    let unprefixed = |layout, tensors| Classified {
        layout,
        tensors,
        key_prefix: "",
        other_components: 0,
    };
    if has(&format!("{OFFICIAL_PREFIX}joint_blocks.")) {
        let total = tensors.len();
        let model: BTreeMap<String, PackTensor> = tensors
            .into_iter()
            .filter_map(|(key, tensor)| {
                Some((key.strip_prefix(OFFICIAL_PREFIX)?.to_owned(), tensor))
            })
            .collect();
        return Ok(Classified {
            layout: WeightLayout::Official,
            other_components: total - model.len(),
            tensors: model,
            key_prefix: OFFICIAL_PREFIX,
        });
    }
    if has("joint_blocks.") && has("x_embedder.") {
        return Ok(unprefixed(WeightLayout::Official, tensors));
    }
    if has("transformer_blocks.") && has("context_embedder.") && has("pos_embed.proj.") {
        return Ok(unprefixed(WeightLayout::Diffusers, tensors));
    }
    let family = [
        ("double_blocks.", "a FLUX transformer (official layout)"),
        (
            "single_transformer_blocks.",
            "a FLUX transformer (diffusers layout)",
        ),
        ("input_blocks.", "a UNet (SD 1.x/2.x/SDXL)"),
        ("down_blocks.", "a diffusers UNet"),
        ("encoder.down.", "a VAE"),
        ("text_model.", "a CLIP text encoder"),
        ("encoder.block.", "a T5 text encoder"),
    ]
    .into_iter()
    .find(|(marker, _)| tensors.keys().any(|key| key.contains(marker)))
    .map_or("not an SD3-family transformer", |(_, family)| family);
    let sample: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
    Err(Error::Checkpoint {
        path: path.display().to_string(),
        message: format!(
            "this looks like {family} (keys such as {sample:?}); expected an SD3-family \
             MMDiT: `{OFFICIAL_PREFIX}joint_blocks.*` (official single file) or \
             `transformer_blocks.*` with `context_embedder.*` (diffusers)"
        ),
    })
}
