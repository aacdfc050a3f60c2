//! The tiny CLIP-L, CLIP-G and T5 fixtures (tests/fixtures/clip, tests/fixtures/t5) laid out
//! as the text-encoder part of a diffusers SD3 folder. Included with `#[path]` by the tests
//! and the example tests that need one, so the layout is written once.

use std::path::Path;

/// Copies every file of `from` into `to`, creating it.
pub fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Writes `text_encoder*/`, `tokenizer/`, `tokenizer_2/` and `tokenizer_3/tokenizer.json`
/// of the fixtures under `root`.
pub fn write_text_encoders(root: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (from, to) in [
        ("clip/clip_l/text_encoder", "text_encoder"),
        ("clip/clip_l/tokenizer", "tokenizer"),
        ("clip/clip_g/text_encoder_2", "text_encoder_2"),
        ("clip/clip_g/tokenizer_2", "tokenizer_2"),
        ("t5/text_encoder_3", "text_encoder_3"),
    ] {
        copy_folder(&fixtures.join(from), &root.join(to));
    }
    std::fs::create_dir_all(root.join("tokenizer_3")).unwrap();
    std::fs::copy(
        fixtures.join("t5/tokenizer.json"),
        root.join("tokenizer_3/tokenizer.json"),
    )
    .unwrap();
}
