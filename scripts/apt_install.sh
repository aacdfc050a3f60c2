#!/usr/bin/env bash
# Installs Debian packages for a missing system dependency, or says how to:
#
#   scripts/apt_install.sh "Open MPI and libclang" libopenmpi-dev openmpi-bin libclang-dev
#
# The first argument names what is missing, for the messages. Installs with apt-get as root,
# or through sudo when it needs no password; otherwise prints the command to run as root
# and fails. Progress goes to standard error.
set -euo pipefail

what="$1"
shift
packages=("$@")

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$what is missing, and there is no apt-get to install it: install it (Debian's" \
         "${packages[*]}), then run this again." >&2
    exit 1
fi
run=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        run=(sudo)
    else
        echo "$what is missing. Install it as root:" >&2
        echo "    apt-get update && apt-get install -y ${packages[*]}" >&2
        exit 1
    fi
fi
echo "$what is missing: installing ${packages[*]}" >&2
"${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
"${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${packages[@]}" >&2
