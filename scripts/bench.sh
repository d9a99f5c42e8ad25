#!/usr/bin/env bash
# README's main command: time each spoofloss loss against the plain-PyTorch
# reference (eager and torch.compile) on the local device (CUDA when present, else
# the CPU), print the table and the targets, and save JSON + plot under
# benchmarks/results/<device>/.
#   bash scripts/bench.sh                 # the default set (a few minutes at most)
#   bash scripts/bench.sh --full          # the whole sweep (prints its estimated time first)
#   bash scripts/bench.sh --loss oc --mode train score --batch 32 --frames 200 --dim 128
# Extra arguments go to benchmarks/bench_losses.py (--help lists them).
# Sets up .venv and builds spoofloss when needed (scripts/ensure_built.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ENSURE_BUILT_TAG=bench
# shellcheck source=scripts/ensure_built.sh
source scripts/ensure_built.sh

exec python benchmarks/bench_losses.py "$@"
