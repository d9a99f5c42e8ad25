#!/usr/bin/env bash
# README's main command: train a toy countermeasure with each spoofloss loss, the
# fused kernels side by side with the plain-PyTorch reference.
#   bash scripts/demo.sh [--device cpu|cuda] [--epochs N] [--steps N] [--seed N]
# Sets up .venv (scripts/setup_env.sh) and (re)builds spoofloss when its compiled
# library is missing, does not import, or is older than the C++/CUDA sources or the
# build files. The build takes setup.py's default decision (CUDA when torch is a CUDA
# build and nvcc is found); SPOOFLOSS_CPU_ONLY=1 or FORCE_CUDA=1 override it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/setup_env.sh
source scripts/setup_env.sh

need_build=""
so="$(python -c 'import spoofloss._C as C; print(C.__file__)' 2>/dev/null)" || need_build="spoofloss._C does not import"
if [ -z "$need_build" ]; then
    newer="$(find csrc setup.py pyproject.toml -newer "$so" -type f \
        \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' -o -name '*.py' -o -name '*.toml' \) \
        -print -quit 2>/dev/null || true)"
    if [ -n "$newer" ]; then need_build="$newer is newer than $(basename "$so")"; fi
fi

if [ -n "$need_build" ]; then
    log="$(mktemp "${TMPDIR:-/tmp}/spoofloss-build.XXXXXX.log")"
    echo "[demo] building spoofloss ($need_build); this takes a few minutes; log: $log"
    start=$SECONDS
    if ! python -m pip install --no-build-isolation --no-deps --disable-pip-version-check -v -e . >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "[demo] build FAILED; full log: $log" >&2
        exit 1
    fi
    grep -F '[spoofloss setup]' "$log" | sed 's/^ *//' | awk '!seen[$0]++' || true
    echo "[demo] built in $((SECONDS - start)) s"
fi

exec python -m spoofloss.demo "$@"
