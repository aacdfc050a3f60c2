#!/usr/bin/env bash
# Ours against PyTorch in one run: for each configuration, `mmdit_bench` (release build) and
# then `scripts/mmdit_peer_bench.py` (diffusers + PEFT, same architecture, LoRA and inputs)
# with the same arguments, each in its own process, since peak RSS is a process maximum.
#
#   scripts/peer_venv.sh                       # once: pinned torch/diffusers/peft in /work/peer-venv
#   cargo build --release --example mmdit_bench
#   scripts/mmdit_compare.sh                   # the mid configuration at batch 1 and 4
#   scripts/mmdit_compare.sh --config sd35-medium --resolution 256 --iterations 1
#
# With arguments, only that configuration runs. Run it on a quiet machine: the figures are
# wall-clock times on 2 cores, and PyTorch's OpenMP threads spin when a core is taken.
# `PY` selects the Python interpreter, `BENCH` our binary, `BACKENDS` the backends it runs on
# (default flex). LibTorch against PyTorch on the same libtorch:
#
#   eval "$(scripts/libtorch_env.sh)"
#   cargo build --release --features tch --example mmdit_bench
#   TORCH_VERSION=2.9.0 scripts/peer_venv.sh /work/peer-venv-2.9
#   BACKENDS="flex tch" PY=/work/peer-venv-2.9/bin/python scripts/mmdit_compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-/work/peer-venv/bin/python}
BENCH=${BENCH:-target/release/examples/mmdit_bench}
for tool in "$PY" "$BENCH"; do
    if [ ! -x "$tool" ]; then
        echo "missing $tool: run scripts/peer_venv.sh and cargo build --release --example mmdit_bench" >&2
        exit 1
    fi
done

BACKENDS=${BACKENDS:-flex}

compare() {
    echo "=== $* (load: $(cut -d' ' -f1 /proc/loadavg))"
    local backend
    for backend in $BACKENDS; do
        echo "--- flow-rl on $backend"
        "$BENCH" --backend "$backend" "$@"
    done
    echo "--- PyTorch $("$PY" -c 'import torch; print(torch.__version__)')"
    "$PY" scripts/mmdit_peer_bench.py "$@"
}

if [ "$#" -gt 0 ]; then
    compare "$@"
else
    for batch in 1 4; do
        compare --config custom --depth 6 --heads 6 --resolution 256 --batch "$batch"
    done
fi
