#!/usr/bin/env bash
# README's main command: time each spoofloss loss against the plain-PyTorch
# reference (eager and torch.compile) on the local device (CUDA when present, else
# the CPU), print the table and the targets, and save JSON + plot under
# benchmarks/results/<device>/.
#   bash scripts/bench.sh                 # the default set (a few minutes at most)
#   bash scripts/bench.sh --full          # the whole sweep (prints its estimated time first)
#   bash scripts/bench.sh --loss oc --mode train score --batch 32 --frames 200 --dim 128
# Extra arguments go to benchmarks/bench_losses.py (--help lists them).
# Sets up .venv, and (re)builds spoofloss when the installed library does not fit:
# on a GPU (or with --device cuda) the CUDA build with code for this GPU, else a
# build with the real CPU kernels, never the emulated or sanitized one; and after
# a source change (scripts/build.sh ensure_built, scripts/build_status.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_TAG=bench
# shellcheck source=scripts/setup_env.sh
source scripts/setup_env.sh
# shellcheck source=scripts/build.sh
source scripts/build.sh
ensure_built "$(need_for_device "$@")"

exec python benchmarks/bench_losses.py "$@"
