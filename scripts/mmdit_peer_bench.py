#!/usr/bin/env python3
"""PyTorch peer of ``examples/mmdit_bench.rs``: the same MMDiT, LoRA and inputs in diffusers.

What it measures
----------------
For one architecture (diffusers' ``SD3Transformer2DModel`` with random weights, built from
a configuration equal to flow-rl's ``MmditConfig`` preset of the same name):

* ``forward``: the mean time of one forward pass without autograd (``torch.no_grad``),
  reduced to a scalar as the Rust bench does;
* ``forward + backward (LoRA r)``: the mean time of a forward and a backward pass of
  ``mean(velocity²)`` with a PEFT LoRA of rank r and alpha 2·r, f32 factors, on the
  attention projections (``to_q, to_k, to_v, to_out.0, add_q_proj, add_k_proj, add_v_proj,
  to_add_out``, which also match MMDiT-X's ``attn2.*`` projections, as flow-rl's
  ``LoraTarget::Attention`` adapts them), every base parameter frozen;
* the process's peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``) right after the
  imports, after building the model, after the forward passes and after the backward
  passes, and the import baseline subtracted from each.

Each pass runs once as a warm-up, then ``--repeats`` times timed (the mean is printed).
Inputs follow the Rust bench: latent ``[B, 16, res/8, res/8]`` ~ N(0, 1), context
``[B, ctx, context_dim]`` ~ N(0, 1), pooled ``[B, pooled_dim]`` ~ N(0, 1), timestep ~
U(0, 1000); seed 0.

Peak RSS is the maximum over the whole process, so it can only be read for the first
configuration a process builds: this script measures ONE configuration per process; run it
once per configuration. Like the Rust bench on ``flex``, the forward figure is the peak so
far (model + forward) and the backward figure the peak of the whole run.

Times are wall-clock on the CPU with ``--threads`` intra-op threads (default 2: the
project's machines have 2 cores); anything else running on the machine makes them noisy, so the
JSON line carries the 1-minute load average at the start and at the end, and each pass's
process CPU seconds beside its wall time (much less than threads × wall: the threads waited).
On a busy machine, torch's OpenMP threads spin at every barrier while a sibling thread waits
for a core: measured here with two rustc jobs running, 2 threads took 7-10 times as long as
1 thread (CPU seconds inflated alike); ``OMP_WAIT_POLICY=PASSIVE`` or ``--threads 1`` keeps
the figures usable there, and a quiet machine is better still.

Setup and use
-------------
    scripts/peer_venv.sh                     # pinned torch/diffusers/peft in /work/peer-venv
    PY=/work/peer-venv/bin/python
    $PY scripts/mmdit_peer_bench.py --config tiny
    $PY scripts/mmdit_peer_bench.py --config custom --depth 6 --heads 6 --resolution 256 --batch 4
    $PY scripts/mmdit_peer_bench.py --config custom --depth 6 --heads 6 --gradient-checkpointing
    $PY scripts/mmdit_peer_bench.py --config sd35-medium --resolution 256   # ~12 GiB, minutes

The options are mmdit_bench's (``--config tiny|sd3-medium|sd35-medium|sd35-large|custom``,
``--depth``, ``--heads``, ``--head-dim``, ``--resolution``, ``--batch``,
``--context-tokens``, ``--rank``, ``--precision f32|bf16``, ``--iterations``, here also
spelt ``--repeats``) plus ``--gradient-checkpointing`` (diffusers'
``enable_gradient_checkpointing()``, checkpointing each block), ``--threads`` and
``--device``. Output: the Rust bench's table, then one JSON line (prefix ``json: ``).
"""

import argparse
import json
import os
import platform
import resource
import sys
import time

import torch

import diffusers
import peft
from diffusers import SD3Transformer2DModel
from peft import LoraConfig

# The baseline of the peak resident set: the interpreter, torch, diffusers and peft.
RSS_AFTER_IMPORTS_KIB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

# PEFT module names of flow-rl's `LoraTarget::Attention` (suffix matches, so `attn2.to_q`
# and friends of MMDiT-X blocks are adapted too).
ATTENTION_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
]


def preset(args):
    """The architecture as flow-rl's `MmditConfig` fields (src/models/mmdit/config.rs)."""
    common = dict(
        head_dim=64,
        qk_norm=False,
        dual_attention_layers=[],
        pos_embed_max_size=192,
        context_dim=4096,
        pooled_dim=2048,
    )
    if args.config == "tiny":
        return dict(
            common,
            depth=2,
            heads=2,
            head_dim=32,
            qk_norm=True,
            dual_attention_layers=[0],
            pos_embed_max_size=16,
            context_dim=64,
            pooled_dim=32,
        )
    if args.config == "sd3-medium":
        return dict(common, depth=24, heads=24)
    if args.config == "sd35-medium":
        return dict(
            common,
            depth=24,
            heads=24,
            qk_norm=True,
            pos_embed_max_size=384,
            dual_attention_layers=list(range(13)),
        )
    if args.config == "sd35-large":
        return dict(common, depth=38, heads=38, qk_norm=True)
    # custom: MmditConfig::new(depth, heads).with_head_dim(..).with_qk_norm(true)
    #         .with_dual_attention_layers(0..depth / 2)
    return dict(
        common,
        depth=args.depth,
        heads=args.heads,
        head_dim=args.head_dim,
        qk_norm=True,
        dual_attention_layers=list(range(args.depth // 2)),
    )


def diffusers_config(arch):
    """`SD3Transformer2DModel` keyword arguments equal to `arch`."""
    hidden = arch["heads"] * arch["head_dim"]
    return dict(
        sample_size=128,  # SD3's; only sets the base grid of the sin-cos table's values
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=arch["depth"],
        attention_head_dim=arch["head_dim"],
        num_attention_heads=arch["heads"],
        joint_attention_dim=arch["context_dim"],
        caption_projection_dim=hidden,
        pooled_projection_dim=arch["pooled_dim"],
        pos_embed_max_size=arch["pos_embed_max_size"],
        dual_attention_layers=tuple(arch["dual_attention_layers"]),
        qk_norm="rms_norm" if arch["qk_norm"] else None,
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="MMDiT forward and LoRA forward+backward throughput in PyTorch/diffusers, "
        "random weights (the peer of examples/mmdit_bench.rs). One configuration per process."
    )
    parser.add_argument(
        "--config",
        choices=["tiny", "sd3-medium", "sd35-medium", "sd35-large", "custom"],
        default="tiny",
        help="the architecture (default: tiny)",
    )
    parser.add_argument("--depth", type=int, default=6, help="blocks of the custom configuration")
    parser.add_argument("--heads", type=int, default=6, help="heads of the custom configuration")
    parser.add_argument(
        "--head-dim", type=int, default=64, help="head width of the custom configuration"
    )
    parser.add_argument(
        "--resolution", type=int, default=256, help="image side in pixels; the latent is 1/8"
    )
    parser.add_argument("--batch", type=int, default=1, help="samples per pass")
    parser.add_argument(
        "--context-tokens", type=int, default=333, help="text tokens per sample (SD3: 77 + 256)"
    )
    parser.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    parser.add_argument(
        "--rank", type=int, default=32, help="LoRA rank (alpha = 2·rank, f32 factors)"
    )
    parser.add_argument(
        "--repeats",
        "--iterations",
        dest="repeats",
        type=int,
        default=3,
        help="timed repetitions of each pass, after one warm-up (default 3)",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="checkpoint every block in the backward pass (enable_gradient_checkpointing())",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args(argv)
    for name in ["depth", "heads", "head_dim", "resolution", "batch", "context_tokens", "rank"]:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} = {getattr(args, name)}: expected at least 1")
    if args.repeats < 1:
        parser.error(f"--repeats = {args.repeats}: expected at least 1")
    if args.threads < 1:
        parser.error(f"--threads = {args.threads}: expected at least 1")
    if args.resolution % 16 != 0:
        parser.error(
            f"--resolution = {args.resolution}: expected a multiple of 16 "
            "(the VAE's 8 times the patch side 2)"
        )
    return args


def peak_rss_bytes():
    """The process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gib(num_bytes):
    return num_bytes / 2**30


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(repeats, device, run_pass):
    """Mean wall-clock and process-CPU seconds of `repeats` runs of `run_pass`, after one
    warm-up run. CPU time above threads × wall time cannot happen; far below it means the
    threads waited for cores that other processes held."""
    run_pass()
    synchronize(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        run_pass()
    synchronize(device)
    wall = (time.perf_counter() - started) / repeats
    return wall, (time.process_time() - cpu_started) / repeats


def main(argv):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float32 if args.precision == "f32" else torch.bfloat16
    load_at_start = os.getloadavg()[0]

    arch = preset(args)
    latent = args.resolution // 8
    patches = latent // 2
    if patches > arch["pos_embed_max_size"]:
        sys.exit(
            f"error: --resolution = {args.resolution} gives {patches}² patches; expected at most "
            f"{arch['pos_embed_max_size']}² (the positional table of {args.config})"
        )
    hidden = arch["heads"] * arch["head_dim"]

    torch.manual_seed(0)
    built = time.perf_counter()
    # Built in the target dtype directly, so bf16 never holds an f32 copy as well.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = SD3Transformer2DModel(**diffusers_config(arch))
    finally:
        torch.set_default_dtype(default_dtype)
    model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    build_seconds = time.perf_counter() - built
    # flow-rl counts the positional table as parameters; diffusers keeps it as a buffer.
    num_params = sum(p.numel() for p in model.parameters()) + model.pos_embed.pos_embed.numel()
    rss_after_build = peak_rss_bytes()
    print(
        f"{args.config}: {arch['depth']} blocks, width {hidden}, {num_params / 1e6:.1f} M "
        f"parameters; {args.resolution}² px (latent {latent}², {patches * patches} image + "
        f"{args.context_tokens} context tokens), batch {args.batch}, {args.precision}, "
        f"torch {torch.__version__} on {device} with {args.threads} threads"
        + (", gradient checkpointing" if args.gradient_checkpointing else "")
    )

    generator = torch.Generator().manual_seed(0)
    b = args.batch
    inputs = dict(
        hidden_states=torch.randn(b, 16, latent, latent, generator=generator),
        encoder_hidden_states=torch.randn(
            b, args.context_tokens, arch["context_dim"], generator=generator
        ),
        pooled_projections=torch.randn(b, arch["pooled_dim"], generator=generator),
        timestep=torch.rand(b, generator=generator) * 1000.0,
    )
    inputs = {
        name: tensor.to(device=device, dtype=dtype if name != "timestep" else torch.float32)
        for name, tensor in inputs.items()
    }

    def forward_pass():
        with torch.no_grad():
            velocity = model(**inputs, return_dict=False)[0]
            velocity.float().sum().item()

    forward_seconds, forward_cpu_seconds = timed(args.repeats, device, forward_pass)
    rss_after_forward = peak_rss_bytes()

    if args.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.add_adapter(
        LoraConfig(
            r=args.rank,
            lora_alpha=2 * args.rank,
            target_modules=ATTENTION_TARGETS,
            init_lora_weights=True,
        )
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.data = parameter.data.float()
    lora_params = sum(p.numel() for p in trainable)
    adapted_layers = sum(1 for name, _ in model.named_modules() if name.endswith(".lora_A"))

    def backward_pass():
        velocity = model(**inputs, return_dict=False)[0]
        velocity.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    backward_seconds, backward_cpu_seconds = timed(args.repeats, device, backward_pass)
    rss_after_backward = peak_rss_bytes()
    load_at_end = os.getloadavg()[0]

    baseline = RSS_AFTER_IMPORTS_KIB * 1024
    forward_label = "forward"
    backward_label = f"forward + backward (LoRA {args.rank})"
    print(
        f"{'pass':<28} {'ms / pass':>12} {'samples / s':>12} {'peak memory':>24} "
        f"{'CPU s / pass':>13}"
    )
    for label, seconds, cpu_seconds, rss in [
        (forward_label, forward_seconds, forward_cpu_seconds, rss_after_forward),
        (backward_label, backward_seconds, backward_cpu_seconds, rss_after_backward),
    ]:
        memory = f"{gib(rss):.2f} GiB (process RSS)"
        print(
            f"{label:<28} {seconds * 1e3:>12.1f} {b / seconds:>12.2f} {memory:>24} "
            f"{cpu_seconds:>13.2f}"
        )
    print(
        f"process RSS after imports {gib(baseline):.2f} GiB, after building the model "
        f"{gib(rss_after_build):.2f} GiB ({build_seconds:.1f} s); LoRA: {adapted_layers} layers, "
        f"{lora_params / 1e6:.2f} M parameters; load average {load_at_start:.2f} -> "
        f"{load_at_end:.2f}"
    )
    if device.type == "cuda":
        print(f"device peak allocated {gib(torch.cuda.max_memory_allocated(device)):.2f} GiB")

    record = dict(
        bench="mmdit_peer_bench",
        implementation="pytorch+diffusers",
        torch=torch.__version__,
        diffusers=diffusers.__version__,
        peft=peft.__version__,
        python=platform.python_version(),
        device=str(device),
        threads=args.threads,
        config=args.config,
        depth=arch["depth"],
        heads=arch["heads"],
        head_dim=arch["head_dim"],
        hidden=hidden,
        qk_norm=arch["qk_norm"],
        dual_attention_layers=arch["dual_attention_layers"],
        pos_embed_max_size=arch["pos_embed_max_size"],
        parameters=num_params,
        resolution=args.resolution,
        latent=latent,
        image_tokens=patches * patches,
        context_tokens=args.context_tokens,
        batch=b,
        precision=args.precision,
        rank=args.rank,
        alpha=2 * args.rank,
        lora_layers=adapted_layers,
        lora_parameters=lora_params,
        gradient_checkpointing=args.gradient_checkpointing,
        repeats=args.repeats,
        forward_ms=forward_seconds * 1e3,
        forward_samples_per_s=b / forward_seconds,
        forward_cpu_s=forward_cpu_seconds,
        forward_backward_ms=backward_seconds * 1e3,
        forward_backward_samples_per_s=b / backward_seconds,
        forward_backward_cpu_s=backward_cpu_seconds,
        build_s=build_seconds,
        rss_after_imports_bytes=baseline,
        rss_peak_after_build_bytes=rss_after_build,
        rss_peak_forward_bytes=rss_after_forward,
        rss_peak_forward_backward_bytes=rss_after_backward,
        rss_peak_forward_backward_minus_imports_bytes=rss_after_backward - baseline,
        device_peak_allocated_bytes=(
            torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        ),
        load_average_1min_start=load_at_start,
        load_average_1min_end=load_at_end,
    )
    print("json: " + json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1:])
