"""Golden values for the in-process CLIP rewards (src/reward/preference.rs, aesthetic.rs;
tested in tests/clip_rewards.rs), end to end from 8-bit images and prompts.

It reuses the tiny random CLIP models of scripts/clip_model_fixture.py (tests/fixtures/
clip_model: a transformers `CLIPModel` in `hf/` and an open_clip `CLIP` in
`open_clip.safetensors`, both on 32² images) and the test images of
scripts/clip_preprocess_fixture.py (tests/fixtures/clip_preprocess/inputs: 512², 300×200,
200×333, 96², 32²), and computes, as flow_grpo's scorers do:
  pickscore  logit_scale · cos / 26   transformers, CLIPImageProcessorPil (PIL bicubic) at 32
  clipscore  logit_scale · cos / 30   the same model (flow_grpo's clip_scorer divides by 30)
  hpsv2      cos                      open_clip, its own `image_transform(32)` (HPSv2's path)
  aesthetic  MLP(normalised image features) with a random head of the published layout at
             input width 12 (the hf model's projection), saved as `aesthetic.pth`
Prompts are tokenised with the fixture's CLIP tokenizer (tests/fixtures/clip/clip_l/tokenizer)
padded to 77. Writes tests/fixtures/clip_rewards/{aesthetic.pth, expected.json}.
Run with the peer venv: /work/peer-venv/bin/python scripts/clip_reward_fixture.py
"""

import json
import pathlib

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "clip_rewards"
IMAGES = ["gradient_512", "edges_300x200", "photo_200x333", "noise_96", "tile_32"]
PROMPTS = [
    "a photo of a cat",
    "",
    "a futuristic city with flying cars, neon lights, rain, night, cinematic photo",
    "a photo of a cat",  # repeated: the reward's prompt cache must return the same row
    "two red circles and a blue square",
]


def normalised(features):
    return features / features.norm(dim=-1, keepdim=True)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    images = [Image.open(FIXTURES / "clip_preprocess" / "inputs" / f"{name}.png").convert("RGB") for name in IMAGES]
    tokenizer = CLIPTokenizer.from_pretrained(FIXTURES / "clip" / "clip_l" / "tokenizer")
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

    hf = CLIPModel.from_pretrained(FIXTURES / "clip_model" / "hf").eval()
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        # get_image_features / get_text_features, spelled out (transformers 5 returns an
        # output object from them).
        image_features = normalised(hf.visual_projection(hf.vision_model(pixel_values=pixels).pooler_output))
        text_features = normalised(hf.text_projection(hf.text_model(input_ids=ids).pooler_output))
        scale = hf.logit_scale.exp()
        cos = (image_features * text_features).sum(-1)
        pickscore = scale * cos / 26
        clipscore = scale * cos / 30

        torch.manual_seed(3)
        head = nn.Sequential(
            nn.Linear(12, 16), nn.Dropout(0.2), nn.Linear(16, 8), nn.Dropout(0.2),
            nn.Linear(8, 6), nn.Dropout(0.1), nn.Linear(6, 4), nn.Linear(4, 1),
        ).eval()
        for parameter in head.parameters():
            parameter.normal_(0.0, 0.6)
        torch.save({f"layers.{key}": value for key, value in head.state_dict().items()}, OUT / "aesthetic.pth")
        aesthetic = head(image_features).squeeze(1)

    # The open_clip model of scripts/clip_model_fixture.py, rebuilt and loaded.
    model = CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=2, width=40, head_width=10, mlp_ratio=3.0, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=len(tokenizer), width=20, heads=4, layers=2, mlp_ratio=4.0),
        quick_gelu=False,
    )
    model.load_state_dict(load_file(FIXTURES / "clip_model" / "open_clip.safetensors"))
    model.eval()
    transform = open_clip.image_transform(32, is_train=False)
    with torch.no_grad():
        open_pixels = torch.stack([transform(image) for image in images])
        features = model(open_pixels, ids)
        image_features, text_features = features[0], features[1]
        hpsv2 = (image_features * text_features).sum(-1)

    expected = {
        "images": IMAGES,
        "prompts": PROMPTS,
        "pickscore": pickscore.tolist(),
        "clipscore": clipscore.tolist(),
        "hpsv2": hpsv2.tolist(),
        "aesthetic": aesthetic.tolist(),
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1))
    print(json.dumps({key: value for key, value in expected.items() if key not in ("images", "prompts")}))


if __name__ == "__main__":
    main()
