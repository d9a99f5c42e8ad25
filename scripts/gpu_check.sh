#!/usr/bin/env bash
# What only a GPU can tell, as one prepared command for a machine lent with a GPU
# (the device tool of this project's sessions: about 15 minutes of GPU time in all,
# each start counted, at most 10 minutes a command; nothing can be downloaded there).
#
#   bash scripts/gpu_check.sh [OUT_DIR]       (through the device tool: bash scripts/gpu_check.sh "$OUT")
#
# It uses the machine's python3 as it is (torch with CUDA, ninja, pytest; no venv,
# no download) and runs these steps, each with a time budget cut to what is left
# of GPU_CHECK_DEADLINE, their output in OUT_DIR (default build/gpu-check):
# build.log, tests.log, sanitizers.log, bench.log and the benchmark's JSON and plot
# (7 files: the device tool brings back 8 at most), and summary.txt:
#   build       the CUDA build for this GPU's architecture alone (scripts/build.sh,
#               editable, in place), checked to be what Python imports
#   tests       the CUDA tests of the suite (pytest -m cuda; pytest-xdist's -n when
#               it is there)
#   memcheck, racecheck, synccheck, initcheck
#               compute-sanitizer's four tools on tests/helpers/every_kernel.py,
#               the short tour of every kernel with every dtype and path (the
#               emulated suite proves it reaches them all), only spoofloss's
#               kernels instrumented where the tool can filter
#   bench       benchmarks/bench_losses.py's default CUDA set, spoofloss against
#               the eager op chain (torch.compile's first compiles alone would
#               outlast the budget; GPU_CHECK_BENCH_ARGS replaces the arguments),
#               JSON and plot under OUT_DIR/bench/<device>/
# summary.txt names the GPU and torch, and each step's outcome, counts and time.
# Exit status: 0 only when every step ran and passed; a step without time left
# is reported as not run and counts as a failure.
#
# Environment: GPU_CHECK_STEPS (default "build tests memcheck racecheck bench
# synccheck initcheck", run in that order), GPU_CHECK_DEADLINE (seconds for all,
# default 540, under the tool's 600-s limit), GPU_CHECK_COMMIT (the commit to name
# in the summary: the copy of the tree on that machine has no .git), PYTHON
# (default python3), GPU_CHECK_BENCH_ARGS.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"

OUT_DIR="$(mkdir -p "${1:-build/gpu-check}" && cd "${1:-build/gpu-check}" && pwd)"
# what must not come back with OUT_DIR (the device tool returns at most 8 files)
WORK="$REPO/build/gpu-check-work"
STEPS="${GPU_CHECK_STEPS:-build tests memcheck racecheck bench synccheck initcheck}"
DEADLINE="${GPU_CHECK_DEADLINE:-540}"
[[ "$DEADLINE" =~ ^[0-9]+$ ]] || { echo "gpu_check: GPU_CHECK_DEADLINE must be a number of seconds, got '$DEADLINE'" >&2; exit 2; }
PYTHON_BIN="$(command -v "${PYTHON:-python3}")" || { echo "gpu_check: no ${PYTHON:-python3} on PATH" >&2; exit 2; }
SUMMARY="$OUT_DIR/summary.txt"
FAILED=0
T0=$SECONDS

# scripts/build.sh and build_status.py call "python": the same interpreter, by a
# wrapper (a symlink could lose a venv's site-packages)
rm -rf "$WORK" && mkdir -p "$WORK/bin" "$WORK/build-logs"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PYTHON_BIN" >"$WORK/bin/python"
chmod +x "$WORK/bin/python"
export PATH="$WORK/bin:$PATH"

say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((DEADLINE - (SECONDS - T0))); }

# run_step NAME LOG BUDGET COMMAND...: COMMAND under min(BUDGET, the time left), its
# output in WORK/NAME.out and appended to OUT_DIR/LOG; sets STEP_RC and STEP_TIME.
# Returns 1, with a summary line, when under 20 s are left (the step does not run).
run_step() {
    local name="$1" log="$2" budget="$3" limit t
    shift 3
    limit=$(left)
    [ "$budget" -lt "$limit" ] && limit=$budget
    if [ "$limit" -lt 20 ]; then
        say "$(printf '%-10s NOT RUN: %d s of the deadline left' "$name" "$(left)")"
        FAILED=1
        return 1
    fi
    echo "=== [$(date +%H:%M:%S)] $name (at most $limit s) ==="
    t=$SECONDS
    STEP_RC=0
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.out" 2>&1 || STEP_RC=$?
    STEP_TIME=$((SECONDS - t))
    { echo "=== $name: $* (exit $STEP_RC, $STEP_TIME s)"; cat "$WORK/$name.out"; } >>"$OUT_DIR/$log"
    tail -n 15 "$WORK/$name.out"
}

# outcome NAME DETAIL: the summary line of the step just run
outcome() {
    local name="$1" detail="$2" word
    case $STEP_RC in
        0) word=passed ;;
        124|137) word="STOPPED at its time limit"; FAILED=1 ;;
        *) word="FAILED (exit $STEP_RC)"; FAILED=1 ;;
    esac
    say "$(printf '%-10s %s in %d s%s' "$name" "$word" "$STEP_TIME" "${detail:+: $detail}")"
}

rm -rf "$OUT_DIR"/{build,tests,sanitizers,bench}.log "$OUT_DIR/bench"
: >"$SUMMARY"
say "spoofloss gpu_check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit ${GPU_CHECK_COMMIT:-unknown (set GPU_CHECK_COMMIT)}"
if ! "$PYTHON_BIN" - >>"$SUMMARY" 2>&1 <<'PY'
import sys, torch
if not torch.cuda.is_available():
    print("no CUDA GPU visible to torch: nothing to check here")
    sys.exit(1)
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} multiprocessors, "
      f"{p.total_memory / 2**30:.0f} GiB; torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"python {sys.version.split()[0]}")
PY
then
    cat "$SUMMARY"
    exit 2
fi
tail -n 1 "$SUMMARY"
CAPABILITY="$("$PYTHON_BIN" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

for step in $STEPS; do
    case "$step" in
    build)
        BUILD_TAG=gpu-check BUILD_LOG_DIR="$WORK/build-logs" run_step build build.log 300 \
            bash -c 'source scripts/build.sh && TORCH_CUDA_ARCH_LIST="$1" build_variant cuda' _ "$CAPABILITY" || break
        outcome build "sm_${CAPABILITY/./} only; $(grep -m1 -o 'installed: .*' "$WORK/build.out" || echo 'see build.log')"
        if [ "$STEP_RC" != 0 ]; then
            cat "$WORK"/build-logs/*.log >>"$OUT_DIR/build.log" 2>/dev/null
            say "the build failed (its pip log is in build.log): no other step can run"
            break
        fi
        ;;
    tests)
        parallel=()
        "$PYTHON_BIN" -c 'import xdist' 2>/dev/null && parallel=(-n 8)
        run_step tests tests.log 240 "$PYTHON_BIN" -m pytest -q -ra -p no:cacheprovider -m cuda "${parallel[@]}" tests \
            || continue
        outcome tests "$(grep -E '^[=[:space:]]*[0-9]+ (passed|failed|skipped|errors?)\b.* in [0-9.]+s' "$WORK/tests.out" | tail -n 1 | sed 's/^=* *//; s/ *=*$//')"
        ;;
    memcheck|racecheck|synccheck|initcheck)
        sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)"
        if [ -z "$sanitizer" ]; then
            say "$(printf '%-10s NOT RUN: no compute-sanitizer on PATH or in /usr/local/cuda/bin' "$step")"
            FAILED=1
            continue
        fi
        filter=()
        if "$sanitizer" --help 2>/dev/null | grep -q -- '--kernel-name'; then
            filter=(--kernel-name kns=spoofloss)
        elif "$sanitizer" --help 2>/dev/null | grep -q -- '--filter'; then
            filter=(--filter kns=spoofloss)
        fi
        run_step "$step" sanitizers.log 120 bash -c 'cd tests && exec "$@"' _ "$sanitizer" --tool "$step" \
            --error-exitcode 3 "${filter[@]}" "$PYTHON_BIN" -m helpers.every_kernel --device cuda || continue
        outcome "$step" "$(grep -E 'SUMMARY' "$WORK/$step.out" | tail -n 1 | sed 's/^=* *//')$(
            grep -o 'every_kernel: [0-9]* cases' "$WORK/$step.out" | sed 's/^/; /')${filter[*]:+ (${filter[*]})}"
        ;;
    bench)
        read -r -a bench_args <<<"${GPU_CHECK_BENCH_ARGS:---device cuda --provider spoofloss eager}"
        run_step bench bench.log 180 "$PYTHON_BIN" benchmarks/bench_losses.py "${bench_args[@]}" \
            --out-dir "$OUT_DIR/bench" || continue
        outcome bench "$(find "$OUT_DIR/bench" -name '*.json' 2>/dev/null | sed "s|^$OUT_DIR/||" | head -n 1)"
        ;;
    *)
        say "gpu_check: unknown step '$step' (build tests memcheck racecheck synccheck initcheck bench)"
        FAILED=1
        ;;
    esac
done

say "total $((SECONDS - T0)) s; logs in $OUT_DIR"
echo
cat "$SUMMARY"
exit $FAILED
