#!/usr/bin/env bash
# README's test command.
#
#   bash scripts/test.sh --quick [PYTEST_ARGS]       the inner loop: one build, the whole suite
#   bash scripts/test.sh [PYTEST_ARGS]               everything CI runs (.ci/run)
#   bash scripts/test.sh --stage 4 [--stage 5] ...   only those stages of the full run
#
# --quick builds the variant that runs the most kernel code on this machine (the
# CUDA build where torch sees a GPU, else the emulated-CUDA build), only when the
# installed library is another variant or older than the sources, and runs the
# whole suite on it (the emulated build: with every CUDA kernel required to run).
#
# The full run builds spoofloss every supported way and tests each build:
#   1. emulated-CUDA build (the CUDA kernels on an emulated device, for CPU
#      tensors): the suite but the tests that call no compiled op (stages 3 and 6
#      run those), scheduling seed 1 and 132 multiprocessors, with every kernel
#      required to have run with every dtype; and the parity tests under seed 2
#      and 108 multiprocessors;
#   2. the emulated build with AddressSanitizer + UBSan: the parity tests;
#   3. CPU-only build from a clean build folder, the whole suite;
#   4. CUDA build (when nvcc is on PATH and torch is a CUDA build): check with
#      cuobjdump that it holds a cubin for every architecture of the list (default
#      in scripts/build_config.py), the PTX of the "+PTX" one, and every kernel in
#      each (scripts/check_device_code.py); then the whole suite where a GPU is,
#      else the op and module tests (stages 1 and 3 cover the kernels without one);
#   5. the CMake build of the op library (CPU only) and its tests (ctest): the
#      library loaded into Python with torch.ops.load_library, and linked into a
#      C++ program, each calling the ops on data against independent results;
#   6. scripts/check_wheel.sh: a wheel built in a clean copy against a second torch
#      release, installed into a fresh venv, and the suite run against it.
#
# How the run keeps both cores busy (on the 2-core CI machine a test run uses one
# core, a build both):
#   - stages 1-4 build one after another in this process (each build is an editable
#     install in place); as soon as a build is done and checked, its library is
#     copied to build/test-runs/<run>/spoofloss and its test runs start in the
#     background against that copy (PYTHONPATH), while the next build goes on;
#   - the builds go in the order above, the longest test runs first;
#   - stages 5 and 6 touch neither the installed library nor the build folders of
#     1-4: they run in a second process beside them;
#   - every test run uses one thread (OMP_NUM_THREADS=1: several processes with
#     two spinning OpenMP threads each on two cores run several times slower;
#     tests/test_accuracy.py sets 1, 2 and 3 threads itself, where it matters);
#   - each test run's output is printed, with its counts and time, when the run is
#     done and every build has been; a failed run stops the whole run at the next
#     check (after each build, and while waiting).
# The run ends with the build bench.sh and demo.sh use on this machine installed
# (the CUDA build where a GPU is, else the CPU-only one, set aside when it was
# built), never a sanitized library, which aborts any Python that imports it
# without the sanitizer runtimes preloaded.
#
# Extra arguments go to pytest (e.g. scripts/test.sh --quick -k binary -x).
# Environment: TORCH_CUDA_ARCH_LIST, MAX_JOBS (default here: the number of cores),
# NVCC_THREADS (see setup.py), SPOOFLOSS_SKIP_CUDA=1 skips stage 4,
# SPOOFLOSS_SKIP_DISK_CHECK=1 the check of free disk space at the start;
# check_wheel.sh's own (WHEEL_TORCH ...).

# The tests that compare every op against the float64 reference: the ones the
# emulated build repeats under a second seed and under the sanitizers.
PARITY_TESTS=(tests/test_ops.py tests/test_losses.py tests/test_modules.py tests/test_emulation.py)
# The tests that call no compiled op (spoofloss.metrics and the float64 reference
# alone): what they check does not change with the build variant, so the CPU-only
# build (stage 3) and the wheel (stage 6) run them and the emulated build does not.
KERNEL_FREE_TESTS=(tests/test_metrics*.py tests/test_reference.py)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
QUICK=0
STAGES=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --stage) STAGES="$STAGES ${2:?--stage needs a number, 1 to 6}"; shift 2 ;;
        --stage=*) STAGES="$STAGES ${1#--stage=}"; shift ;;
        *) break ;;
    esac
done
LANES=0
if [ $QUICK = 0 ] && [ -z "$STAGES" ]; then
    STAGES="1 2 3 4"  # and 5 6 in the second lane
    LANES=1
fi
wants() { [[ " $STAGES " == *" $1 "* ]]; }

T_START=$SECONDS
STAGE=setup
STAGE_T0=$SECONDS
TIMINGS=()
LANE_PID=""
LANE_LOG=""
# the background test runs: name, what it runs, pid (a process group), log
RUN_NAMES=()
RUN_WHATS=()
RUN_PIDS=()
RUN_LOGS=()
RUNS_DIR=build/test-runs

stage() {
    STAGE="$1"
    STAGE_T0=$SECONDS
    echo
    echo "=== [$(date +%H:%M:%S)] $STAGE ==="
}
stage_done() {
    local line
    line="$(printf -- '--- %-48s %4d s   (total %4d s)' "$STAGE:" $((SECONDS - STAGE_T0)) $((SECONDS - T_START)))"
    echo "$line"
    TIMINGS+=("$line")
}
fail() {
    echo "FAIL [$STAGE]: $*" >&2
    exit 1
}
on_exit() {
    local rc=$? so pid
    # the second lane and the test runs (each its own process group) end with this one
    for pid in $LANE_PID "${RUN_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && kill -- "-$pid" 2>/dev/null || true
    done
    [ -z "$LANE_PID" ] || echo "stopped whatever still ran of stages 5 and 6 (log: $LANE_LOG)" >&2
    # a sanitized library must not stay installed (a failure in stage 2 would leave it)
    so="$(ls python/spoofloss/_C*.so 2>/dev/null | head -n 1 || true)"
    if wants 2 && [ -n "$so" ] && grep -aq 'libasan\.so' "$so"; then
        rm -f python/spoofloss/_C*.so
        echo "removed the sanitized library $so (it aborts any Python that imports it without the" \
             "sanitizer runtimes); the next bench.sh, demo.sh or test.sh --quick rebuilds" >&2
    fi
    [ $rc -eq 0 ] || echo "scripts/test.sh FAILED in stage \"$STAGE\" (exit $rc) after $((SECONDS - T_START)) s" >&2
}
trap on_exit EXIT

run_pytest() {
    local rc=0
    python -m pytest -q -ra "$@" || rc=$?
    case $rc in
        0) ;;
        5) fail "pytest collected no tests (exit 5): tests/ is empty or every test was deselected" ;;
        *) fail "pytest failed (exit $rc)" ;;
    esac
}

# start_tests NAME WHAT [VAR=value ...] -- PYTEST_ARGS...
# Copy the library just built to $RUNS_DIR/NAME and start pytest against that copy
# in the background, one thread, with the VAR=value settings; its output goes to a
# log, and its exit status and time to LOG.done when it ends.
start_tests() {
    local name="$1" what="$2" copy log
    local settings=()
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do settings+=("$1"); shift; done
    shift  # the --
    copy="$PWD/$RUNS_DIR/$name"
    log="$BUILD_LOG_DIR/tests-$name.log"
    rm -rf "$copy" && mkdir -p "$copy" && cp -a python/spoofloss "$copy/" || fail "copying the library for $name"
    rm -f "$log.done"
    # setsid: its own process group, so that on_exit can stop all of it
    setsid bash -c 'log="$1"; shift; t0=$SECONDS; rc=0; env "$@" >"$log" 2>&1 || rc=$?
                    echo "$rc $((SECONDS - t0))" >"$log.done"' \
        start_tests "$log" "${settings[@]}" PYTHONPATH="$copy${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1 \
        python -m pytest -q -ra -p no:cacheprovider "$@" &
    RUN_NAMES+=("$name")
    RUN_WHATS+=("$what")
    RUN_PIDS+=($!)
    RUN_LOGS+=("$log")
    echo "--- started in the background: $name: $what (log: $log)"
}

# The result of test run I: "running", "passed", or why it failed.
run_result() {
    local log="${RUN_LOGS[$1]}" rc secs
    if [ ! -f "$log.done" ]; then
        kill -0 "${RUN_PIDS[$1]}" 2>/dev/null && { echo running; return; }
        echo "ended without an exit status"; return
    fi
    read -r rc secs <"$log.done"
    case $rc in
        0) echo passed ;;
        5) echo "collected no tests (exit 5)" ;;
        *) echo "pytest failed (exit $rc)" ;;
    esac
}

# Stop the whole run at the first test run that has failed: its log, then fail.
check_runs() {
    local i result
    for i in "${!RUN_NAMES[@]}"; do
        result="$(run_result "$i")"
        case "$result" in
            running|passed) ;;
            *) sed 's/^/  | /' "${RUN_LOGS[$i]}"
               fail "test run ${RUN_NAMES[$i]} (${RUN_WHATS[$i]}): $result; its log is above and in ${RUN_LOGS[$i]}" ;;
        esac
    done
}

# Wait for every test run, in the order they started; print each log, counts, time.
finish_runs() {
    local i rc secs line
    for i in "${!RUN_NAMES[@]}"; do
        while [ "$(run_result "$i")" = running ]; do check_runs; sleep 2; done
        check_runs
        read -r rc secs <"${RUN_LOGS[$i]}.done"
        stage "tests: ${RUN_NAMES[$i]}: ${RUN_WHATS[$i]}"
        sed 's/^/  | /' "${RUN_LOGS[$i]}"
        line="$(printf -- '--- %-48s %4d s   (%s)' "tests ${RUN_NAMES[$i]}:" "$secs" \
                "$(grep -E '^[0-9]+ passed' "${RUN_LOGS[$i]}" | tail -n 1)")"
        echo "$line"
        TIMINGS+=("$line")
    done
}

so_path() {
    python -c 'import spoofloss._C as C; print(C.__file__)'
}

has_gpu() {
    python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'
}

# The library bench.sh and demo.sh want on this machine (the CUDA build where a GPU
# is, else the CPU-only one) is set aside when it is built, and put back at the end.
KEPT=build/test-kept-library
keep_library() {
    # -p: the build's own time, which the staleness check compares with the sources
    rm -rf "$KEPT" && mkdir -p "$KEPT" && cp -p python/spoofloss/_C*.so python/spoofloss/_C.torch_version "$KEPT"/
}

# Free disk space, checked before anything is written: short of it, pip stops half-way
# through torch with "No space left on device". Measured in a clean clone's full run
# (2026-11-29, MiB): the venv with the CUDA build of torch 6100, the build folders and
# the test runs' copies 200, stage 6's two venvs and wheel under TMPDIR 2300 at
# their peak. Asked for, with some room: 6500 for a venv without torch yet, 800 for the
# builds, 3000 under TMPDIR when stage 6 runs.
free_mib() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
check_free_space() {
    local venv="${SPOOFLOSS_VENV:-$PWD/.venv}" tmp="${TMPDIR:-/tmp}" dev avail
    local -A need_mib=() need_what=() need_dir=()
    # needs DIR MIB WHAT: MIB more on DIR's disk (what shares a disk adds up); a DIR
    # not made yet (a venv's parent, a TMPDIR) counts on its nearest existing folder
    needs() {
        local dir="$1"
        while [ ! -d "$dir" ]; do dir="$(dirname "$dir")"; done
        dev="$(stat -c %d "$dir")"
        need_mib[$dev]=$(( ${need_mib[$dev]:-0} + $2 ))
        need_what[$dev]="${need_what[$dev]:+${need_what[$dev]}, }$3"
        need_dir[$dev]="${need_dir[$dev]:-$dir}"
    }
    compgen -G "$venv/lib/python*/site-packages/torch" >/dev/null \
        || needs "$(dirname "$venv")" 6500 "the venv with torch"
    needs "$PWD" 800 "the builds"
    if [ $QUICK = 0 ] && { [ $LANES = 1 ] || wants 6; }; then
        needs "$tmp" 3000 "stage 6's venvs and wheel under TMPDIR"
    fi
    for dev in "${!need_mib[@]}"; do
        avail="$(free_mib "${need_dir[$dev]}")"
        [ "$avail" -ge "${need_mib[$dev]}" ] || fail "not enough free disk space: about ${need_mib[$dev]} MiB" \
            "needed on the disk of ${need_dir[$dev]} (${need_what[$dev]}), $avail MiB free;" \
            "free some space (or set SPOOFLOSS_SKIP_DISK_CHECK=1)"
    done
    echo "free disk space: enough ($(free_mib "$PWD") MiB on the disk of $PWD)"
}

stage "environment"
[ "${SPOOFLOSS_SKIP_DISK_CHECK:-0}" = 1 ] || check_free_space
# shellcheck source=scripts/setup_env.sh
source scripts/setup_env.sh
# shellcheck source=scripts/build.sh
source scripts/build.sh
BUILD_TAG=test
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"  # ninja's default, cores + 2, is too many beside test runs
if [ $QUICK = 1 ] || wants 1 || wants 2 || wants 3 || wants 4; then
    # the pinned espnet for tests/test_espnet_model.py (its packages with --no-deps: torch stays as it is)
    PYTHON=python bash scripts/install_espnet.sh || fail "installing the pinned espnet failed"
fi
python -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.get_num_threads()} threads")'
BUILD_LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/spoofloss-test.XXXXXX")"
echo "build logs: $BUILD_LOG_DIR"
if [ $LANES = 1 ]; then
    LANE_LOG="$BUILD_LOG_DIR/stages-5-6.log"
    # setsid: its own process group, so that on_exit can stop all of it
    OMP_NUM_THREADS=1 setsid bash scripts/test.sh --stage 5 --stage 6 "$@" >"$LANE_LOG" 2>&1 &
    LANE_PID=$!
    echo "stages 5 and 6 run beside stages 1-4 (log: $LANE_LOG; printed when they are done)"
fi
stage_done

# ---------------------------------------------------------------- quick mode
if [ $QUICK = 1 ]; then
    stage "quick: one build, the whole suite"
    ensure_built kernels || fail "the build failed"
    if python -c 'import spoofloss, sys; sys.exit(0 if spoofloss.build_info()["cuda_emulation"] else 1)'; then
        echo "--- the whole suite through the CUDA kernels on the emulated device"
        SPOOFLOSS_REQUIRE_KERNEL_COVERAGE=1 run_pytest "$@"
    else
        echo "--- the whole suite, on this machine's GPU and CPU"
        run_pytest "$@"
    fi
    stage_done
    echo
    echo "QUICK RUN PASSED in $((SECONDS - T_START)) s (CI runs every build: bash scripts/test.sh)"
    exit 0
fi

# ---------------------------------------------------------------- 1. emulated CUDA
if wants 1; then
stage "1/6 emulated-CUDA build; its tests start (2 seeds, 2 multiprocessor counts)"
build_variant emulated || fail "the emulated build failed"
ignore=()
for f in "${KERNEL_FREE_TESTS[@]}"; do ignore+=(--ignore="$f"); done
start_tests emulated-seed-1 \
    "emulated CUDA, the suite but ${KERNEL_FREE_TESTS[*]}, scheduling seed 1, 132 multiprocessors (an H100 SXM), every kernel required" \
    SPOOFLOSS_EMULATION_SEED=1 SPOOFLOSS_EMULATED_MULTIPROCESSORS=132 SPOOFLOSS_REQUIRE_KERNEL_COVERAGE=1 \
    -- "${ignore[@]}" "$@"
start_tests emulated-seed-2 "emulated CUDA, parity tests, scheduling seed 2, 108 multiprocessors (an A100)" \
    SPOOFLOSS_EMULATION_SEED=2 SPOOFLOSS_EMULATED_MULTIPROCESSORS=108 -- "${PARITY_TESTS[@]}" "$@"
stage_done
fi

# ---------------------------------------------------------------- 2. sanitizers
if wants 2; then
check_runs
stage "2/6 emulated-CUDA build with AddressSanitizer + UBSan; its parity tests start"
build_variant sanitized || fail "the sanitized build failed"
# gradcheck and opcheck call each op hundreds of times on tiny inputs; what the
# sanitizers look for (out-of-bounds and undefined behaviour in the kernels) the
# parity tests reach in every kernel, dtype and layout, at a fifth of the time.
read -r -a sanitizer_settings <<<"$(sanitizer_env)"
start_tests sanitizers "emulated CUDA under AddressSanitizer + UBSan, parity tests but gradcheck and opcheck, seed 3" \
    "${sanitizer_settings[@]}" SPOOFLOSS_EMULATION_SEED=3 \
    -- "${PARITY_TESTS[@]}" -k "not gradcheck and not opcheck" "$@"
rm -f python/spoofloss/_C*.so  # not a library to leave installed (see the end)
stage_done
fi

# ---------------------------------------------------------------- 3. CPU-only build
if wants 3; then
check_runs
stage "3/6 clean CPU-only build; its tests start"
# Clean: the CPU build's object folder, the built library, leftovers of
# non-editable builds. (The other variants' objects live apart in build/temp-*:
# they never reach this build, and keeping them keeps their next build incremental.)
rm -rf build/temp-cpu-* build/lib.* build/bdist.* python/spoofloss/_C*.so
build_variant cpu || fail "the CPU-only build failed"
has_gpu || keep_library
start_tests cpu-only "CPU-only build, the whole suite" -- "$@"
stage_done
fi

# ---------------------------------------------------------------- 4. CUDA build
if wants 4; then
check_runs
stage "4/6 CUDA build + device code check; its tests start"
torch_cuda="$(python -c 'import torch; print(torch.version.cuda or "")')"
if [ "${SPOOFLOSS_SKIP_CUDA:-0}" = 1 ]; then
    echo "SKIPPED: SPOOFLOSS_SKIP_CUDA=1"
elif ! command -v nvcc >/dev/null 2>&1; then
    echo "SKIPPED: no nvcc on PATH"
elif [ -z "$torch_cuda" ]; then
    echo "SKIPPED: torch $(python -c 'import torch; print(torch.__version__)') is not a CUDA build"
else
    # $TORCH_CUDA_ARCH_LIST, else the default list of scripts/build_config.py
    archs="$(python scripts/build_config.py cuda-archs)"
    TORCH_CUDA_ARCH_LIST="$archs" build_variant cuda || fail "the CUDA build failed"
    python scripts/check_device_code.py "$(so_path)" "$archs" || fail "the CUDA build lacks GPU code"
    if has_gpu; then
        keep_library
        start_tests cuda "CUDA build, the whole suite on this machine's GPU and CPU" -- "$@"
    else
        # Without a GPU this build runs the CPU kernels, which stage 3 tests in full
        # (and stage 1 runs the CUDA kernels): here only that the library with CUDA
        # compiled in imports and serves the ops.
        start_tests cuda "CUDA build without a GPU: the op and module tests (the CPU kernels get the whole suite in stage 3)" \
            -- tests/test_ops.py tests/test_modules.py "$@"
    fi
fi
stage_done
fi

# ---------------------------------------------------------------- 5. CMake build
if wants 5; then
stage "5/6 CMake build (CPU only) + ctest"
cmake_log="$BUILD_LOG_DIR/cmake-configure.log"
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
if ! cmake -S . -B build/cmake "${generator[@]}" \
        -DCMAKE_BUILD_TYPE=Release \
        -DSPOOFLOSS_WITH_CUDA=OFF \
        -DPython3_EXECUTABLE="$(command -v python)" \
        -DCMAKE_PREFIX_PATH="$(python -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" \
        >"$cmake_log" 2>&1; then
    tail -n 60 "$cmake_log" >&2
    fail "cmake configure failed; full log: $cmake_log"
fi
grep -E '^-- (spoofloss|Found Torch)' "$cmake_log" || true
cmake --build build/cmake --parallel "$MAX_JOBS" || fail "cmake build failed"
(cd build/cmake && ctest --output-on-failure) || fail "a test of the CMake library failed"
stage_done
fi

# ---------------------------------------------------------------- 6. wheel
if wants 6; then
stage "6/6 wheel: build, fresh venv, pytest against the installed package"
bash scripts/check_wheel.sh "$@" || fail "the wheel check failed"
stage_done
fi

# ---------------------------------------------------------------- the test runs
if [ ${#RUN_NAMES[@]} -gt 0 ]; then
    finish_runs
fi

# ---------------------------------------------------------------- the second lane
if [ -n "$LANE_PID" ]; then
    stage "stages 5 and 6 (second lane)"
    lane_rc=0
    wait "$LANE_PID" || lane_rc=$?
    LANE_PID=""
    sed 's/^/  | /' "$LANE_LOG"
    [ $lane_rc = 0 ] || fail "stage 5 or 6 failed (exit $lane_rc; its log is above and in $LANE_LOG)"
    # each stage's own line (the lane prints it twice, check_wheel.sh's steps are numbered too)
    while IFS= read -r line; do TIMINGS+=("$line"); done < <(grep -E '^--- (5/6 CMake|6/6 wheel)' "$LANE_LOG" | awk '!seen[$0]++')
    stage_done
fi

# ---------------------------------------------------------------- what stays installed
if wants 1 || wants 2 || wants 3 || wants 4; then
    stage "leave the build for bench.sh and demo.sh"
    rm -f python/spoofloss/_C*.so
    if [ -d "$KEPT" ]; then cp -p "$KEPT"/* python/spoofloss/; fi
    ensure_built auto || fail "rebuilding the library to leave installed failed"
    stage_done
fi

echo
echo "=== timings (the builds ran one after another; the test runs and stages 5 and 6 beside them, so their times overlap) ==="
printf '%s\n' "${TIMINGS[@]}"
echo "ALL STAGES PASSED in $((SECONDS - T_START)) s"
