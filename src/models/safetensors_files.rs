//! Reading safetensors weights lazily: one file, or shards listed by a Hugging Face index
//! (`*.safetensors.index.json` with a `weight_map`); and PyTorch checkpoints for the models
//! published only as `.pt` (HPSv2). Shared by every model's loader.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::bridge;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::pytorch_reader::PytorchReader;
use burn::store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    SafetensorsStore,
};
use burn::tensor::FloatDType;

use crate::error::{Error, Result};
use crate::io::check_regular_file;

/// Every tensor of one safetensors file by key, read lazily.
pub(crate) fn read_file(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
    check_regular_file(path)?;
    refuse_unsupported_dtypes(path)?;
    let mut store = SafetensorsStore::from_file(path);
    store
        .get_all_tensors()
        .cloned()
        .map_err(|err| Error::Checkpoint {
            path: path.display().to_string(),
            message: format!("not a readable safetensors file: {err}"),
        })
}

/// The safetensors dtypes burn holds, as the header names them.
const SUPPORTED_DTYPES: [&str; 13] = [
    "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL",
];

/// Fails, naming the dtype and a key, on a file storing tensors in a dtype burn has no
/// type for (fp8 such as `F8_E4M3` in `t5xxl_fp8_e4m3fn.safetensors`); reads the header
/// only. A header that cannot be parsed is left to the full reader's error.
fn refuse_unsupported_dtypes(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|err| Error::io(path, err))?;
    let mut length = [0u8; 8];
    if file.read_exact(&mut length).is_err() {
        return Ok(());
    }
    // A safetensors header is at most 100 MB; anything larger is not one.
    let length = u64::from_le_bytes(length);
    if length > 100_000_000 {
        return Ok(());
    }
    let mut header = vec![0u8; length as usize];
    if file.read_exact(&mut header).is_err() {
        return Ok(());
    }
    let Ok(serde_json::Value::Object(entries)) = serde_json::from_slice(&header) else {
        return Ok(());
    };
    let mut unsupported: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (key, entry) in &entries {
        let Some(dtype) = entry.get("dtype").and_then(|dtype| dtype.as_str()) else {
            continue;
        };
        if !SUPPORTED_DTYPES.contains(&dtype) {
            let (count, _) = unsupported.entry(dtype).or_insert((0, key.as_str()));
            *count += 1;
        }
    }
    if unsupported.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = unsupported
        .iter()
        .map(|(dtype, (count, key))| format!("{count} tensor(s) in {dtype} (e.g. `{key}`)"))
        .collect();
    Err(Error::Checkpoint {
        path: path.display().to_string(),
        message: format!(
            "{}; only f64/f32/f16/bf16 and integer tensors can be loaded (fp8 files such as \
             `*_fp8_e4m3fn.safetensors` are not supported: use the f16 or bf16 file)",
            listed.join(", ")
        ),
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

/// Applies `tensors` (PyTorch layout, each named by the module parameter it fills) to
/// `model`, cast to `dtype` where one is given. Callers check keys and shapes first, so
/// anything burn still does not apply is reported as an unreadable file at `path`.
pub(crate) fn apply_pytorch_tensors<M: ModuleSnapshot>(
    mut model: M,
    tensors: Vec<PackTensor>,
    dtype: Option<FloatDType>,
    path: &Path,
) -> Result<M> {
    let adapter: Box<dyn ModuleAdapter> = match dtype {
        Some(dtype) => Box::new(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(dtype.into()))),
        None => Box::new(PyTorchToBurnAdapter),
    };
    let result = model.apply(tensors, None, Some(adapter), false);
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(Error::Checkpoint {
            path: path.display().to_string(),
            message: format!(
                "loading failed after the shape checks passed: errors {:?}, missing {:?}, \
                 unused {:?}",
                result.errors, result.missing, result.unused
            ),
        });
    }
    Ok(model)
}

/// The extensions of PyTorch checkpoints (`torch.save` pickles) read by [`read_pytorch_file`].
pub(crate) const PYTORCH_EXTENSIONS: [&str; 4] = ["pt", "pth", "bin", "ckpt"];

/// Whether `path` names a PyTorch checkpoint by its extension.
pub(crate) fn is_pytorch_file(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| PYTORCH_EXTENSIONS.contains(&extension))
}

/// Every tensor of a PyTorch checkpoint (`.pt`/`.pth`: any container `torch.save` writes)
/// by key, read lazily through burn's pickle reader, which runs none of the pickle's code.
/// Tensors nested in dictionaries are named by their dotted path: a training checkpoint
/// `{"state_dict": {...}, "epoch": 3}` gives `state_dict.<key>`.
pub(crate) fn read_pytorch_file(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
    check_regular_file(path)?;
    let reader = PytorchReader::new(path).map_err(|err| Error::Checkpoint {
        path: path.display().to_string(),
        message: format!("not a readable PyTorch checkpoint: {err}"),
    })?;
    Ok(reader
        .into_tensors()
        .into_iter()
        .map(|(key, tensor)| (key, bridge::from_pytorch(tensor)))
        .collect())
}

/// Every tensor of a weights file: a PyTorch checkpoint by its extension
/// ([`is_pytorch_file`]), safetensors otherwise.
pub(crate) fn read_weights_file(path: &Path) -> Result<BTreeMap<String, PackTensor>> {
    if is_pytorch_file(path) {
        read_pytorch_file(path)
    } else {
        read_file(path)
    }
}
