#!/usr/bin/env bash
# Makes sure Open MPI and libclang are installed, for the `mpi` feature (the mpi crate's
# build runs bindgen on mpi.h, and its tests run `mpirun`). Installs Debian's packages with
# apt-get when they are missing (as root, or through sudo when it needs no password);
# otherwise says what to install and fails.
set -euo pipefail

packages=(libopenmpi-dev openmpi-bin libclang-dev)

installed() {
    command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 &&
        ldconfig -p 2>/dev/null | grep -q 'libclang'
}

if installed; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "Open MPI or libclang is missing, and there is no apt-get to install them: install" \
         "an MPI implementation (mpirun, mpicc) and libclang, then run this again." >&2
    exit 1
fi
run=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        run=(sudo)
    else
        echo "Open MPI or libclang is missing. Install them as root:" >&2
        echo "    apt-get update && apt-get install -y ${packages[*]}" >&2
        exit 1
    fi
fi
echo "Installing ${packages[*]} (Open MPI and libclang, for the mpi feature)" >&2
"${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
"${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${packages[@]}" >&2
