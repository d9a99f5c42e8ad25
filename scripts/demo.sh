#!/usr/bin/env bash
# The training demo (README's second entry point): train a toy countermeasure
# with each spoofloss loss, the fused kernels side by side with the plain-PyTorch reference.
#   bash scripts/demo.sh [--device cpu|cuda] [--epochs N] [--steps N] [--seed N]
# Sets up .venv, and (re)builds spoofloss when the installed library does not fit:
# on a GPU (or with --device cuda) the CUDA build with code for this GPU, else a
# build with the real CPU kernels, never the emulated or sanitized one; and after
# a source change (scripts/build.sh ensure_built, scripts/build_status.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_TAG=demo
# shellcheck source=scripts/setup_env.sh
source scripts/setup_env.sh
# shellcheck source=scripts/build.sh
source scripts/build.sh
ensure_built "$(need_for_device "$@")"

exec python -m spoofloss.demo "$@"
