//! `ClipImageProcessor` against transformers' `CLIPImageProcessorPil` (PIL's bicubic, the
//! same pixels as OpenCLIP's validation transform) and its default torchvision backend, on the
//! images of scripts/clip_preprocess_fixture.py: gradients with hard edges, stripes and
//! checkerboards, blurred blobs with noise, uniform noise, a 32² tile; square, landscape and
//! portrait (an odd crop margin), shrunk and enlarged.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use flow_rl::models::clip::ClipImageProcessor;
use image::RgbImage;

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clip_preprocess")
        .join(relative)
}

fn png(relative: &str) -> RgbImage {
    image::open(fixture(relative)).unwrap().to_rgb8()
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn names() -> Vec<String> {
    let expected = expected();
    let names: Vec<String> = expected["images"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(names.len(), 5);
    names
}

/// The largest per-channel difference in 8-bit levels.
fn max_levels(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap()
}

#[test]
fn resize_and_crop_equal_pil_and_open_clip_exactly() {
    let processor = ClipImageProcessor::new();
    for name in names() {
        let ours = processor.resize_and_crop(&png(&format!("inputs/{name}.png")));
        let theirs = png(&format!("pil/{name}.png"));
        assert_eq!(max_levels(&ours, &theirs), 0, "{name}");
    }
}

#[test]
fn resize_and_crop_are_within_one_level_of_the_torchvision_backend() {
    let processor = ClipImageProcessor::new();
    for name in names() {
        let ours = processor.resize_and_crop(&png(&format!("inputs/{name}.png")));
        let theirs = png(&format!("torchvision/{name}.png"));
        let levels = max_levels(&ours, &theirs);
        eprintln!("{name}: {levels} levels from torchvision's bicubic");
        assert!(levels <= 1, "{name}: {levels}");
    }
}

#[test]
fn the_normalised_pixels_equal_the_pil_processor() {
    let processor = ClipImageProcessor::new();
    let expected = expected();
    let names = names();
    let images: Vec<RgbImage> = names
        .iter()
        .map(|name| png(&format!("inputs/{name}.png")))
        .collect();
    let pixels = processor.preprocess(&images, &Device::default()).unwrap();
    assert_eq!(pixels.dims(), [5, 3, 224, 224]);
    let values = pixels.into_data().try_to_vec::<f32>().unwrap();
    let mut worst = 0f32;
    for (index, name) in names.iter().enumerate() {
        let record = &expected["images"][name];
        let top = record["patch_top_left"][0].as_u64().unwrap() as usize;
        let left = record["patch_top_left"][1].as_u64().unwrap() as usize;
        let patch = record["normalised_patch"].as_array().unwrap();
        for (channel, rows) in patch.iter().enumerate() {
            for (row, columns) in rows.as_array().unwrap().iter().enumerate() {
                for (column, value) in columns.as_array().unwrap().iter().enumerate() {
                    let at = ((index * 3 + channel) * 224 + top + row) * 224 + left + column;
                    worst = worst.max((values[at] - value.as_f64().unwrap() as f32).abs());
                }
            }
        }
    }
    eprintln!("normalised pixels: {worst:e} from transformers (PIL backend)");
    assert!(worst < 1e-5, "{worst:e}");
}
