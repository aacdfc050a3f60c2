//! Reading safetensors weights lazily: one file, or shards listed by a Hugging Face index
//! (`*.safetensors.index.json` with a `weight_map`). Shared by every model's loader.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::ModuleStore;
use burn::store::SafetensorsStore;
use burn::store::burn_pack::Tensor as PackTensor;

use crate::error::{Error, Result};
use crate::io::check_regular_file;

/// Every tensor of one safetensors file by key, read lazily.
pub(crate) fn read_file(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
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

/// Every tensor of a sharded checkpoint by key: `index` is the Hugging Face index whose
/// `weight_map` names each key's shard in `folder`. A key missing from its shard is an error.
pub(crate) fn read_shards(folder: &Path, index: &Path) -> Result<BTreeMap<String, PackTensor>> {
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
