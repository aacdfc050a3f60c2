#!/usr/bin/env bash
# Makes sure Open MPI and libclang are installed, for the `mpi` feature (the mpi crate's
# build runs bindgen on mpi.h, and its tests run `mpirun`); installs Debian's packages when
# they are missing (scripts/apt_install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

installed() {
    command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 &&
        ldconfig -p 2>/dev/null | grep -q 'libclang'
}

if ! installed; then
    scripts/apt_install.sh "Open MPI or libclang (for the mpi feature)" \
        libopenmpi-dev openmpi-bin libclang-dev
fi
