//! File reading and writing shared by checkpoints, adapters, embedding files and logs;
//! [`write_atomically`] is public for programs that write their own outputs the same way.
//!
//! Writes are atomic: the contents go to a temporary file beside the target, named
//! `.{target}.{pid}.{random}.tmp`, which is synced and then renamed over the target. A writer
//! killed mid-save leaves its temporary behind; the next save to the same target removes the
//! temporaries whose writer process is gone.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `contents` to a temporary file beside `path`, syncs it, and renames it over
/// `path`, so a crash leaves either the old file or the new one, never a torn one.
///
/// Before writing, removes the temporaries of `path` left by writers that no longer run.
/// On Unix the file gets the permissions a plain `File::create` would give (0o666 less the
/// umask), not the temporary's private 0o600.
/// Errors if `path` names a folder or a device, or if the folder cannot be written.
///
/// ```
/// let folder = tempfile::tempdir().unwrap();
/// let path = folder.path().join("notes.txt");
/// flow_rl::io::write_atomically(&path, b"step 10")?;
/// assert_eq!(std::fs::read(&path).unwrap(), b"step 10");
/// # Ok::<(), flow_rl::Error>(())
/// ```
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    check_replaceable(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| {
            Error::io(
                path,
                std::io::Error::new(ErrorKind::InvalidInput, "the path names no file"),
            )
        })?
        .to_string_lossy()
        .into_owned();
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    remove_stale_temporaries(folder, &name);

    let prefix = format!(".{name}.{}.", std::process::id());
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(&prefix)
        .suffix(".tmp")
        .rand_bytes(RANDOM_CHARS);
    #[cfg(unix)]
    builder.permissions(created_file_permissions());
    let mut temporary = builder
        .tempfile_in(folder)
        .map_err(|err| Error::io(folder, err))?;
    temporary
        .write_all(contents)
        .and_then(|_| temporary.as_file().sync_all())
        .map_err(|err| Error::io(temporary.path(), err))?;
    // On failure the temporary is dropped with the error, which deletes it.
    temporary
        .persist(path)
        .map_err(|err| Error::io(path, err.error))?;
    sync_folder(folder);
    Ok(())
}

/// 0o666, which the kernel narrows by the umask when it creates the file, as for any file.
#[cfg(unix)]
fn created_file_permissions() -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    fs::Permissions::from_mode(0o666)
}

/// Reads a whole regular file; a folder or a device is an error that says so.
pub(crate) fn read_regular_file(path: &Path) -> Result<Vec<u8>> {
    check_regular_file(path)?;
    fs::read(path).map_err(|err| Error::io(path, err))
}

/// Errors unless `path` is an existing regular file (or a link to one), naming a missing
/// path, a folder or a device as such.
pub(crate) fn check_regular_file(path: &Path) -> Result<()> {
    let metadata = fs::metadata(path).map_err(|err| Error::io(path, err))?;
    check_regular(path, &metadata)
}

/// Errors if `path` exists and is not a regular file: a file to be written may be new, but
/// never a folder or a device.
pub(crate) fn check_replaceable(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(metadata) => check_regular(path, &metadata),
        Err(_) => Ok(()),
    }
}

fn check_regular(path: &Path, metadata: &fs::Metadata) -> Result<()> {
    if metadata.is_file() {
        return Ok(());
    }
    let source = if metadata.is_dir() {
        std::io::Error::new(ErrorKind::IsADirectory, "is a folder; expected a file")
    } else {
        std::io::Error::new(
            ErrorKind::InvalidInput,
            "is not a regular file (a device, pipe or socket); expected a file",
        )
    };
    Err(Error::io(path, source))
}

/// The length of the random part of a temporary's name.
const RANDOM_CHARS: usize = 6;

/// Removes the temporaries of the target `name` in `folder` whose writer process is gone.
/// Failures only cost disk space, so they are logged, not returned.
fn remove_stale_temporaries(folder: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(writer) = file_name.to_str().and_then(|f| temporary_writer(f, name)) else {
            continue;
        };
        if !writer_is_gone(writer) {
            continue;
        }
        let stale = entry.path();
        match fs::remove_file(&stale) {
            Ok(()) => log::info!(
                "flow-rl: removed {} left by process {writer}, which no longer runs",
                stale.display()
            ),
            Err(err) => log::warn!("flow-rl: could not remove {}: {err}", stale.display()),
        }
    }
}

/// The writer's process id if `file_name` is a temporary of the target `name`: either
/// `.{name}.{pid}.{random}.tmp`, or `.{name}.tmp-{pid}` of earlier versions of this crate.
fn temporary_writer(file_name: &str, name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?.strip_prefix(name)?;
    let pid = match rest.strip_prefix(".tmp-") {
        Some(old_style) => old_style,
        None => {
            let (pid, random) = rest
                .strip_prefix('.')?
                .strip_suffix(".tmp")?
                .split_once('.')?;
            let is_random =
                random.len() == RANDOM_CHARS && random.chars().all(|c| c.is_ascii_alphanumeric());
            if !is_random {
                return None;
            }
            pid
        }
    };
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` has ended, as far as this platform can tell: on Linux, it has no
/// `/proc` entry. Elsewhere (or without a mounted `/proc`) every writer counts as alive, so
/// nothing is removed.
#[cfg(target_os = "linux")]
fn writer_is_gone(pid: u32) -> bool {
    let proc = Path::new("/proc");
    pid != std::process::id() && proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

#[cfg(not(target_os = "linux"))]
fn writer_is_gone(_pid: u32) -> bool {
    false
}

/// Syncs the folder so the rename itself survives a power loss. Best effort: not every
/// platform can open a folder.
fn sync_folder(folder: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = fs::File::open(folder) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = folder;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Larger than Linux's largest possible pid (2^22), so no process has it.
    const DEAD_PID: u32 = 4_000_000_000;

    fn names_in(folder: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_replace_the_target_and_leave_no_temporary() {
        let folder = tempfile::tempdir().unwrap();
        let target = folder.path().join("state.ckpt");
        write_atomically(&target, b"first").unwrap();
        write_atomically(&target, b"second").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"second");
        assert_eq!(names_in(folder.path()), vec!["state.ckpt"]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stale_temporaries_of_the_target_are_removed_and_live_ones_kept() {
        let folder = tempfile::tempdir().unwrap();
        let own = std::process::id();
        let files = [
            format!(".state.ckpt.{DEAD_PID}.a1B2c3.tmp"), // stale: removed
            format!(".state.ckpt.tmp-{DEAD_PID}"),        // stale, old naming: removed
            format!(".state.ckpt.{own}.Zz9yX8.tmp"),      // a live writer's: kept
            format!(".other.ckpt.{DEAD_PID}.a1B2c3.tmp"), // another target's: kept
            format!(".state.ckpt.1.{DEAD_PID}.a1B2c3.tmp"), // target `state.ckpt.1`: kept
            format!(".state.ckpt.{DEAD_PID}.notes"),      // not a temporary: kept
        ];
        for file in &files {
            fs::write(folder.path().join(file), b"partial").unwrap();
        }
        write_atomically(&folder.path().join("state.ckpt"), b"new").unwrap();
        let mut expected: Vec<String> = files[2..].to_vec();
        expected.push("state.ckpt".into());
        expected.sort();
        assert_eq!(names_in(folder.path()), expected);
    }

    #[test]
    fn temporary_names_are_recognised_only_for_their_target() {
        assert_eq!(temporary_writer(".a.12.abcdef.tmp", "a"), Some(12));
        assert_eq!(temporary_writer(".a.tmp-12", "a"), Some(12));
        assert_eq!(temporary_writer(".a.b.12.abcdef.tmp", "a"), None);
        assert_eq!(temporary_writer(".a.+12.abcdef.tmp", "a"), None);
        assert_eq!(temporary_writer(".a.12.abc.tmp", "a"), None);
        assert_eq!(temporary_writer(".ab.12.abcdef.tmp", "a"), None);
        assert_eq!(temporary_writer("a.12.abcdef.tmp", "a"), None);
    }

    #[test]
    fn a_folder_or_a_device_is_named_as_such() {
        let folder = tempfile::tempdir().unwrap();
        let err = read_regular_file(folder.path()).unwrap_err();
        assert!(err.to_string().contains("is a folder"), "{err}");
        let err = write_atomically(folder.path(), b"x").unwrap_err();
        assert!(err.to_string().contains("is a folder"), "{err}");
        #[cfg(unix)]
        {
            let err = read_regular_file(Path::new("/dev/null")).unwrap_err();
            assert!(err.to_string().contains("is not a regular file"), "{err}");
            let err = write_atomically(Path::new("/dev/null"), b"x").unwrap_err();
            assert!(err.to_string().contains("is not a regular file"), "{err}");
        }
        let missing = folder.path().join("absent");
        let err = read_regular_file(&missing).unwrap_err();
        assert!(
            matches!(&err, Error::Io { source, .. } if source.kind() == ErrorKind::NotFound),
            "{err:?}"
        );
    }
}
