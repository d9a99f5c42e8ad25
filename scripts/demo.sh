#!/usr/bin/env bash
# The training demo (README's second entry point): train a toy countermeasure
# with each spoofloss loss, the fused kernels side by side with the plain-PyTorch reference.
#   bash scripts/demo.sh [--device cpu|cuda] [--epochs N] [--steps N] [--seed N]
# Sets up .venv and builds spoofloss when needed (scripts/ensure_built.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ENSURE_BUILT_TAG=demo
# shellcheck source=scripts/ensure_built.sh
source scripts/ensure_built.sh

exec python -m spoofloss.demo "$@"
