#!/usr/bin/env bash
# System packages for the benchmarks in bench/ only: the test suite and the product never need them.
#
#   bash scripts/setup-bench.sh
#
# Installs wrk (Debian's package), the HTTP load generator bench/bench_receiver.py drives.
# Idempotent: does nothing when wrk is already on PATH. Needs root, or sudo.
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
    echo "wrk already installed: $(command -v wrk)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "installing wrk needs root (or sudo): apt-get install -y wrk" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends wrk
echo "wrk installed: $(command -v wrk)"
