#!/usr/bin/env bash
# SD3.5-medium training step on a GPU: flow-rl's `sd35` example (Vulkan) against a PyTorch peer
# of the same work (scripts/sd35_peer_step.py: diffusers' SD3Transformer2DModel, PEFT LoRA r 32,
# the Flow-DPPO loss, bf16, SDPA), both with random weights at 512², 8 samples per group.
#
# Two halves, because the GPU machine may have no network and no cargo:
#
#   scripts/gpu_bench.sh build [BUNDLE]   # here: release build with --features vulkan, then
#                                         # BUNDLE (default target/gpu-bench) holds all to carry
#   BUNDLE/gpu_bench.sh run [OUT]         # there: runs both, writes OUT/results.md (default
#                                         # ./gpu-bench-results) with the figures and ratios
#
# What to carry to the GPU machine: the BUNDLE folder alone (about 121 MB, 37 MB as a
# `tar czf`): the stripped `sd35`
# binary, this script, the peer scripts, and the Vulkan loader `libvulkan.so.1` of the build
# machine (Debian's libvulkan1; it is used only when the GPU machine has no loader of its own).
# The GPU machine needs the NVIDIA driver with its Vulkan ICD (nvidia_icd.json, shipped with
# the driver) and, for the peer only, a Python with torch, diffusers and peft
# (scripts/peer_venv.sh pins the versions; PY selects the interpreter).
#
# Settings (environment): RESOLUTION (512), GROUP_SIZE (8), PROMPTS (1), STEPS (3 timed steps
# after a warm-up), MICRO_BATCH_ROWS (8), ROLLOUT_BATCH_SIZE (8), PRESET (medium).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/vulkan_loader.sh
source "$here/vulkan_loader.sh"
mode="${1:-}"

build() {
    local bundle="${1:-target/gpu-bench}"
    cd "$here/.."
    cargo build --release --features vulkan --example sd35
    mkdir -p "$bundle"
    cp target/release/examples/sd35 "$bundle/"
    # 155 MB with symbols, 120 MB without (wgpu, naga, burn, tokenizers); 37 MB gzipped.
    strip "$bundle/sd35" 2>/dev/null || echo "warning: no strip: the binary keeps its symbols" >&2
    cp scripts/gpu_bench.sh scripts/sd35_peer_step.py scripts/mmdit_peer_bench.py \
        scripts/vulkan_loader.sh "$bundle/"
    bundle_vulkan_loader "$bundle"
    echo "bundle ready: $bundle ($(du -sh "$bundle" | cut -f1)); carry it and run: $bundle/gpu_bench.sh run"
}

# The mean of field $2 (a number followed by the text $3) over the timed step lines of log $1.
mean_after_warmup() {
    grep -E '^step +[0-9]+:.*images/s' "$1" | tail -n +2 | grep -oE "[0-9.]+ $2" | awk '{s += $1; n++} END {if (n) printf "%.3f", s / n}'
}

run() {
    local out="${1:-gpu-bench-results}"
    local resolution="${RESOLUTION:-512}" group="${GROUP_SIZE:-8}" prompts="${PROMPTS:-1}"
    local steps="${STEPS:-3}" micro="${MICRO_BATCH_ROWS:-8}" chunk="${ROLLOUT_BATCH_SIZE:-8}"
    local preset="${PRESET:-medium}"
    mkdir -p "$out"
    # The bundled loader is a fallback behind the system's.
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$here"
    warn_without_nvidia_icd
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/gpu.txt" 2>/dev/null || echo "unknown GPU" >"$out/gpu.txt"

    echo "== flow-rl sd35 (vulkan), $preset, ${resolution}², $prompts × $group samples"
    local run_dir
    run_dir="$(mktemp -d)"
    "$here/sd35" --backend vulkan --preset "$preset" --random-init --precision bf16 \
        --resolution "$resolution" --group-size "$group" --prompts-per-rollout "$prompts" \
        --eval-prompts "$prompts" --micro-batch-rows "$micro" --rollout-batch-size "$chunk" \
        --train-steps "$((steps + 1))" --eval-every 1000000 --out "$run_dir" 2>&1 | tee "$out/flow-rl.log"
    local ours_images ours_step ours_memory
    ours_images="$(mean_after_warmup "$out/flow-rl.log" 'images/s')"
    ours_step="$(mean_after_warmup "$out/flow-rl.log" 's per optimiser step')"
    ours_memory="$(grep -E '^step +[0-9]+:.*images/s' "$out/flow-rl.log" | tail -n 1 | grep -oE 'memory .*' || true)"

    echo "== PyTorch peer"
    local py="${PY:-python3}" peer_images="n/a" peer_step="n/a" peer_memory="n/a"
    if "$py" -c 'import torch, diffusers, peft' 2>/dev/null; then
        "$py" "$here/sd35_peer_step.py" --config "sd35-$preset" --device cuda --precision bf16 \
            --resolution "$resolution" --group-size "$group" --prompts "$prompts" \
            --micro-batch-rows "$micro" --rollout-batch-size "$chunk" --steps "$steps" 2>&1 | tee "$out/peer.log"
        local json
        json="$(grep '^json: ' "$out/peer.log" | sed 's/^json: //')"
        peer_images="$(echo "$json" | "$py" -c 'import json,sys; print(f"{json.load(sys.stdin)[\"images_per_second\"]:.3f}")')"
        peer_step="$(echo "$json" | "$py" -c 'import json,sys; print(f"{json.load(sys.stdin)[\"seconds_per_optimiser_step\"]:.3f}")')"
        peer_memory="$(echo "$json" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(f"{d.get(\"max_memory_reserved_gib\", float(\"nan\")):.2f} GiB reserved")')"
    else
        echo "no torch/diffusers/peft for $py: the peer is skipped (set PY)" | tee "$out/peer.log"
    fi

    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
    {
        echo "# SD3.5-$preset training step, random weights, ${resolution}², $prompts × $group samples, bf16"
        echo
        echo "GPU: $(cat "$out/gpu.txt"); $(date -u +%Y-%m-%d); command: scripts/gpu_bench.sh run"
        echo
        echo "| | flow-rl (vulkan) | PyTorch peer | flow-rl / peer |"
        echo "| --- | --- | --- | --- |"
        echo "| rollout images/s | $ours_images | $peer_images | $(ratio "$ours_images" "$peer_images") |"
        echo "| s per optimiser step | $ours_step | $peer_step | $(ratio "$ours_step" "$peer_step") |"
        echo "| memory | ${ours_memory#memory } | $peer_memory | |"
    } >"$out/results.md"
    cat "$out/results.md"
}

case "$mode" in
    build) shift; build "$@" ;;
    run) shift; run "$@" ;;
    *)
        echo "usage: $0 build [BUNDLE] | run [OUT]" >&2
        exit 2
        ;;
esac
