#!/usr/bin/env bash
# The LibTorch that the `tch` feature builds and runs against: PyTorch 2.9.0 (the version
# tch 0.22 expects) from PyPI, in a virtual environment outside the repository. Creates the
# environment when it is missing, then prints the shell lines that point a cargo build and the
# built binaries at it:
#
#   eval "$(scripts/libtorch_env.sh)"
#   cargo test --features tch --test backends
#   cargo run --release --features tch --example mmdit_bench -- --backend tch
#
# FLOW_RL_LIBTORCH_VENV chooses the environment (default ~/.cache/flow-rl/libtorch-2.9.0).
# torch-sys's build script reads PyTorch's paths from the environment's Python
# (LIBTORCH_USE_PYTORCH=1), so nothing is downloaded at build time. PyPI's Linux wheel is the
# CUDA build, and even its CPU library needs the CUDA runtime, so the nvidia-* wheels come
# too (about 7 GiB on disk); the same environment then also serves `--backend tch-cuda` on a
# machine with an NVIDIA driver. Progress goes to stderr, the exports alone to stdout.
set -euo pipefail

torch_version=2.9.0
venv="${FLOW_RL_LIBTORCH_VENV:-$HOME/.cache/flow-rl/libtorch-$torch_version}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$(realpath -m "$venv")"
case "$venv/" in
    "$repo"/*)
        echo "error: FLOW_RL_LIBTORCH_VENV=$venv is inside the repository $repo;" \
             "choose a path outside it" >&2
        exit 2
        ;;
esac

installed_version() {
    "$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null
}

if [ "$(installed_version || true)" != "$torch_version" ]; then
    echo "Installing PyTorch $torch_version from PyPI into $venv (about 7 GiB)" >&2
    python="${PYTHON:-python3}"
    if [ ! -x "$venv/bin/python" ] && ! "$python" -m venv "$venv" >&2; then
        # Debian's Python keeps venv in a package of its own.
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            rm -rf "$venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
            "$python" -m venv "$venv" >&2
        else
            echo "error: $python cannot create a virtual environment; install python3-venv" >&2
            exit 1
        fi
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "torch==$torch_version" numpy==2.4.6 >&2
    if [ "$(installed_version || true)" != "$torch_version" ]; then
        echo "error: PyTorch $torch_version did not import from $venv after installing it" >&2
        exit 1
    fi
fi

torch_lib="$("$venv/bin/python" -c \
    'import pathlib, torch; print(pathlib.Path(torch.__file__).parent / "lib")')"
cat <<EOF
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:\$PATH"
export LIBTORCH_USE_PYTORCH=1
export LD_LIBRARY_PATH="$torch_lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
