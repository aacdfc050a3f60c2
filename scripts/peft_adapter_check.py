#!/usr/bin/env python3
"""Loads a flow-rl PEFT adapter folder (``Mmdit::save_peft_adapter``) into diffusers' SD3
transformer the way ``StableDiffusion3Pipeline.load_lora_weights`` does, and checks that every
adapted layer got the file's factors and the scale alpha/r of ``adapter_config.json``.

    /work/peer-venv/bin/python scripts/peft_adapter_check.py \\
        --transformer tests/fixtures/mmdit/dual/diffusers --adapter /tmp/adapter

``--transformer`` is a diffusers ``transformer/`` folder of the architecture the adapter was
trained on (the MMDiT fixture's, for an adapter saved from it). Prints one line per check and
exits non-zero on the first failure.
"""

import argparse
import json
import os
import sys

import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from safetensors.torch import load_file

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformer", required=True)
    parser.add_argument("--adapter", required=True)
    args = parser.parse_args(argv)

    config = json.load(open(os.path.join(args.adapter, CONFIG)))
    expected_scale = config["lora_alpha"] / config["r"]
    transformer = SD3Transformer2DModel.from_pretrained(args.transformer, torch_dtype=torch.float32)
    state_dict, metadata = StableDiffusion3Pipeline.lora_state_dict(
        args.adapter, weight_name=WEIGHTS, return_lora_metadata=True
    )
    StableDiffusion3Pipeline.load_lora_into_transformer(
        state_dict, transformer=transformer, metadata=metadata
    )

    stored = load_file(os.path.join(args.adapter, WEIGHTS))
    layers = 0
    for name, module in transformer.named_modules():
        adapters = list(getattr(module, "lora_A", {}).keys()) if hasattr(module, "scaling") else []
        if not adapters:
            continue
        # diffusers names the adapter it loads (default_0, default_1, ...).
        (adapter,) = adapters
        layers += 1
        scale = module.scaling[adapter]
        if abs(scale - expected_scale) > 1e-12:
            sys.exit(f"FAIL {name}: scale {scale}, expected alpha/r = {expected_scale}")
        for factor in ("lora_A", "lora_B"):
            key = f"transformer.{name}.{factor}.weight"
            loaded = getattr(module, factor)[adapter].weight.detach()
            if not torch.equal(loaded, stored[key].to(loaded.dtype)):
                sys.exit(f"FAIL {key}: the loaded factor differs from the file's")
    if layers * 2 != len(stored):
        sys.exit(f"FAIL: {layers} adapted layers for {len(stored)} factors in {WEIGHTS}")
    print(
        f"ok: {layers} layers adapted with the file's factors, scale alpha/r = "
        f"{config['lora_alpha']}/{config['r']} = {expected_scale} on every one"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
