#!/usr/bin/env bash
# Creates the Python environment of the PyTorch peer benchmark (scripts/mmdit_peer_bench.py)
# and of the fixture generators (scripts/mmdit_fixture.py, clip_fixture.py, clip_vocab.py --ids,
# t5_fixture.py, vae_fixture.py), from PyPI, with pinned versions.
#
#   scripts/peer_venv.sh                 # creates /work/peer-venv
#   scripts/peer_venv.sh /path/to/venv   # anywhere else, but never inside the repository
#   /work/peer-venv/bin/python scripts/mmdit_peer_bench.py --help
#   TORCH_VERSION=2.9.0 scripts/peer_venv.sh /work/peer-venv-2.9   # the LibTorch `tch` links
#
# PyPI's Linux torch wheel is the CUDA build (it pulls the nvidia-* libraries, several GiB);
# PyPI has no CPU-only build, and the benchmark runs it on the CPU all the same. Check the
# free disk first (`df -h`). transformers and accelerate come in through peft; they are pinned
# at the versions they resolved to when this was written, so that a rerun installs the same.
set -euo pipefail

venv="${1:-/work/peer-venv}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv_abs="$(realpath -m "$venv")"
case "$venv_abs/" in
    "$repo"/*)
        echo "error: venv path $venv_abs is inside the repository $repo; choose a path outside it" >&2
        exit 2
        ;;
esac

python="${PYTHON:-python3}"
torch_version="${TORCH_VERSION:-2.15.0}"
if [ ! -x "$venv_abs/bin/python" ]; then
    "$python" -m venv "$venv_abs"
fi
"$venv_abs/bin/python" -m pip install --upgrade pip
"$venv_abs/bin/python" -m pip install \
    "torch==$torch_version" \
    diffusers==0.42.1 \
    peft==0.21.2 \
    safetensors==0.8.0 \
    numpy==2.4.6 \
    transformers==5.25.0 \
    accelerate==1.16.0 \
    ftfy==6.3.1
# open_clip only for its tokenizer (scripts/clip_vocab.py --ids loads open_clip/tokenizer.py
# alone): without its dependencies, which would pull a torchvision to match torch.
"$venv_abs/bin/python" -m pip install --no-deps open_clip_torch==3.3.0
"$venv_abs/bin/python" -c '
import diffusers, numpy, peft, safetensors, torch
for module in (torch, diffusers, peft, safetensors, numpy):
    print(f"{module.__name__} {module.__version__}")
'
echo "ready: $venv_abs/bin/python"
