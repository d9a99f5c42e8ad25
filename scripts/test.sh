#!/usr/bin/env bash
# Build spoofloss every supported way and test each build:
#   1. CUDA build (when nvcc is on PATH and torch is a CUDA build): check with
#      cuobjdump that the library holds code for every arch of TORCH_CUDA_ARCH_LIST
#      (default "8.0;9.0" -> sm_80, sm_90), then run pytest (GPU tests skip without a GPU);
#   2. CPU-only build from a clean build folder (SPOOFLOSS_CPU_ONLY=1), pytest again;
#   3. emulated-CUDA build (SPOOFLOSS_CUDA_EMULATION=1: the CUDA kernels on an
#      emulated device, for CPU tensors): the whole suite (scheduling seed 1, 132
#      multiprocessors) with every kernel required to have run with every dtype,
#      then the parity tests again under seed 2 and 108 multiprocessors;
#   4. the emulated build with AddressSanitizer + UBSan: the parity tests;
#   5. the CMake build of the op library (CPU only) into build/cmake + its smoke check;
#   6. scripts/check_wheel.sh: a wheel built in a clean copy, installed into a fresh
#      venv, and the CPU tests run against it.
# Extra arguments go to pytest (e.g. scripts/test.sh -k binary -x).
# Environment: TORCH_CUDA_ARCH_LIST, MAX_JOBS, NVCC_THREADS (see setup.py),
# SPOOFLOSS_SKIP_CUDA=1 skips stage 1.

# The tests that compare every op against the float64 reference: the ones the
# emulated build repeats under a second seed and under the sanitizers.
PARITY_TESTS=(tests/test_ops.py tests/test_losses.py tests/test_modules.py tests/test_emulation.py)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
T_START=$SECONDS
STAGE=setup
STAGE_T0=$SECONDS
TIMINGS=()

stage() {
    STAGE="$1"
    STAGE_T0=$SECONDS
    echo
    echo "=== [$(date +%H:%M:%S)] $STAGE ==="
}
stage_done() {
    local line
    line="$(printf -- '--- %-42s %4d s   (total %4d s)' "$STAGE:" $((SECONDS - STAGE_T0)) $((SECONDS - T_START)))"
    echo "$line"
    TIMINGS+=("$line")
}
fail() {
    echo "FAIL [$STAGE]: $*" >&2
    exit 1
}
trap 'rc=$?; [ $rc -eq 0 ] || echo "scripts/test.sh FAILED in stage \"$STAGE\" (exit $rc) after $((SECONDS - T_START)) s" >&2' EXIT

stage "environment"
# shellcheck source=scripts/setup_env.sh
source scripts/setup_env.sh
# the pinned espnet for tests/test_espnet_model.py (its packages with --no-deps: torch stays as it is)
PYTHON=python bash scripts/install_espnet.sh || fail "installing the pinned espnet failed"
python -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.get_num_threads()} threads")'
LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/spoofloss-test.XXXXXX")"
echo "build logs: $LOG_DIR"
stage_done

# pip install the package (editable) with the build variant chosen by the environment.
build_package() {
    local label="$1" log="$LOG_DIR/build-$1.log" t0=$SECONDS
    echo "building ($label): pip install --no-build-isolation --no-deps -e .  (log: $log)"
    if ! python -m pip install --no-build-isolation --no-deps --disable-pip-version-check -v -e . >"$log" 2>&1; then
        tail -n 80 "$log" >&2
        fail "the $label build failed; full log: $log"
    fi
    # setup.py's own report of what it decided (printed once per setup.py run)
    grep -F '[spoofloss setup]' "$log" | sed 's/^ *//' | awk '!seen[$0]++' || true
    echo "$label build took $((SECONDS - t0)) s"
    # (a sanitized library loads only with the sanitizer runtimes preloaded: $RUN_ENV)
    env ${RUN_ENV:-} python - <<'PY' || fail "spoofloss._C does not import after the $label build"
import spoofloss._C as C
print("built", C.__file__)
if hasattr(C, "build_info"):
    print("build_info:", C.build_info())
PY
}

run_pytest() {
    local rc=0
    python -m pytest -q -ra "$@" || rc=$?
    case $rc in
        0) ;;
        5) fail "pytest collected no tests (exit 5): tests/ is empty or every test was deselected" ;;
        *) fail "pytest failed (exit $rc)" ;;
    esac
}

so_path() {
    python -c 'import spoofloss._C as C; print(C.__file__)'
}

find_cuobjdump() {
    local d
    d="$(python - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("triton")
if spec and spec.submodule_search_locations:
    print(os.path.join(list(spec.submodule_search_locations)[0], "backends", "nvidia", "bin", "cuobjdump"))
PY
)"
    if [ -n "$d" ] && [ -x "$d" ]; then echo "$d"; return; fi
    command -v cuobjdump 2>/dev/null || true
}

# ---------------------------------------------------------------- 1. CUDA build
stage "1/6 CUDA build + cuobjdump check + pytest"
torch_cuda="$(python -c 'import torch; print(torch.version.cuda or "")')"
if [ "${SPOOFLOSS_SKIP_CUDA:-0}" = 1 ]; then
    echo "SKIPPED: SPOOFLOSS_SKIP_CUDA=1"
elif ! command -v nvcc >/dev/null 2>&1; then
    echo "SKIPPED: no nvcc on PATH"
elif [ -z "$torch_cuda" ]; then
    echo "SKIPPED: torch $(python -c 'import torch; print(torch.__version__)') is not a CUDA build"
else
    export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
    FORCE_CUDA=1 SPOOFLOSS_CPU_ONLY=0 build_package cuda
    so="$(so_path)"

    cuobjdump="$(find_cuobjdump)"
    [ -n "$cuobjdump" ] || fail "no cuobjdump found (neither triton's nor on PATH) to check the CUDA build"
    listing="$("$cuobjdump" --list-elf "$so" 2>&1)" || fail "cuobjdump --list-elf $so failed: $listing"
    echo "$cuobjdump --list-elf $(basename "$so"):"
    echo "$listing" | sed 's/^/    /'
    missing=""
    for arch in ${TORCH_CUDA_ARCH_LIST//;/ }; do
        sm="sm_$(echo "${arch%+PTX}" | tr -d '.')"
        if ! grep -Eq "\.${sm}\.cubin" <<<"$listing"; then
            missing="$missing $sm"
        fi
    done
    if [ -n "$missing" ]; then
        echo "############################################################" >&2
        echo "## CUDA build lacks device code for:$missing" >&2
        echo "## (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)" >&2
        echo "############################################################" >&2
        fail "missing GPU code for:$missing"
    fi
    echo "OK: device code for every arch in TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
    if python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        run_pytest "$@"
    else
        # Without a GPU this build runs the CPU kernels, which stage 2 tests in full
        # (and stage 3 runs the CUDA kernels): here only that the library with CUDA
        # compiled in imports and serves the ops.
        echo "no GPU: the op and module tests only (the CPU kernels get the whole suite in stage 2)"
        run_pytest tests/test_ops.py tests/test_modules.py "$@"
    fi
fi
stage_done

# ---------------------------------------------------------------- 2. CPU-only build
stage "2/6 clean CPU-only build + pytest"
# Clean: the CPU build's object folder, the built library, leftovers of
# non-editable builds. (CUDA objects live apart in build/temp-cuda-*: they never
# reach a CPU-only build, and keeping them makes the next stage 1 incremental.)
rm -rf build/temp-cpu-* build/lib.* build/bdist.* python/spoofloss/_C*.so
SPOOFLOSS_CPU_ONLY=1 FORCE_CUDA=0 build_package cpu
python -c 'import spoofloss._C as C, sys; sys.exit(1 if getattr(C, "build_info", lambda: {"with_cuda": False})()["with_cuda"] else 0)' \
    || fail "SPOOFLOSS_CPU_ONLY=1 produced a build that reports with_cuda"
run_pytest "$@"
stage_done

# ---------------------------------------------------------------- 3. emulated CUDA
stage "3/6 emulated-CUDA build + pytest (2 seeds, 2 multiprocessor counts)"
rm -f python/spoofloss/_C*.so
SPOOFLOSS_CUDA_EMULATION=1 SPOOFLOSS_CPU_ONLY=0 FORCE_CUDA=0 build_package emulated
python -c 'import spoofloss, sys; sys.exit(0 if spoofloss.build_info()["cuda_emulation"] else 1)' \
    || fail "SPOOFLOSS_CUDA_EMULATION=1 produced a build that does not report cuda_emulation"
echo "--- whole suite, scheduling seed 1, 132 multiprocessors (an H100 SXM)"
SPOOFLOSS_EMULATION_SEED=1 SPOOFLOSS_EMULATED_MULTIPROCESSORS=132 SPOOFLOSS_REQUIRE_KERNEL_COVERAGE=1 run_pytest "$@"
echo "--- parity tests, scheduling seed 2, 108 multiprocessors (an A100)"
SPOOFLOSS_EMULATION_SEED=2 SPOOFLOSS_EMULATED_MULTIPROCESSORS=108 run_pytest "${PARITY_TESTS[@]}" "$@"
stage_done

# ---------------------------------------------------------------- 4. sanitizers
stage "4/6 emulated-CUDA build with AddressSanitizer + UBSan + parity tests"
RUN_ENV="LD_PRELOAD=$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
RUN_ENV="$RUN_ENV ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1"
SPOOFLOSS_CUDA_EMULATION=1 SPOOFLOSS_SANITIZE=1 SPOOFLOSS_CPU_ONLY=0 FORCE_CUDA=0 build_package emulated-sanitized
# gradcheck and opcheck call each op hundreds of times on tiny inputs; what the
# sanitizers look for (out-of-bounds and undefined behaviour in the kernels) the
# parity tests reach in every kernel, dtype and layout, at a fifth of the time.
# shellcheck disable=SC2086
env $RUN_ENV SPOOFLOSS_EMULATION_SEED=3 python -m pytest -q -ra "${PARITY_TESTS[@]}" -k "not gradcheck and not opcheck" "$@" \
    || fail "pytest failed under the sanitizers (an AddressSanitizer or UBSan report above, or a failing test)"
RUN_ENV=""
rm -f python/spoofloss/_C*.so  # a sanitized library is not one to leave installed
stage_done

# ---------------------------------------------------------------- 5. CMake build
stage "5/6 CMake build (CPU only) + smoke check"
cmake_log="$LOG_DIR/cmake-configure.log"
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
cmake --build build/cmake ${MAX_JOBS:+--parallel "$MAX_JOBS"} || fail "cmake build failed"
(cd build/cmake && ctest --output-on-failure) || fail "the CMake library's smoke check failed"
stage_done

# ---------------------------------------------------------------- 6. wheel
stage "6/6 wheel: build, fresh venv, pytest against the installed package"
bash scripts/check_wheel.sh "$@" || fail "the wheel check failed"
stage_done

echo
echo "=== timings ==="
printf '%s\n' "${TIMINGS[@]}"
echo "ALL STAGES PASSED in $((SECONDS - T_START)) s"
