#!/usr/bin/env python3
"""Reference fixture for flow-rl's SD3.5 MMDiT faithfulness test.

What it does
------------
Builds two tiny Stable Diffusion 3.5 transformers with diffusers'
``SD3Transformer2DModel`` (the reference implementation), fills every weight
with seeded random values that are exactly representable in bf16, and writes:

* ``<out>/{plain,dual}/official.safetensors``  - the Stability-AI single-file
  layout (``model.diffusion_model.*`` keys, bf16, plus one unrelated
  ``first_stage_model.*`` key as real single files carry the VAE too);
* ``<out>/{plain,dual}/diffusers/``            - ``save_pretrained`` output
  (bf16, sharded into >= 2 files, with index json and config.json);
* ``<out>/{plain,dual}/lora.safetensors``      - a peft LoRA adapter
  (r=4, alpha=8, bf16, keys prefixed ``transformer.``);
* ``<out>/prompts.safetensors``                - prompt embeddings in the crate's
  ``flow-rl/prompt-embeddings`` format;
* ``<out>/cases.safetensors``                  - inputs (latents, sigma, timestep)
  and expected velocities (f32, f32 with LoRA, bf16);
* ``<out>/README.md``                          - description of the above.

It also checks, and aborts on failure, that
  1. the official layout converts back through diffusers' own single-file
     converter into a strict state dict giving bit-identical outputs;
  2. the diffusers layout reloads with ``from_pretrained`` and gives
     bit-identical outputs;
  3. disabling the LoRA adapter gives back the no-adapter outputs.

With ``--debug-dir DIR`` it also dumps float32 intermediates captured with
forward hooks (not meant to be committed).

Requirements (versions used to generate the committed fixture)
--------------------------------------------------------------
    pip install torch==2.15.0 diffusers==0.42.1 peft==0.21.2 \
        safetensors==0.8.0 numpy==2.4.6 accelerate==1.15.0
    (the default PyPI torch wheel, 2.15.0+cu132, was used on the CPU; peft pulled in
    transformers 5.23.0)

Run
---
    python scripts/mmdit_fixture.py --out tests/fixtures/mmdit

Everything runs on the CPU in float32 (bf16 only for the ``velocity_bf16``
case); all randomness comes from fixed ``torch.manual_seed`` seeds.
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

import diffusers
import peft
import safetensors
from diffusers import SD3Transformer2DModel
from peft import LoraConfig, get_peft_model_state_dict

from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

SAI_PREFIX = "model.diffusion_model."

COMMON = dict(
    sample_size=8,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=24,
    caption_projection_dim=32,
    pooled_projection_dim=20,
    pos_embed_max_size=8,
    qk_norm="rms_norm",
)
MODELS = {
    "plain": dict(COMMON, num_layers=2, dual_attention_layers=()),
    "dual": dict(COMMON, num_layers=3, dual_attention_layers=(0,)),
}
MODEL_SEEDS = {"plain": 1001, "dual": 2002}
LORA_SEEDS = {"plain": 3003, "dual": 4004}
INPUT_SEED = 42

LORA_RANK = 4
LORA_ALPHA = 8
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]

PROMPTS = ["a red cube on a blue sphere", "two cats"]
BATCH, TEXT_LEN = 2, 7
LATENT_SHAPE = (BATCH, 16, 4, 6)  # non-square: 2x3 patches, pos table cropped at top=3, left=2
SIGMAS = [0.9, 0.3]

RMS_NORM_NAMES = ("norm_q", "norm_k", "norm_added_q", "norm_added_k")


def bf16_round(t: torch.Tensor) -> torch.Tensor:
    """Round to the nearest bf16 value and return float32."""
    return t.to(torch.bfloat16).float()


# --------------------------------------------------------------------------- model


def build_model(name: str) -> SD3Transformer2DModel:
    """Construct the tiny model and overwrite every state-dict tensor with seeded noise."""
    torch.manual_seed(MODEL_SEEDS[name])
    model = SD3Transformer2DModel(**MODELS[name]).float().eval()
    gen = torch.Generator().manual_seed(MODEL_SEEDS[name])
    new_state = {}
    for key, t in model.state_dict().items():
        if key == "pos_embed.pos_embed":
            v = torch.randn(t.shape, generator=gen) * 0.5
        elif key.rsplit(".", 2)[-2] in RMS_NORM_NAMES and key.endswith(".weight"):
            v = 1.0 + 0.2 * torch.randn(t.shape, generator=gen)
        elif key.endswith(".bias"):
            assert t.dim() == 1, key
            v = torch.randn(t.shape, generator=gen) * 0.1
        else:
            assert key.endswith(".weight") and t.dim() >= 2, f"unexpected tensor {key} {tuple(t.shape)}"
            fan_in = math.prod(t.shape[1:])
            v = torch.randn(t.shape, generator=gen) / math.sqrt(fan_in)
        new_state[key] = bf16_round(v)
    # strict: every key of the state dict (incl. the persistent pos_embed buffer) is replaced
    model.load_state_dict(new_state, strict=True)
    for key, t in model.state_dict().items():
        assert torch.equal(t, new_state[key]), key
    return model


@torch.no_grad()
def run(model, inputs, dtype=torch.float32):
    latents, context, pooled, timestep = inputs
    out = model(
        hidden_states=latents.to(dtype),
        encoder_hidden_states=context.to(dtype),
        pooled_projections=pooled.to(dtype),
        timestep=timestep.to(dtype),
    ).sample
    return out.float()


# --------------------------------------------------------------------------- official layout


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    """(a, b) -> (b, a) along dim 0: diffusers' (scale, shift) <-> SAI's (shift, scale)."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def diffusers_to_official(sd: dict, num_layers: int, dual_layers) -> dict:
    """Map a diffusers SD3 transformer state dict onto the Stability-AI single-file names."""
    o = {}
    o["pos_embed"] = sd["pos_embed.pos_embed"]  # [1, max*max, hidden]
    o["x_embedder.proj.weight"] = sd["pos_embed.proj.weight"]
    o["x_embedder.proj.bias"] = sd["pos_embed.proj.bias"]
    for sai, dif in (("t_embedder", "timestep_embedder"), ("y_embedder", "text_embedder")):
        for i, lin in ((0, "linear_1"), (2, "linear_2")):
            for p in ("weight", "bias"):
                o[f"{sai}.mlp.{i}.{p}"] = sd[f"time_text_embed.{dif}.{lin}.{p}"]
    o["context_embedder.weight"] = sd["context_embedder.weight"]
    o["context_embedder.bias"] = sd["context_embedder.bias"]

    for i in range(num_layers):
        last = i == num_layers - 1
        d = f"transformer_blocks.{i}"
        x = f"joint_blocks.{i}.x_block"
        c = f"joint_blocks.{i}.context_block"
        for p in ("weight", "bias"):
            # image side
            o[f"{x}.adaLN_modulation.1.{p}"] = sd[f"{d}.norm1.linear.{p}"]  # 6 or 9 chunks, same order
            o[f"{x}.attn.qkv.{p}"] = torch.cat([sd[f"{d}.attn.to_{n}.{p}"] for n in "qkv"], dim=0)
            o[f"{x}.attn.proj.{p}"] = sd[f"{d}.attn.to_out.0.{p}"]
            o[f"{x}.mlp.fc1.{p}"] = sd[f"{d}.ff.net.0.proj.{p}"]
            o[f"{x}.mlp.fc2.{p}"] = sd[f"{d}.ff.net.2.{p}"]
            # text side
            mod = sd[f"{d}.norm1_context.linear.{p}"]
            o[f"{c}.adaLN_modulation.1.{p}"] = swap_halves(mod) if last else mod
            o[f"{c}.attn.qkv.{p}"] = torch.cat([sd[f"{d}.attn.add_{n}_proj.{p}"] for n in "qkv"], dim=0)
            if not last:
                o[f"{c}.attn.proj.{p}"] = sd[f"{d}.attn.to_add_out.{p}"]
                o[f"{c}.mlp.fc1.{p}"] = sd[f"{d}.ff_context.net.0.proj.{p}"]
                o[f"{c}.mlp.fc2.{p}"] = sd[f"{d}.ff_context.net.2.{p}"]
            if i in dual_layers:
                o[f"{x}.attn2.qkv.{p}"] = torch.cat([sd[f"{d}.attn2.to_{n}.{p}"] for n in "qkv"], dim=0)
                o[f"{x}.attn2.proj.{p}"] = sd[f"{d}.attn2.to_out.0.{p}"]
        o[f"{x}.attn.ln_q.weight"] = sd[f"{d}.attn.norm_q.weight"]
        o[f"{x}.attn.ln_k.weight"] = sd[f"{d}.attn.norm_k.weight"]
        o[f"{c}.attn.ln_q.weight"] = sd[f"{d}.attn.norm_added_q.weight"]
        o[f"{c}.attn.ln_k.weight"] = sd[f"{d}.attn.norm_added_k.weight"]
        if i in dual_layers:
            o[f"{x}.attn2.ln_q.weight"] = sd[f"{d}.attn2.norm_q.weight"]
            o[f"{x}.attn2.ln_k.weight"] = sd[f"{d}.attn2.norm_k.weight"]

    for p in ("weight", "bias"):
        o[f"final_layer.adaLN_modulation.1.{p}"] = swap_halves(sd[f"norm_out.linear.{p}"])
        o[f"final_layer.linear.{p}"] = sd[f"proj_out.{p}"]
    return o


def write_official(model, cfg, path):
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    off = diffusers_to_official(sd, cfg["num_layers"], cfg["dual_attention_layers"])
    n_params = sum(v.numel() for v in sd.values())
    assert sum(v.numel() for v in off.values()) == n_params, "official layout lost or duplicated tensors"
    tensors = {SAI_PREFIX + k: v.to(torch.bfloat16).contiguous() for k, v in off.items()}
    gen = torch.Generator().manual_seed(7)
    tensors["first_stage_model.decoder.conv_in.bias"] = torch.randn(4, generator=gen)  # f32, unrelated VAE key
    save_file(tensors, path)
    return tensors


def verify_official(path, cfg, inputs, expected):
    """Round-trip through diffusers' own converter, strict load, exact outputs."""
    ckpt = load_file(path)
    converted = convert_sd3_transformer_checkpoint_to_diffusers(ckpt)
    fresh = SD3Transformer2DModel(**cfg).float().eval()
    fresh.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    got = run(fresh, inputs)
    assert torch.equal(got, expected), f"official round trip mismatch: max diff {(got - expected).abs().max()}"
    return len(converted)


# --------------------------------------------------------------------------- diffusers layout


def write_diffusers(model, dirpath):
    if os.path.isdir(dirpath):
        shutil.rmtree(dirpath)
    bf = copy.deepcopy(model).to(torch.bfloat16)
    total = sum(t.numel() * t.element_size() for t in bf.state_dict().values())
    shard = total // 2 + 1  # guarantees at least 2 shards, at most ~3
    bf.save_pretrained(dirpath, safe_serialization=True, max_shard_size=shard)
    files = sorted(os.listdir(dirpath))
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) >= 2, files
    assert "diffusion_pytorch_model.safetensors.index.json" in files, files
    assert "config.json" in files, files
    return files


def verify_diffusers(dirpath, inputs, expected):
    loaded = SD3Transformer2DModel.from_pretrained(dirpath).float().eval()
    got = run(loaded, inputs)
    assert torch.equal(got, expected), f"diffusers reload mismatch: max diff {(got - expected).abs().max()}"


# --------------------------------------------------------------------------- LoRA


def attach_lora(model, name):
    lm = copy.deepcopy(model)
    lm.add_adapter(LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules=LORA_TARGETS))
    gen = torch.Generator().manual_seed(LORA_SEEDS[name])
    targeted = []
    with torch.no_grad():
        for mname, module in lm.named_modules():
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                targeted.append(mname)
                for lora in (module.lora_A["default"], module.lora_B["default"]):
                    lora.weight.copy_(bf16_round(torch.randn(lora.weight.shape, generator=gen) * 0.3))
    lm.eval()
    return lm, targeted


def write_lora(lm, path):
    state = get_peft_model_state_dict(lm)
    # The factors are bf16-rounded already, so bf16 storage is exact and keeps the fixture small.
    tensors = {"transformer." + k: v.detach().to(torch.bfloat16).contiguous() for k, v in state.items()}
    save_file(
        tensors,
        path,
        metadata={"format": "flow-rl/lora", "lora_rank": str(LORA_RANK), "lora_alpha": str(LORA_ALPHA)},
    )
    return tensors


# --------------------------------------------------------------------------- debug dump


def debug_dump(model, cfg, inputs, path):
    captured = {}

    def put(prefix, out):
        if out is None:
            return
        if isinstance(out, torch.Tensor):
            captured[prefix] = out.detach().float().contiguous().clone()
        elif isinstance(out, (tuple, list)):
            for j, o in enumerate(out):
                put(f"{prefix}.{j}", o)
        elif hasattr(out, "sample"):
            put(prefix, out.sample)

    def hook(name):
        return lambda _m, _i, out: put(name, out)

    handles = []
    watch = ["pos_embed", "time_text_embed", "context_embedder", "norm_out", "proj_out"]
    watch += [f"transformer_blocks.{i}" for i in range(cfg["num_layers"])]
    watch += ["transformer_blocks.0.norm1", "transformer_blocks.0.norm1_context", "transformer_blocks.0.attn"]
    if 0 in cfg["dual_attention_layers"]:
        watch.append("transformer_blocks.0.attn2")
    modules = dict(model.named_modules())
    for w in watch:
        handles.append(modules[w].register_forward_hook(hook(w)))
    out = run(model, inputs)
    for h in handles:
        h.remove()
    latents, context, pooled, timestep = inputs
    captured.update(latents=latents, context=context, pooled=pooled, timestep=timestep, velocity=out)
    save_file(
        captured,
        path,
        metadata={
            "note": "transformer_blocks.i.0 = encoder_hidden_states out (absent for the last block), "
            "transformer_blocks.i.1 = hidden_states out; norm1.* = (normed, gate_msa, shift_mlp, scale_mlp, "
            "gate_mlp[, normed2, gate_msa2]); norm1_context.* = (normed, c_gate_msa, c_shift_mlp, c_scale_mlp, "
            "c_gate_mlp) or a single tensor for the pre-only block; attn.0 = image out, attn.1 = context out"
        },
    )
    return sorted(captured)


def copy_reference_sources(debug_dir):
    import inspect

    from diffusers.loaders import single_file_utils

    src = os.path.join(debug_dir, "diffusers_src")
    os.makedirs(src, exist_ok=True)
    root = os.path.dirname(diffusers.__file__)
    for rel in (
        "models/transformers/transformer_sd3.py",
        "models/attention.py",
        "models/attention_processor.py",
        "models/normalization.py",
        "models/embeddings.py",
        "models/activations.py",
    ):
        shutil.copy(os.path.join(root, rel), os.path.join(src, rel.replace("/", "__")))
    with open(os.path.join(src, "single_file_utils__sd3_converter.py"), "w") as f:
        for fn in (
            single_file_utils.swap_scale_shift,
            single_file_utils.get_attn2_layers,
            single_file_utils.get_caption_projection_dim,
            single_file_utils.convert_sd3_transformer_checkpoint_to_diffusers,
        ):
            f.write(inspect.getsource(fn) + "\n\n")


# --------------------------------------------------------------------------- main


def make_inputs():
    gen = torch.Generator().manual_seed(INPUT_SEED)
    context = torch.randn(BATCH, TEXT_LEN, COMMON["joint_attention_dim"], generator=gen)
    pooled = torch.randn(BATCH, COMMON["pooled_projection_dim"], generator=gen)
    latents = torch.randn(*LATENT_SHAPE, generator=gen)
    sigma = torch.tensor(SIGMAS, dtype=torch.float32)
    timestep = sigma * 1000.0
    return latents, context, pooled, sigma, timestep


def stats(t):
    return f"mean|x|={t.abs().mean().item():.4f} max|x|={t.abs().max().item():.4f} finite={bool(torch.isfinite(t).all())}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/fixtures/mmdit")
    ap.add_argument("--debug-dir", default=None, help="also dump hooked intermediates and reference sources here")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)  # keep CPU reductions in one fixed order
    os.makedirs(args.out, exist_ok=True)
    if args.debug_dir:
        os.makedirs(args.debug_dir, exist_ok=True)
        copy_reference_sources(args.debug_dir)

    latents, context, pooled, sigma, timestep = make_inputs()
    inputs = (latents, context, pooled, timestep)
    save_file(
        {"context": context.contiguous(), "pooled": pooled.contiguous()},
        os.path.join(args.out, "prompts.safetensors"),
        metadata={"format": "flow-rl/prompt-embeddings", "version": "1", "prompts": json.dumps(PROMPTS)},
    )
    cases = {"latents": latents, "sigma": sigma, "timestep": timestep}
    report = {}

    for name, cfg in MODELS.items():
        mdir = os.path.join(args.out, name)
        os.makedirs(mdir, exist_ok=True)
        model = build_model(name)
        n_params = sum(p.numel() for p in model.parameters())

        vel = run(model, inputs)
        cases[f"{name}.velocity"] = vel

        official = write_official(model, cfg, os.path.join(mdir, "official.safetensors"))
        n_conv = verify_official(os.path.join(mdir, "official.safetensors"), cfg, inputs, vel)

        files = write_diffusers(model, os.path.join(mdir, "diffusers"))
        verify_diffusers(os.path.join(mdir, "diffusers"), inputs, vel)

        lm, targeted = attach_lora(model, name)
        lora_vel = run(lm, inputs)
        lm.disable_adapters()
        assert torch.equal(run(lm, inputs), vel), "disabled adapter changed the output"
        lm.enable_adapters()
        assert torch.equal(run(lm, inputs), lora_vel)
        lora_tensors = write_lora(lm, os.path.join(mdir, "lora.safetensors"))
        cases[f"{name}.lora_velocity"] = lora_vel

        bf = copy.deepcopy(model).to(torch.bfloat16)
        vel_bf16 = run(bf, inputs, dtype=torch.bfloat16)
        cases[f"{name}.velocity_bf16"] = vel_bf16

        if args.debug_dir:
            debug_dump(model, cfg, inputs, os.path.join(args.debug_dir, f"{name}_intermediates.safetensors"))

        report[name] = dict(
            n_params=n_params,
            official_keys=len(official),
            converted_keys=n_conv,
            diffusers_files=files,
            lora_modules=targeted,
            lora_keys=len(lora_tensors),
            velocity=stats(vel),
            lora_velocity=stats(lora_vel),
            lora_delta=f"max|lora-plain|={(lora_vel - vel).abs().max().item():.4f}",
            velocity_bf16=stats(vel_bf16),
            bf16_err=f"max|bf16-f32|={(vel_bf16 - vel).abs().max().item():.4f}",
        )
        print(f"[{name}] params={n_params} official OK ({len(official)} keys incl. VAE key), "
              f"diffusers reload OK ({files}), LoRA on {len(targeted)} modules")
        for k in ("velocity", "lora_velocity", "lora_delta", "velocity_bf16", "bf16_err"):
            print(f"  {k}: {report[name][k]}")
        for k in (vel, lora_vel, vel_bf16):
            assert torch.isfinite(k).all()

    save_file({k: v.float().contiguous() for k, v in cases.items()}, os.path.join(args.out, "cases.safetensors"))
    write_readme(args.out, report)
    print(json.dumps(report, indent=1))


def write_readme(out, report):
    versions = (
        f"python {sys.version.split()[0]}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"peft {peft.__version__}, safetensors {safetensors.__version__}"
    )
    lines = [
        "# MMDiT reference fixture",
        "",
        "Generated by `scripts/mmdit_fixture.py` from diffusers' `SD3Transformer2DModel` (the reference",
        "implementation) with seeded random weights. Do not edit by hand; regenerate with",
        "",
        "```",
        "python scripts/mmdit_fixture.py --out tests/fixtures/mmdit",
        "```",
        "",
        f"Versions: {versions}.",
        "",
        "## Models",
        "",
        "Common config: patch_size=2, in_channels=16, out_channels=16, attention_head_dim=16,",
        "num_attention_heads=2 (hidden 32), joint_attention_dim=24, caption_projection_dim=32,",
        "pooled_projection_dim=20, pos_embed_max_size=8, sample_size=8, qk_norm=\"rms_norm\".",
        "",
        "* `plain`: num_layers=2, dual_attention_layers=() (block 1 is the context pre-only last block).",
        "* `dual`: num_layers=3, dual_attention_layers=(0,) (block 0 has the MMDiT-X image-only `attn2`,",
        "  block 1 is plain, block 2 is the pre-only last block).",
        "",
        "Weights: every state-dict tensor (including the persistent `pos_embed.pos_embed` buffer) is",
        "random: 2-D+ weights N(0, 1/fan_in), biases N(0, 0.1^2), RMSNorm weights 1 + 0.2 N(0,1),",
        "pos_embed N(0, 0.5^2); all rounded to bf16, so the float32 model is exactly representable in bf16.",
        "",
        "## Files",
        "",
        "* `prompts.safetensors`: `context` f32 [2, 7, 24], `pooled` f32 [2, 20]; metadata",
        "  `format=flow-rl/prompt-embeddings`, `version=1`, `prompts` = JSON array of 2 strings.",
        "* `cases.safetensors` (f32): `latents` [2, 16, 4, 6] (2x3 patches, so the 8x8 position table is",
        "  centre-cropped at top=3, left=2), `sigma` [2] = [0.9, 0.3], `timestep` [2] = 1000*sigma, and",
        "  for M in {plain, dual}, each [2, 16, 4, 6]:",
        "  * `M.velocity`: f32 model output, no adapter;",
        "  * `M.lora_velocity`: same with the LoRA adapter active (unmerged, scale alpha/r = 2);",
        "  * `M.velocity_bf16`: model and inputs cast to bf16, output cast to f32 (loose tolerance only).",
        "* `M/official.safetensors` (bf16): Stability-AI single-file layout, keys `model.diffusion_model.*`",
        "  (`x_embedder.proj`, `pos_embed` [1, 64, 32], `t_embedder.mlp.{0,2}`, `y_embedder.mlp.{0,2}`,",
        "  `context_embedder`, `joint_blocks.{i}.{x_block,context_block}.{adaLN_modulation.1, attn.qkv,",
        "  attn.proj, attn.ln_q, attn.ln_k, mlp.fc1, mlp.fc2}`, `x_block.attn2.*` for dual layers,",
        "  `final_layer.{adaLN_modulation.1, linear}`), plus an unrelated f32",
        "  `first_stage_model.decoder.conv_in.bias` [4]. The last block's context_block has no",
        "  `attn.proj`/`mlp.*`; its `adaLN_modulation.1` and `final_layer.adaLN_modulation.1` are",
        "  (shift, scale), i.e. halves swapped relative to diffusers' (scale, shift). Verified by converting",
        "  back with diffusers' `convert_sd3_transformer_checkpoint_to_diffusers`, strict load, identical output.",
        "* `M/diffusers/`: `save_pretrained` in bf16, sharded (`diffusion_pytorch_model-0000k-of-0000n.safetensors`",
        "  + `diffusion_pytorch_model.safetensors.index.json`) + `config.json`; reloads with `from_pretrained`",
        "  to identical f32 output.",
        f"* `M/lora.safetensors` (bf16, exact: the factors are bf16-rounded): peft LoRA r={LORA_RANK}, alpha={LORA_ALPHA}, target_modules={LORA_TARGETS};",
        "  A and B ~ N(0, 0.3^2) rounded to bf16. Keys `transformer.<module>.lora_A.weight` [r, in] and",
        "  `transformer.<module>.lora_B.weight` [out, r]; metadata `format=flow-rl/lora`, `lora_rank=4`,",
        "  `lora_alpha=8`.",
        "",
        "LoRA-targeted modules:",
        "",
    ]
    for name, r in report.items():
        lines.append(f"* `{name}` ({len(r['lora_modules'])} modules):")
        blocks = {}
        for m in r["lora_modules"]:
            _, idx, rest = m.split(".", 2)
            blocks.setdefault(idx, []).append(rest)
        for idx, mods in blocks.items():
            lines.append(f"  * `transformer_blocks.{idx}.` " + ", ".join(f"`{m}`" for m in mods))
    lines += ["", "Output magnitudes at generation time:", ""]
    for name, r in report.items():
        for k in ("velocity", "lora_velocity", "lora_delta", "velocity_bf16", "bf16_err"):
            lines.append(f"* `{name}` {k}: {r[k]}")
    lines.append("")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
