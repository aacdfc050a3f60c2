#!/usr/bin/env bash
# The test suite, as CI runs it, on a machine with or without a GPU:
#   1. every test on flex, the default CPU backend (`cargo test`), then the CLIP tokenizer on
#      CLIP's real vocabulary (downloaded from PyPI inside the open_clip_torch wheel);
#   2. data-parallel training over `mpirun -np 2` (`cargo test --features mpi --test
#      distributed`), with Open MPI, which scripts/openmpi.sh installs when missing;
#   3. the backend-conformance suite on wgpu and on LibTorch's CPU backend (tch), each
#      compared with flex, in one build
#      (`cargo test --profile conformance --features wgpu,tch --test backends`; that profile,
#      in Cargo.toml, builds dependencies at opt-level 1 without debug info: 15 min from
#      nothing on 2 cores, against 26 min for the dev profile even after the flex build).
# Step 3 needs a Vulkan driver. Without a GPU that is Mesa's software Vulkan (lavapipe), which
# this script installs with apt-get when no Vulkan driver is found (as root, or through sudo
# when it needs no password); otherwise it says what to install and stops. It also needs
# PyTorch 2.9.0, which scripts/libtorch_env.sh installs from PyPI into a virtual environment
# outside the repository when it is missing (about 7 GiB, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

vulkan_driver_present() {
    # The loader finds drivers through ICD manifests in these directories.
    local dir
    for dir in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
        if compgen -G "$dir/*.json" >/dev/null; then
            # A manifest without the loader itself (libvulkan1) is not enough.
            ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' && return 0
        fi
    done
    return 1
}

if ! vulkan_driver_present; then
    scripts/apt_install.sh "A Vulkan driver (here Mesa's software Vulkan, lavapipe)" \
        mesa-vulkan-drivers libvulkan1
fi

# Lavapipe's window-system code complains (harmlessly) when this is unset; a private empty
# directory quiets it.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    XDG_RUNTIME_DIR="$(mktemp -d)"
    export XDG_RUNTIME_DIR
fi

cargo test

# The CLIP tokenizer on CLIP's real 49408-token vocabulary, against transformers' ids of 214
# prompts (tests/fixtures/clip/vocab_ids.json). The vocabulary ships only inside the
# open_clip_torch wheel, so it is downloaded from PyPI (no dependencies, about 1.5 MB) and
# converted by scripts/clip_vocab.py, which needs nothing beyond Python's standard library.
if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 is missing: it builds CLIP's real vocabulary for tests/clip.rs; install it" >&2
    exit 1
fi
clip_vocab="$(mktemp -d)"
python3 -m pip download --quiet --no-deps --dest "$clip_vocab/wheel" open_clip_torch==3.3.0
python3 scripts/clip_vocab.py "$clip_vocab"/wheel/open_clip_torch-3.3.0-py3-none-any.whl \
    --out "$clip_vocab/vocab"
FLOW_RL_CLIP_VOCAB="$clip_vocab/vocab" cargo test --test clip -- --ignored

# Several workers through MPI: each test starts `mpirun -np 2` on its own test binary.
scripts/openmpi.sh
cargo test --features mpi --test distributed

libtorch_exports="$(scripts/libtorch_env.sh)"
eval "$libtorch_exports"
cargo test --profile conformance --features wgpu,tch --test backends
