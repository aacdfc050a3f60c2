"""Golden fixtures for flow-rl's whole CLIP models (tests/clip_model.rs).

Builds two tiny CLIP models, every parameter drawn at random (LayerNorm gains and biases,
biases, the class embedding, the positional tables, the logit scale included):

- one with transformers' `CLIPModel` (QuickGELU in both towers, the legacy `eos_token_id = 2`
  highest-id pooling, like OpenAI's ViT-L/14 and PickScore), saved as a transformers folder
  (`hf/config.json`, `hf/model.safetensors`), and its vision tower alone
  (`vision_only.safetensors`: `vision_model.*` and `visual_projection.weight`, as
  `CLIPVisionModelWithProjection` saves them) for the bad-input tests;
- one with open_clip's own `CLIP` class (exact GELU, argmax pooling, like ViT-H/14 and
  HPSv2), saved from its `state_dict()` as `open_clip.safetensors` and, as HPSv2 ships its
  checkpoints, as torch pickles holding `{"state_dict": ..., "epoch": ...}`: `open_clip.pt`
  in f32 and `open_clip_f16.pt` in f16 (as HPSv2's `*_compressed.pt`).

The two have different widths and head counts, so that neither test passes by the other's
shapes. Both take 32 × 32 images in patches of 8 and the token ids of `PROMPTS` from the
CLIP-L fixture tokenizer (tests/fixtures/clip/clip_l/tokenizer, padded to 77 with
<|endoftext|>). Writes `pixels.safetensors` (a handful of preprocessed pixel tensors, random
and structured, `[5, 3, 32, 32]`, and `input_ids` `[4, 77]`) and `expected_hf.safetensors`,
`expected_open_clip.safetensors` with each library's outputs: `image_embeds` (projected, not
normalised), `text_embeds`, `logit_scale` (the exponential, `[1]`), `logits_per_image`
(`logit_scale · cos`), and for transformers also the vision tower's `pooled` class token. All
in f32, under tests/fixtures/clip_model/.

Run: /work/peer-venv/bin/python scripts/clip_model_fixture.py
(open_clip needs torchvision; with torch 2.15 `pip install --no-deps torchvision==0.29.2`
imports and builds the model, which is all this script asks of it.)
"""

import math
import pathlib

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "clip_model"
TOKENIZER = ROOT / "tests" / "fixtures" / "clip" / "clip_l" / "tokenizer"
MAX_LENGTH = 77
IMAGE_SIZE = 32
PATCH = 8

PROMPTS = [
    "a photo of a cat",
    "",
    "a futuristic city with flying cars, neon lights, rain, night, cinematic photo",
    "astronaut riding a horse on the moon",
]


def randomise(model, seed):
    """Every parameter random: LayerNorm gains near 1, everything else of std 0.4, the log
    logit scale in [2, 3] (a scale between 7 and 20)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("logit_scale"):
                param.copy_(2.0 + torch.rand_like(param))
            elif param.dim() == 1 and any(
                norm in name for norm in ("layer_norm", "layrnorm", "layernorm", "ln_")
            ) and name.endswith("weight"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
            else:
                param.copy_(0.4 * torch.randn_like(param))
    return model.eval()


def pixels():
    """Five preprocessed images: two of random normal values, a diagonal colour gradient,
    sharp edges (a checkerboard of ±2) and one constant image."""
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 1.5
    ramp = torch.linspace(-1.8, 2.1, IMAGE_SIZE)
    gradient = torch.stack(
        [ramp[:, None] + 0 * ramp[None, :], ramp[None, :] + 0 * ramp[:, None],
         (ramp[:, None] + ramp[None, :]) / 2]
    )
    squares = (torch.arange(IMAGE_SIZE) // 4) % 2
    board = (squares[:, None] ^ squares[None, :]).float() * 4.0 - 2.0
    edges = torch.stack([board, -board, board.flip(0)])
    constant = torch.full((3, IMAGE_SIZE, IMAGE_SIZE), 0.25)
    return torch.cat([noise, gradient[None], edges[None], constant[None]]).contiguous()


def token_ids():
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
    return tokenizer(
        PROMPTS, padding="max_length", max_length=MAX_LENGTH, truncation=True,
        return_tensors="pt",
    ).input_ids, len(tokenizer)


def logits(image_embeds, text_embeds, scale):
    images = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    texts = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    return scale * images @ texts.T


def transformers_model(vocab_size, px, ids):
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=24, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=MAX_LENGTH, hidden_act="quick_gelu",
            bos_token_id=vocab_size - 2, eos_token_id=2, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=PATCH, hidden_act="quick_gelu",
        ),
        projection_dim=12,
    )
    model = randomise(CLIPModel(config), seed=11)
    folder = OUT / "hf"
    folder.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(folder / "config.json")
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    vision_only = {
        key: value for key, value in state.items()
        if key.startswith("vision_model.") or key == "visual_projection.weight"
    }
    save_file(vision_only, OUT / "vision_only.safetensors")
    with torch.no_grad():
        vision = model.vision_model(pixel_values=px)
        image_embeds = model.visual_projection(vision.pooler_output)
        text_embeds = model.text_projection(model.text_model(input_ids=ids).pooler_output)
        out = model(input_ids=ids, pixel_values=px)
        scale = model.logit_scale.exp()
    # The forward's normalised embeddings and logits agree with the projected ones above.
    assert torch.allclose(out.logits_per_image, logits(image_embeds, text_embeds, scale),
                          rtol=1e-5, atol=1e-5)
    return {
        "pooled": vision.pooler_output,
        "image_embeds": image_embeds,
        "text_embeds": text_embeds,
        "logit_scale": scale.reshape(1),
        "logits_per_image": out.logits_per_image,
    }


def open_clip_model(vocab_size, px, ids):
    model = CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(
            layers=2, width=40, head_width=10, mlp_ratio=3.0, patch_size=PATCH,
            image_size=IMAGE_SIZE,
        ),
        text_cfg=CLIPTextCfg(
            context_length=MAX_LENGTH, vocab_size=vocab_size, width=20, heads=4, layers=2,
            mlp_ratio=4.0,
        ),
        quick_gelu=False,
    )
    model = randomise(model, seed=12)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, OUT / "open_clip.safetensors")
    torch.save({"epoch": 1, "state_dict": state}, OUT / "open_clip.pt")
    # HPSv2's released `*_compressed.pt` files hold the state dict in f16.
    half = {key: value.half() for key, value in state.items()}
    torch.save({"epoch": 1, "state_dict": half}, OUT / "open_clip_f16.pt")
    with torch.no_grad():
        image_embeds = model.encode_image(px)
        text_embeds = model.encode_text(ids)
        image_features, text_features, scale = model(px, ids)
        reference = scale * image_features @ text_features.T
    assert torch.allclose(reference, logits(image_embeds, text_embeds, scale),
                          rtol=1e-5, atol=1e-5)
    return {
        "image_embeds": image_embeds,
        "text_embeds": text_embeds,
        "logit_scale": scale.reshape(1),
        "logits_per_image": reference,
    }


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    px = pixels()
    ids, vocab_size = token_ids()
    save_file({"pixels": px, "input_ids": ids.to(torch.int64).contiguous()},
              OUT / "pixels.safetensors")
    for name, build in [("hf", transformers_model), ("open_clip", open_clip_model)]:
        expected = build(vocab_size, px, ids)
        expected = {key: value.float().contiguous() for key, value in expected.items()}
        save_file(expected, OUT / f"expected_{name}.safetensors")
        print(name, {key: tuple(value.shape) for key, value in expected.items()},
              "logit scale", float(expected["logit_scale"][0]),
              "(log", math.log(float(expected["logit_scale"][0])), ")")
    total = sum(path.stat().st_size for path in OUT.rglob("*") if path.is_file())
    print(f"wrote {OUT} ({total} bytes), open_clip {open_clip.__version__}")
    assert total < 2_000_000


if __name__ == "__main__":
    main()
