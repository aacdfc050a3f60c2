"""Golden values for the SD3 VAE decoder (tests/vae.rs), from diffusers' AutoencoderKL.

A tiny AutoencoderKL with SD3's layout (16 latent channels, no quant/post-quant convs,
SD3's scaling and shift) gets every parameter randomised, norms included, and is saved as
  tests/fixtures/vae/diffusers/          a diffusers `vae/` folder (config.json + weights)
  tests/fixtures/vae/single.safetensors  ldm keys under `first_stage_model.` (encoder too),
                                         plus a stray `model.diffusion_model.x` to ignore
  tests/fixtures/vae/expected.safetensors  latents [3, 16, 3, 5], decoded pixels (clamped)
                                           and the u8 images [3, H, W, 3]
Run with the peer venv: /work/peer-venv/bin/python scripts/vae_fixture.py
"""

import json
import os

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vae")
BLOCKS = [4, 8, 8]
SCALING, SHIFT = 1.5305, 0.0609


def ldm_key(key):
    """diffusers decoder/encoder key -> ldm (SD3.5 single-file) key."""
    n = len(BLOCKS)
    parts = key.split(".")
    if parts[0] == "decoder":
        rest = ".".join(parts[1:])
        rest = rest.replace("conv_norm_out", "norm_out")
        rest = rest.replace("mid_block.resnets.0", "mid.block_1")
        rest = rest.replace("mid_block.resnets.1", "mid.block_2")
        rest = rest.replace("mid_block.attentions.0.group_norm", "mid.attn_1.norm")
        for ours, theirs in [("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]:
            rest = rest.replace(f"mid_block.attentions.0.{ours}", f"mid.attn_1.{theirs}")
        if rest.startswith("up_blocks."):
            p = rest.split(".")
            i = int(p[1])
            level = n - 1 - i
            if p[2] == "resnets":
                rest = f"up.{level}.block.{p[3]}." + ".".join(p[4:])
            else:  # upsamplers.0.conv.*
                rest = f"up.{level}.upsample." + ".".join(p[4:])
        rest = rest.replace("conv_shortcut", "nin_shortcut")
        return "decoder." + rest
    # The encoder's keys only need to be present (and ignored); keep diffusers' names.
    return key


def main():
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(BLOCKS),
        up_block_types=["UpDecoderBlock2D"] * len(BLOCKS),
        block_out_channels=BLOCKS,
        layers_per_block=2,
        latent_channels=16,
        norm_num_groups=2,
        scaling_factor=SCALING,
        shift_factor=SHIFT,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn_like(p) / fan_in**0.5)
    os.makedirs(OUT, exist_ok=True)
    vae.save_pretrained(os.path.join(OUT, "diffusers"), safe_serialization=True)

    single = {}
    for key, tensor in vae.state_dict().items():
        new = ldm_key(key)
        if ".mid.attn_1." in new and new.endswith(".weight") and ".norm." not in new:
            tensor = tensor.reshape(*tensor.shape, 1, 1)  # ldm's 1x1 convs
        single["first_stage_model." + new] = tensor.contiguous()
    single["model.diffusion_model.x"] = torch.zeros(2, 3)
    save_file(single, os.path.join(OUT, "single.safetensors"))

    latents = torch.randn(3, 16, 3, 5)
    with torch.no_grad():
        pixels = vae.decode(latents / SCALING + SHIFT).sample.clamp(-1, 1)
    images = ((pixels * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    save_file(
        {"latents": latents, "pixels": pixels.contiguous(), "images": images.contiguous()},
        os.path.join(OUT, "expected.safetensors"),
    )
    print(json.dumps({"pixels": list(pixels.shape), "params": sum(p.numel() for p in vae.parameters())}))


if __name__ == "__main__":
    main()
