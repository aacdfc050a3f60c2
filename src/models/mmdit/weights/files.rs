//! Reading checkpoint files (a single safetensors file, or a diffusers folder with or
//! without shards) and telling their layout and model family from the keys.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::ModuleStore;
use burn::store::SafetensorsStore;
use burn::store::burn_pack::Tensor as PackTensor;

use super::keymap::WeightLayout;
use crate::error::{Error, Result};
use crate::io::check_regular_file;

/// The key prefix of the transformer in Stability AI's single files.
const OFFICIAL_PREFIX: &str = "model.diffusion_model.";
/// diffusers' unsharded weights file.
const DIFFUSERS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// diffusers' shard index.
const DIFFUSERS_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";

fn read_file(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
    check_regular_file(path)?;
    let mut store = SafetensorsStore::from_file(path);
    store
        .get_all_tensors()
        .cloned()
        .map_err(|err| Error::Checkpoint {
            path: path.display().to_string(),
            message: format!("not a readable safetensors file: {err}"),
        })
}

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

fn read_shards(folder: &Path, index: &Path) -> Result<BTreeMap<String, PackTensor>> {
    let io = |message: String| Error::Checkpoint {
        path: index.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(index).map_err(|err| Error::io(index, err))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| io(format!("not JSON: {err}")))?;
    let weight_map = json
        .get("weight_map")
        .and_then(|map| map.as_object())
        .ok_or_else(|| io("no `weight_map` object".into()))?;
    let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, file) in weight_map {
        let file = file
            .as_str()
            .ok_or_else(|| io(format!("the shard of `{key}` is not a file name")))?;
        shards.entry(file).or_default().push(key);
    }
    let mut tensors = BTreeMap::new();
    for (file, keys) in shards {
        let mut shard = read_file(&folder.join(file))?;
        for key in keys {
            let tensor = shard.remove(key).ok_or_else(|| {
                io(format!(
                    "`{key}` is indexed in {file} but the shard does not hold it"
                ))
            })?;
            tensors.insert(key.to_owned(), tensor);
        }
    }
    Ok(tensors)
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
