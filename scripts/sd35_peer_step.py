#!/usr/bin/env python3
"""PyTorch peer of one training step of ``examples/sd35`` (run by ``scripts/gpu_bench.sh``).

The same work as a flow-rl trainer step with ``--random-init``, in diffusers + PEFT:

* **rollout**: P·G latents ``[16, res/8, res/8]`` from N(0, 1) denoised in T steps by
  diffusers' ``SD3Transformer2DModel`` (random weights, flow-rl's preset architecture, the
  weights' dtype, PyTorch's SDPA attention) under ``torch.no_grad``, ``--rollout-batch-size``
  samples per pass; k of the first half of the steps are Flow-SDE steps (η, ALGORITHMS.md §2)
  whose rows (latent, next latent, old mean, σ, std) are kept, the others Euler steps;
* **update**: a PEFT LoRA (rank r, alpha, f32 factors, flow-rl's attention targets) trained on
  those rows with the Flow-DPPO loss (ALGORITHMS.md §4, τ = 1e-5, mean over the N latent
  dimensions), ``--minibatches`` AdamW steps (lr 3e-4, weight decay 0, gradient clip 1.0),
  each accumulated over micro-batches of ``--micro-batch-rows`` rows.

Rewards are random normals (the advantages' cost is nothing next to the model's); the VAE decode
and the reward are not part of either figure, as the example reports rollout and update times
apart. It prints the step's figures and a ``json:`` line: rollout images/s, seconds per
optimiser step, and ``torch.cuda.max_memory_allocated``/``max_memory_reserved``.

    /work/peer-venv/bin/python scripts/sd35_peer_step.py --config tiny --device cpu \\
        --resolution 64 --group-size 2 --prompts 2
    python scripts/sd35_peer_step.py --config sd35-medium --resolution 512 --group-size 8
"""

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mmdit_peer_bench import ATTENTION_TARGETS, diffusers_config, preset  # noqa: E402

from diffusers import SD3Transformer2DModel  # noqa: E402
from peft import LoraConfig  # noqa: E402

SHIFT = 3.0
DPPO_TAU = 1e-5


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["tiny", "sd35-medium", "sd35-large"], default="sd35-medium")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--context-tokens", type=int, default=333)
    parser.add_argument("--prompts", type=int, default=1, help="prompts (groups) per rollout")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--denoising-steps", type=int, default=10)
    parser.add_argument("--sde-steps", type=int, default=3)
    parser.add_argument("--eta", type=float, default=0.7)
    parser.add_argument("--minibatches", type=int, default=2)
    parser.add_argument("--micro-batch-rows", type=int, default=None)
    parser.add_argument("--rollout-batch-size", type=int, default=None)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--alpha", type=float, default=64.0)
    parser.add_argument("--precision", choices=["bf16", "f32"], default="bf16")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def sigmas(steps):
    """SD3's shifted schedule, ALGORITHMS.md §1."""
    ts = [1.0 - i / steps for i in range(steps + 1)]
    return [SHIFT * t / (1.0 + (SHIFT - 1.0) * t) for t in ts]


def flow_sde(x, v, sigma, sigma_next, sigma_one, eta):
    """Flow-GRPO's SDE step in f32: the mean and the std (ALGORITHMS.md §2)."""
    dt = sigma_next - sigma
    tilde = sigma_one if sigma == 1.0 else sigma
    sigma_t = eta * math.sqrt(sigma / (1.0 - tilde))
    mean = x * (1 + sigma_t**2 * dt / (2 * sigma)) + v * (1 + sigma_t**2 * (1 - sigma) / (2 * sigma)) * dt
    return mean, sigma_t * math.sqrt(-dt)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(args, device, dtype):
    arch = preset(argparse.Namespace(config=args.config))
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = SD3Transformer2DModel(**diffusers_config(arch))
    finally:
        torch.set_default_dtype(default_dtype)
    model = model.to(device)
    model.requires_grad_(False)
    model.add_adapter(
        LoraConfig(r=args.rank, lora_alpha=args.alpha, target_modules=ATTENTION_TARGETS, init_lora_weights=True)
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.data = parameter.data.float()
    return model, arch, trainable


def velocity(model, x, context, pooled, sigma, dtype):
    timestep = torch.full((x.shape[0],), 1000.0 * sigma, device=x.device)
    out = model(
        hidden_states=x.to(dtype),
        encoder_hidden_states=context,
        pooled_projections=pooled,
        timestep=timestep,
        return_dict=False,
    )[0]
    return out.float()


def rollout(model, args, context, pooled, dtype, generator):
    """Denoises P·G samples; returns the SDE rows (x, x', μ_old, σ, s) and the step indices."""
    device = context.device
    samples = args.prompts * args.group_size
    latent = args.resolution // 8
    schedule = sigmas(args.denoising_steps)
    window = list(range(args.denoising_steps // 2))
    order = torch.randperm(len(window), generator=generator).tolist()
    sde_steps = sorted(window[i] for i in order[: args.sde_steps])
    x = torch.randn(samples, 16, latent, latent, generator=generator).to(device)
    chunk = args.rollout_batch_size or samples
    rows = []
    with torch.no_grad():
        for step in range(args.denoising_steps):
            sigma, sigma_next = schedule[step], schedule[step + 1]
            v = torch.cat(
                [
                    velocity(model, x[i : i + chunk], context[i : i + chunk], pooled[i : i + chunk], sigma, dtype)
                    for i in range(0, samples, chunk)
                ]
            )
            if step in sde_steps:
                mean, std = flow_sde(x, v, sigma, sigma_next, schedule[1], args.eta)
                noise = torch.randn(x.shape, generator=generator).to(device)
                following = mean + std * noise
                rows.append((x, following, mean, sigma, std))
                x = following
            else:
                x = x + v * (sigma_next - sigma)
    return rows


def flow_dppo_loss(mean_new, mean_old, following, std, advantage):
    """Flow-DPPO's per-row loss (ALGORITHMS.md §4), summed over rows."""
    dims = tuple(range(1, mean_new.dim()))
    log_new = -((following - mean_new) ** 2).mean(dims) / (2 * std**2)
    log_old = -((following - mean_old) ** 2).mean(dims) / (2 * std**2)
    ratio = torch.exp(log_new - log_old)
    kl = ((mean_new - mean_old) ** 2).mean(dims).detach() / (2 * std**2)
    pushes = ((advantage > 0) & (ratio > 1)) | ((advantage < 0) & (ratio < 1))
    drop = (kl >= DPPO_TAU) & pushes
    return torch.where(drop, torch.zeros_like(ratio), -advantage * ratio).sum()


def update(model, trainable, optimizer, rows, args, context, pooled, dtype, generator):
    """`--minibatches` optimiser steps over the shuffled rows, micro-batched."""
    samples = args.prompts * args.group_size
    rewards = torch.randn(samples, generator=generator)
    advantages = ((rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-8)).to(context.device)
    flat = [(step, sample) for step in range(len(rows)) for sample in range(samples)]
    order = torch.randperm(len(flat), generator=generator).tolist()
    per_batch = math.ceil(len(flat) / args.minibatches)
    micro = args.micro_batch_rows or per_batch
    for start in range(0, len(flat), per_batch):
        batch = [flat[i] for i in order[start : start + per_batch]]
        for m in range(0, len(batch), micro):
            part = batch[m : m + micro]
            loss = 0.0
            for step in sorted({s for s, _ in part}):
                idx = torch.tensor([i for s, i in part if s == step], device=context.device)
                x, following, mean_old, sigma, std = rows[step]
                schedule = sigmas(args.denoising_steps)
                v = velocity(model, x[idx], context[idx], pooled[idx], sigma, dtype)
                step_index = schedule.index(sigma)
                mean_new, _ = flow_sde(x[idx], v, sigma, schedule[step_index + 1], schedule[1], args.eta)
                loss = loss + flow_dppo_loss(mean_new, mean_old[idx], following[idx], std, advantages[idx])
            (loss / len(batch)).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return math.ceil(len(flat) / per_batch)


def main(argv):
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model, arch, trainable = build_model(args, device, dtype)
    optimizer = torch.optim.AdamW(trainable, lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    samples = args.prompts * args.group_size
    per_prompt = torch.randn(args.prompts, args.context_tokens, arch["context_dim"], generator=generator)
    pooled_per_prompt = torch.randn(args.prompts, arch["pooled_dim"], generator=generator)
    context = per_prompt.repeat_interleave(args.group_size, 0).to(device=device, dtype=dtype)
    pooled = pooled_per_prompt.repeat_interleave(args.group_size, 0).to(device=device, dtype=dtype)
    print(
        f"{args.config}: {args.resolution}², {args.prompts} × {args.group_size} samples, T = "
        f"{args.denoising_steps}, {args.sde_steps} SDE steps, LoRA r {args.rank}, {args.precision}, "
        f"torch {torch.__version__} on {device}"
    )
    figures = []
    for step in range(args.steps + 1):
        synchronize(device)
        started = time.perf_counter()
        rows = rollout(model, args, context, pooled, dtype, generator)
        synchronize(device)
        rolled = time.perf_counter()
        optimiser_steps = update(model, trainable, optimizer, rows, args, context, pooled, dtype, generator)
        synchronize(device)
        finished = time.perf_counter()
        figure = dict(
            images_per_second=samples / (rolled - started),
            seconds_per_optimiser_step=(finished - rolled) / optimiser_steps,
            step_seconds=finished - started,
        )
        label = "warm-up" if step == 0 else f"step {step}"
        print(
            f"{label}: rollout {figure['images_per_second']:.2f} images/s, "
            f"{figure['seconds_per_optimiser_step']:.2f} s per optimiser step, step {figure['step_seconds']:.1f} s"
        )
        if step > 0:
            figures.append(figure)
    summary = {key: sum(f[key] for f in figures) / len(figures) for key in figures[0]}
    if device.type == "cuda":
        summary["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        summary["max_memory_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    summary.update(config=args.config, resolution=args.resolution, torch=torch.__version__, device=str(device))
    print("json: " + json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
