#!/usr/bin/env python3
"""transformers peer of ``examples/clip_reward_bench.rs``: PickScore of images and prompts,
timed, as flow_grpo's ``pickscore_scorer.py`` computes it.

``--write FOLDER --config tiny|mid|vit-h14``
    Writes a transformers ``CLIPModel`` folder with random weights (seeded) and the CLIP BPE
    tokenizer of the committed fixture (tests/fixtures/clip/clip_l/tokenizer; its 634 tokens
    fit every configuration's vocabulary). All take 224² images in patches:

    * ``tiny``: vision width 64, 2 layers, 4 heads, patch 32; text width 32, 2 layers,
      projection 32;
    * ``mid``: ViT-B/16's shapes: vision width 768, 12 layers, 12 heads, patch 16; text width
      512, 12 layers, 8 heads; projection 512;
    * ``vit-h14``: PickScore_v1's (laion CLIP-ViT-H-14): vision width 1280, 32 layers, 16
      heads, patch 14; text width 1024, 24 layers, 16 heads; projection 1024 (3.9 GB in f32).

``--write-images DIR --images N``
    N seeded 512² RGB PNGs (smooth gradients with blocks, stripes and noise, as SD3.5 images
    are 512²) and ``prompts.txt`` with one prompt per image.

``--bench FOLDER --images-dir DIR --batch-size B [--threads 2] [--save FILE]``
    Loads the model, preprocesses with ``CLIPImageProcessorPil`` (PIL's bicubic, flow_grpo's
    path in the transformers versions it pinned) and scores in passes of B images:
    ``logit_scale · cos(image, text) / 26``. One untimed warm-up pass, then ``--repeats``
    timed runs over all images (preprocessing, both towers and the score; the text
    embeddings are recomputed each run, as flow_grpo's scorer does). Prints images/s and the
    peak RSS, then a JSON line (``json: ``); ``--save`` writes the scores for
    ``clip_reward_bench --compare``.

Use::

    PY=/work/peer-venv/bin/python
    $PY scripts/clip_reward_peer_bench.py --write /tmp/clip-mid --config mid
    $PY scripts/clip_reward_peer_bench.py --write-images /tmp/clip-images --images 32
    $PY scripts/clip_reward_peer_bench.py --bench /tmp/clip-mid --images-dir /tmp/clip-images \\
        --batch-size 16 --save /tmp/clip-mid.scores.json
    RAYON_NUM_THREADS=2 target/release/examples/clip_reward_bench --model /tmp/clip-mid \\
        --tokenizer /tmp/clip-mid --images-dir /tmp/clip-images --batch-size 16 \\
        --compare /tmp/clip-mid.scores.json
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "fixtures" / "clip" / "clip_l" / "tokenizer"
PICKSCORE_DIVISOR = 26.0

CONFIGS = {
    "tiny": dict(vision=(64, 2, 4, 256, 32), text=(32, 2, 2, 128), projection=32),
    "mid": dict(vision=(768, 12, 12, 3072, 16), text=(512, 12, 8, 2048), projection=512),
    "vit-h14": dict(vision=(1280, 32, 16, 5120, 14), text=(1024, 24, 16, 4096), projection=1024),
}
WORDS = ["a", "red", "cube", "two", "blue", "spheres", "cat", "on", "the", "table", "photo", "of",
         "green", "dog", "three", "small", "birds", "sky", "painting", "city", "night"]


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_model(folder, name):
    from transformers import CLIPConfig, CLIPModel

    shapes = CONFIGS[name]
    width, layers, heads, mlp, patch = shapes["vision"]
    text_width, text_layers, text_heads, text_mlp = shapes["text"]
    config = CLIPConfig(
        text_config=dict(hidden_size=text_width, num_hidden_layers=text_layers,
                         num_attention_heads=text_heads, intermediate_size=text_mlp,
                         vocab_size=49408, max_position_embeddings=77, hidden_act="gelu",
                         bos_token_id=632, eos_token_id=633, pad_token_id=633),  # the fixture tokenizer's ids
        vision_config=dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=mlp, image_size=224, patch_size=patch,
                           hidden_act="gelu"),
        projection_dim=shapes["projection"],
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(np.log(100.0))
    model.save_pretrained(folder)
    for file in TOKENIZER.iterdir():
        shutil.copy(file, pathlib.Path(folder) / file.name)
    print(f"wrote {name} to {folder}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


def write_images(folder, count):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:512, 0:512].astype(np.float32)
    prompts = []
    for index in range(count):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        image = np.stack([127 + 120 * np.sin(x / (40 + 10 * c) + phase[c] + y / 97) for c in range(3)], -1)
        top, left = rng.integers(0, 384, size=2)
        image[top:top + 128, left:left + 128] = rng.integers(0, 256, size=3)
        image[:, ::(5 + index % 7)] *= 0.6
        image += rng.normal(0, 8, size=image.shape)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{index:04d}.png")
        prompts.append(" ".join(rng.choice(WORDS, size=3 + index % 9)))
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    print(f"wrote {count} images and prompts to {folder}")


def bench(args):
    from PIL import Image
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    torch.set_num_threads(args.threads)
    rss_start = peak_rss_gib()
    start = time.perf_counter()
    model = CLIPModel.from_pretrained(args.bench).eval()
    tokenizer = CLIPTokenizer.from_pretrained(args.bench)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    load_s = time.perf_counter() - start
    folder = pathlib.Path(args.images_dir)
    prompts = (folder / "prompts.txt").read_text().splitlines()
    images = [Image.open(folder / f"{index:04d}.png").convert("RGB") for index in range(len(prompts))]

    @torch.no_grad()
    def score(batch_images, batch_prompts):
        pixels = processor(images=batch_images, return_tensors="pt")["pixel_values"]
        text = tokenizer(batch_prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        # get_image_features / get_text_features spelled out: transformers 5 returns output
        # objects from them.
        image_embeds = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        image_embeds = image_embeds / image_embeds.norm(p=2, dim=-1, keepdim=True)
        text_embeds = model.text_projection(model.text_model(**text).pooler_output)
        text_embeds = text_embeds / text_embeds.norm(p=2, dim=-1, keepdim=True)
        return (model.logit_scale.exp() * (text_embeds * image_embeds).sum(-1) / PICKSCORE_DIVISOR).tolist()

    def run():
        scores = []
        for first in range(0, len(images), args.batch_size):
            scores += score(images[first:first + args.batch_size], prompts[first:first + args.batch_size])
        return scores

    score(images[: args.batch_size], prompts[: args.batch_size])
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        scores = run()
        times.append(time.perf_counter() - start)
    best = min(times)
    print(f"transformers: {len(images)} images in {best:.2f} s ({len(images) / best:.2f} images/s), "
          f"load {load_s:.1f} s, peak RSS {peak_rss_gib():.2f} GiB (at start {rss_start:.2f})")
    if args.save:
        pathlib.Path(args.save).write_text(json.dumps(scores))
    print("json: " + json.dumps(dict(images=len(images), seconds=best, images_per_s=len(images) / best,
                                     load_s=load_s, peak_rss_gib=peak_rss_gib(), threads=args.threads,
                                     torch=torch.__version__, loadavg=os.getloadavg()[0])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument("--write-images")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--bench")
    parser.add_argument("--images-dir")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--save")
    args = parser.parse_args()
    if args.write:
        write_model(args.write, args.config)
    elif args.write_images:
        write_images(args.write_images, args.images)
    elif args.bench:
        bench(args)
    else:
        parser.error("one of --write, --write-images, --bench")


if __name__ == "__main__":
    main()
