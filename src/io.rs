//! File writing shared by checkpoints, adapters and embedding files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `contents` to a temporary file beside `path`, syncs it, and renames it over
/// `path`, so a crash leaves either the old file or the new one, never a torn one.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let io_error = |target: &Path, err: std::io::Error| Error::Io {
        path: target.display().to_string(),
        message: err.to_string(),
    };
    let mut temporary = PathBuf::from(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    temporary.set_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = fs::File::create(&temporary).map_err(|err| io_error(&temporary, err))?;
    file.write_all(contents)
        .and_then(|_| file.sync_all())
        .map_err(|err| io_error(&temporary, err))?;
    drop(file);
    fs::rename(&temporary, path).map_err(|err| {
        let _ = fs::remove_file(&temporary);
        io_error(path, err)
    })
}
