"""Golden values for `ClipImageProcessor` (src/models/clip/preprocess.rs, tested in
tests/clip_preprocess.rs), from transformers' two CLIP image processors and OpenCLIP's
validation transform.

Writes tests/fixtures/clip_preprocess/:
  inputs/NAME.png        8-bit RGB test images, made here from a fixed seed: a smooth
                         gradient with hard edges (512², SD3.5's size), stripes and a
                         checkerboard (300×200, landscape), blurred blobs with mild noise
                         (200×333, portrait with an odd crop margin), uniform noise (96², an
                         upscale) and a 32² tile;
  pil/NAME.png           the 224² pixels after resize and crop of `CLIPImageProcessorPil`
                         (PIL's bicubic), recovered exactly from its normalised output;
  torchvision/NAME.png   the same from `CLIPImageProcessor` (transformers' default backend,
                         torchvision's antialiased bicubic on uint8 tensors);
  expected.json          the pixel differences between the two backends and against
                         OpenCLIP's transform (`open_clip.image_transform`, not a model),
                         and a 16×16 patch per channel of the PIL processor's normalised
                         output for each image (the normalisation check).

Run with the peer venv (needs torchvision and open_clip_torch):
    /work/peer-venv/bin/python scripts/clip_preprocess_fixture.py
"""

import json
import os

import numpy as np
from PIL import Image, ImageFilter
from transformers import CLIPImageProcessor, CLIPImageProcessorPil

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "clip_preprocess")
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
PATCH = 16


def test_images(rng):
    """name -> HxWx3 uint8 array."""
    images = {}
    y, x = np.mgrid[0:512, 0:512].astype(np.float32)
    gradient = np.stack([x / 511 * 255, y / 511 * 255, (x + y) / 1022 * 255], axis=-1)
    gradient[180:330, 140:380] = [250, 20, 40]  # a hard-edged block
    gradient[::64, :] = 0  # thin lines
    images["gradient_512"] = gradient.round().clip(0, 255).astype(np.uint8)

    y, x = np.mgrid[0:200, 0:300]
    stripes = ((x // 3) % 2 * 255).astype(np.uint8)
    checker = (((x // 17) + (y // 17)) % 2 * 255).astype(np.uint8)
    diagonal = (((x + y) // 5) % 2 * 200 + 30).astype(np.uint8)
    images["edges_300x200"] = np.stack([stripes, checker, diagonal], axis=-1)

    blobs = Image.fromarray(rng.integers(0, 256, size=(333 // 8 + 1, 200 // 8 + 1, 3), dtype=np.uint8))
    blobs = blobs.resize((200, 333), Image.NEAREST).filter(ImageFilter.GaussianBlur(6))
    photo = np.asarray(blobs).astype(np.int16) + rng.integers(-12, 13, size=(333, 200, 3))
    images["photo_200x333"] = photo.clip(0, 255).astype(np.uint8)

    images["noise_96"] = rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    images["tile_32"] = np.asarray(
        Image.fromarray(images["gradient_512"][160:352, 120:312]).resize((32, 32), Image.NEAREST)
    )
    return images


def to_u8(normalised):
    """[3, H, W] normalised floats -> HxWx3 uint8 (exact: the rounding error is far below 0.5)."""
    pixels = (normalised.transpose(1, 2, 0) * STD + MEAN) * 255
    assert np.abs(pixels - pixels.round()).max() < 1e-2, "not 8-bit pixels"
    return pixels.round().astype(np.uint8)


def main():
    rng = np.random.default_rng(0)
    for folder in ["inputs", "pil", "torchvision"]:
        os.makedirs(os.path.join(OUT, folder), exist_ok=True)
    pil_processor = CLIPImageProcessorPil()
    torchvision_processor = CLIPImageProcessor()
    import open_clip

    open_clip_transform = open_clip.image_transform(224, is_train=False)

    report = {"images": {}}
    for name, array in test_images(rng).items():
        image = Image.fromarray(array)
        image.save(os.path.join(OUT, "inputs", f"{name}.png"))
        pil = pil_processor(images=image, return_tensors="np")["pixel_values"][0]
        torchvision = torchvision_processor(images=image, return_tensors="pt")["pixel_values"][0].numpy()
        open_clip_pixels = open_clip_transform(image).numpy()
        pil_u8, torchvision_u8 = to_u8(pil), to_u8(torchvision)
        Image.fromarray(pil_u8).save(os.path.join(OUT, "pil", f"{name}.png"))
        Image.fromarray(torchvision_u8).save(os.path.join(OUT, "torchvision", f"{name}.png"))
        levels = np.abs(pil_u8.astype(np.int16) - torchvision_u8.astype(np.int16))
        top = (pil.shape[1] - PATCH) // 2
        report["images"][name] = {
            "size": [array.shape[1], array.shape[0]],
            "pil_vs_torchvision_max_levels": int(levels.max()),
            "pil_vs_torchvision_mean_levels": float(levels.mean()),
            "pil_vs_torchvision_max_normalised": float(np.abs(pil - torchvision).max()),
            "pil_vs_open_clip_max_normalised": float(np.abs(pil - open_clip_pixels).max()),
            "patch_top_left": [top, top],
            "normalised_patch": pil[:, top : top + PATCH, top : top + PATCH].round(7).tolist(),
        }
        print(name, {k: v for k, v in report["images"][name].items() if k != "normalised_patch"})
    import transformers
    import torchvision as tv
    import PIL

    report["versions"] = {
        "transformers": transformers.__version__,
        "torchvision": tv.__version__,
        "pillow": PIL.__version__,
        "open_clip": open_clip.__version__,
    }
    with open(os.path.join(OUT, "expected.json"), "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main()
