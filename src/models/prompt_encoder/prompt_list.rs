//! Prompt lists: one prompt per line, or a JSON array of strings.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::check_regular_file;

/// Reads a prompt list: a JSON array of strings (a file ending in `.json`), or one prompt per
/// line otherwise (line ends `\n` or `\r\n`; blank lines are skipped, with a `log` warning
/// counting them, since an empty prompt in a line file is more likely a stray newline than
/// intended; put `""` in a JSON list to encode the empty prompt).
///
/// Fails with [`Error::Io`] on a missing file, and with [`Error::InvalidArgument`] naming the
/// file on text that is not UTF-8, JSON that is not an array of strings, or no prompts.
pub fn read_prompt_list(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    check_regular_file(path)?;
    let invalid = |expected: String| Error::invalid("prompt list", path.display(), expected);
    let bytes = std::fs::read(path).map_err(|err| Error::io(path, err))?;
    let text = String::from_utf8(bytes).map_err(|err| {
        invalid(format!(
            "UTF-8 text (invalid byte at offset {})",
            err.utf8_error().valid_up_to()
        ))
    })?;
    let prompts = if path.extension().is_some_and(|ext| ext == "json") {
        serde_json::from_str::<Vec<String>>(&text)
            .map_err(|err| invalid(format!("a JSON array of strings ({err})")))?
    } else {
        let lines: Vec<&str> = text.lines().collect();
        let prompts: Vec<String> = lines
            .iter()
            .filter(|line| !line.trim().is_empty())
            .map(|line| line.to_string())
            .collect();
        let blank = lines.len() - prompts.len();
        if blank > 0 {
            log::warn!("{}: skipped {blank} blank lines", path.display());
        }
        prompts
    };
    if prompts.is_empty() {
        return Err(invalid("at least one prompt".to_owned()));
    }
    Ok(prompts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, contents: &[u8]) -> Result<Vec<String>> {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join(name);
        std::fs::write(&path, contents).unwrap();
        read_prompt_list(&path)
    }

    #[test]
    fn prompt_lists_are_read_from_lines_and_from_json() {
        let lines = read("prompts.txt", b"a cat\r\n\n  \ntwo dogs\n").unwrap();
        assert_eq!(lines, ["a cat", "two dogs"]);
        let json = read("prompts.json", "[\"\", \"caf\u{e9}\"]".as_bytes()).unwrap();
        assert_eq!(json, ["", "café"]);
    }

    #[test]
    fn bad_prompt_lists_get_named_errors() {
        for (name, contents, expected) in [
            ("empty.txt", &b"\n\n"[..], "at least one prompt"),
            ("empty.json", b"[]", "at least one prompt"),
            ("latin1.txt", b"caf\xe9\n", "UTF-8"),
            ("object.json", b"{\"a\": 1}", "JSON array of strings"),
        ] {
            let error = read(name, contents).unwrap_err();
            assert!(
                matches!(&error, Error::InvalidArgument { name, .. } if name == "prompt list"),
                "{error}"
            );
            assert!(error.to_string().contains(expected), "{name}: {error}");
        }
        let missing = read_prompt_list("/nonexistent/prompts.txt").unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
    }
}
