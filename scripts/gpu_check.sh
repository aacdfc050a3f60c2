#!/usr/bin/env bash
# GPU readiness: the backend-conformance suite and `mmdit_bench` on an NVIDIA GPU, through
# two backends, built here for a GPU machine that has no network and no cargo:
#
#   - `vulkan`: wgpu pinned to Vulkan, through the NVIDIA driver's Vulkan ICD;
#   - `tch-cuda`: LibTorch on CUDA, linked against PyTorch 2.9.0's CUDA build from PyPI
#     (scripts/libtorch_env.sh); it runs only where that PyTorch is installed.
#
#   scripts/gpu_check.sh build [BUNDLE]   # here: BUNDLE (default target/gpu-check) holds all
#                                         # to carry
#   BUNDLE/gpu_check.sh run [OUT]         # there: writes OUT/summary.md (default
#                                         # ./gpu-check-results) and one log per run
#
# The run half checks, before it starts a LibTorch binary, that the Python it is given (PY,
# default python3) imports torch 2.9.0, the version the binaries were linked against, and
# otherwise skips the tch-cuda half with an error that says what to install. The Vulkan half
# needs the NVIDIA driver with its Vulkan ICD; the bundle carries a Vulkan loader for machines
# without one. BACKENDS (default "vulkan tch-cuda") chooses the halves to build or run.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/vulkan_loader.sh
source "$here/vulkan_loader.sh"
mode="${1:-}"
backends="${BACKENDS:-vulkan tch-cuda}"
torch_version=2.9.0

# The executable of the conformance suite that `cargo test ... --no-run` built, from cargo's
# JSON messages.
conformance_binary() {
    cargo test --profile conformance --features "$1" --test backends --no-run \
        --message-format=json-render-diagnostics |
        python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") \
            and message["target"]["name"] == "backends":
        print(message["executable"])
'
}

build_one() {
    local backend="$1" bundle="$2" suite
    cargo build --release --features "$backend" --example mmdit_bench
    cp target/release/examples/mmdit_bench "$bundle/mmdit_bench-$backend"
    suite="$(conformance_binary "$backend")"
    cp "$suite" "$bundle/backends-$backend"
    strip "$bundle/mmdit_bench-$backend" "$bundle/backends-$backend" 2>/dev/null ||
        echo "warning: no strip: the binaries keep their symbols" >&2
}

build() {
    local bundle="${1:-target/gpu-check}"
    cd "$here/.."
    mkdir -p "$bundle"
    bundle="$(cd "$bundle" && pwd)"
    local backend
    for backend in $backends; do
        case "$backend" in
            vulkan)
                build_one vulkan "$bundle"
                bundle_vulkan_loader "$bundle"
                ;;
            tch-cuda)
                local exports
                exports="$(scripts/libtorch_env.sh)"
                (eval "$exports" && build_one tch-cuda "$bundle")
                echo "$torch_version" >"$bundle/PYTORCH_VERSION"
                ;;
            *) echo "error: unknown backend $backend (vulkan or tch-cuda)" >&2; exit 2 ;;
        esac
    done
    # The suite reads the MMDiT fixture from the repository's tests/fixtures/mmdit.
    mkdir -p "$bundle/tests/fixtures"
    cp -r tests/fixtures/mmdit "$bundle/tests/fixtures/"
    cp scripts/gpu_check.sh scripts/vulkan_loader.sh "$bundle/"
    echo "bundle ready: $bundle ($(du -sh "$bundle" | cut -f1)); carry it and run: $bundle/gpu_check.sh run"
}

# The torch/lib folder of PY's PyTorch when it is version $torch_version, else an error.
torch_lib_dir() {
    local py="${PY:-python3}" found
    if ! found="$("$py" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)"; then
        echo "error: $py cannot import torch; the tch-cuda binaries need PyTorch $torch_version's CUDA build (pip install torch==$torch_version, or set PY)" >&2
        return 1
    fi
    if [ "$found" != "$torch_version" ]; then
        echo "error: $py has PyTorch $found, but the tch-cuda binaries were linked against PyTorch $torch_version (pip install torch==$torch_version, or set PY)" >&2
        return 1
    fi
    "$py" -c 'import pathlib, torch; print(pathlib.Path(torch.__file__).parent / "lib")'
}

# Runs the suite and the benchmark of one backend; appends its rows to the summary.
run_one() {
    local backend="$1" out="$2" summary="$3" status
    echo "== conformance suite on $backend"
    # The suite finds the MMDiT fixture under FLOW_RL_REPOSITORY, here the bundle.
    if FLOW_RL_REPOSITORY="$here" "$here/backends-$backend" >"$out/conformance-$backend.log" 2>&1; then
        status="passed"
    else
        status="FAILED"
    fi
    local result
    result="$(grep -E '^test result:' "$out/conformance-$backend.log" | tail -n 1 || true)"
    echo "| $backend | conformance suite | $status: ${result:-no result line, see conformance-$backend.log} |" >>"$summary"
    local config
    for config in "--config tiny" "--config custom --depth 6 --heads 6 --resolution 256" "--config sd35-medium --resolution 512 --iterations 2"; do
        echo "== mmdit_bench on $backend: $config"
        # shellcheck disable=SC2086
        if "$here/mmdit_bench-$backend" --backend "$backend" $config >"$out/bench.log" 2>&1; then
            local lines
            lines="$(grep -E '^(forward|forward \+ backward)' "$out/bench.log" | tr -s ' ' | paste -sd ';' -)"
            echo "| $backend | mmdit_bench $config | $lines |" >>"$summary"
        else
            local reason
            reason="$(grep -m 1 -iE 'error|failed' "$out/bench.log" || tail -n 1 "$out/bench.log")"
            echo "| $backend | mmdit_bench $config | FAILED: $reason |" >>"$summary"
        fi
        cat "$out/bench.log" >>"$out/mmdit-bench-$backend.log"
    done
}

run() {
    local out="${1:-gpu-check-results}"
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    local summary="$out/summary.md"
    {
        echo "# GPU check"
        echo
        echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo unknown); $(date -u +%Y-%m-%d); command: gpu_check.sh run"
        echo
        echo "| backend | run | result |"
        echo "| --- | --- | --- |"
    } >"$summary"
    local backend
    for backend in $backends; do
        case "$backend" in
            vulkan)
                warn_without_nvidia_icd
                # The bundled loader is a fallback behind the system's.
                (export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$here" &&
                    run_one vulkan "$out" "$summary")
                ;;
            tch-cuda)
                local lib
                if lib="$(torch_lib_dir)"; then
                    (export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" &&
                        run_one tch-cuda "$out" "$summary")
                else
                    echo "| tch-cuda | all | skipped: no PyTorch $torch_version (see the error above) |" >>"$summary"
                fi
                ;;
            *) echo "error: unknown backend $backend (vulkan or tch-cuda)" >&2; exit 2 ;;
        esac
    done
    cat "$summary"
}

case "$mode" in
    build) shift; build "$@" ;;
    run) shift; run "$@" ;;
    *)
        echo "usage: $0 build [BUNDLE] | run [OUT]" >&2
        exit 2
        ;;
esac
