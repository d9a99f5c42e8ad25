#!/usr/bin/env bash
# README's benchmark command: time each spoofloss loss against the plain-PyTorch
# reference (eager and torch.compile) on the local device (CUDA when present, else
# the CPU), print the table and the targets, and save JSON + plot under
# benchmarks/results/<device>/.
#   bash scripts/bench.sh                 # the default set (a few minutes at most)
#   bash scripts/bench.sh --full          # the whole sweep (prints its estimated time first)
#   bash scripts/bench.sh --loss oc --mode train score --batch 32 --frames 200 --dim 128
# Extra arguments go to benchmarks/bench_losses.py (--help lists them).
# Sets up .venv (scripts/setup_env.sh) and (re)builds spoofloss when its compiled
# library is missing, does not import, or is older than the C++/CUDA sources or the
# build files, the way scripts/demo.sh does.
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
    echo "[bench] building spoofloss ($need_build); this takes a few minutes; log: $log"
    start=$SECONDS
    if ! python -m pip install --no-build-isolation --no-deps --disable-pip-version-check -v -e . >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "[bench] build FAILED; full log: $log" >&2
        exit 1
    fi
    grep -F '[spoofloss setup]' "$log" | sed 's/^ *//' | awk '!seen[$0]++' || true
    echo "[bench] built in $((SECONDS - start)) s"
fi

exec python benchmarks/bench_losses.py "$@"
