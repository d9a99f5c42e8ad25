# shellcheck shell=bash
# The one way the scripts build spoofloss. Sourced (after scripts/setup_env.sh) by
# scripts/test.sh, bench.sh, demo.sh and check_wheel.sh; run from the repository root.
#
# The variants (README, "Development"), each the environment setup.py reads:
#   cuda       FORCE_CUDA=1                 CPU kernels + CUDA kernels for TORCH_CUDA_ARCH_LIST
#   cpu        SPOOFLOSS_CPU_ONLY=1         CPU kernels only
#   emulated   SPOOFLOSS_CUDA_EMULATION=1   the CUDA kernels on an emulated device, for CPU tensors
#   sanitized  the emulated build with AddressSanitizer + UBSan (SPOOFLOSS_SANITIZE=1)
# Each keeps its objects in its own build/temp-<variant>-* folder, so switching
# back to a variant built before recompiles only what changed since.
#
#   build_variant VARIANT                  editable install of VARIANT into the active venv, checked
#   ensure_built NEED                      rebuild unless the installed library fits NEED
#                                          (gpu|cpu|emulated|auto|kernels: scripts/build_status.py)
#   pip_build LABEL VARIANT PYTHON DIR ARGS...   `PYTHON -m pip ARGS` in DIR with VARIANT's
#                                          environment, logged; prints setup.py's decisions
#   need_for_device ARGS...                gpu, cpu or auto from a --device cuda|cpu among ARGS
#   sanitizer_env                          VAR=value words for running a sanitized library
#
# BUILD_TAG prefixes the messages; BUILD_LOG_DIR is where the logs go (default $TMPDIR or /tmp).

_BUILD_SH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

_build_say() { echo "[${BUILD_TAG:-build}] $*"; }

# The environment setup.py reads for VARIANT: every switch set, so that a switch
# exported in the caller's shell cannot turn one variant into another.
variant_env() {
    case "$1" in
        cuda)      echo FORCE_CUDA=1 SPOOFLOSS_CPU_ONLY=0 SPOOFLOSS_CUDA_EMULATION=0 SPOOFLOSS_SANITIZE=0 ;;
        cpu)       echo FORCE_CUDA=0 SPOOFLOSS_CPU_ONLY=1 SPOOFLOSS_CUDA_EMULATION=0 SPOOFLOSS_SANITIZE=0 ;;
        emulated)  echo FORCE_CUDA=0 SPOOFLOSS_CPU_ONLY=0 SPOOFLOSS_CUDA_EMULATION=1 SPOOFLOSS_SANITIZE=0 ;;
        sanitized) echo FORCE_CUDA=0 SPOOFLOSS_CPU_ONLY=0 SPOOFLOSS_CUDA_EMULATION=1 SPOOFLOSS_SANITIZE=1 ;;
        *) echo "build.sh: unknown variant '$1' (cuda, cpu, emulated, sanitized)" >&2; return 2 ;;
    esac
}

sanitizer_env() {
    python "$_BUILD_SH_DIR/build_config.py" sanitizer-env
}

pip_build() {
    local label="$1" variant="$2" py="$3" dir="$4" log t0=$SECONDS assignments
    shift 4
    assignments="$(variant_env "$variant")" || return 2
    mkdir -p "${BUILD_LOG_DIR:-${TMPDIR:-/tmp}}"
    log="$(mktemp "${BUILD_LOG_DIR:-${TMPDIR:-/tmp}}/spoofloss-build-$label.XXXXXX.log")"
    _build_say "building $label ($assignments${TORCH_CUDA_ARCH_LIST:+ TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST}): pip $*  (log: $log)"
    # shellcheck disable=SC2086
    if ! (cd "$dir" && env $assignments "$py" -m pip --disable-pip-version-check -v "$@") >"$log" 2>&1; then
        tail -n 80 "$log" >&2
        _build_say "the $label build FAILED; full log: $log" >&2
        return 1
    fi
    # setup.py's own report of what it decided (printed once per setup.py run)
    grep -F '[spoofloss setup]' "$log" | sed 's/^ *//' | awk '!seen[$0]++' || true
    _build_say "$label build took $((SECONDS - t0)) s"
}

# Build VARIANT into the active venv (editable), then check that the library which
# Python now imports is that variant, and say what it is.
build_variant() {
    local variant="$1" status
    pip_build "$variant" "$variant" python . install --no-build-isolation --no-deps -e . || return 1
    status="$(python "$_BUILD_SH_DIR/build_status.py" "exactly:$variant")" || return 1
    _build_say "installed: $(sed -n 's/^build_info=//p' <<<"$status")"
    if ! grep -qx 'verdict=ok' <<<"$status"; then
        _build_say "the $variant build is not what Python imports: $(sed -n 's/^why=//p' <<<"$status")" >&2
        return 1
    fi
}

ensure_built() {
    local need="$1" status key value
    local -A answer=()
    status="$(python "$_BUILD_SH_DIR/build_status.py" "$need")" || return 1
    while IFS='=' read -r key value; do answer[$key]="$value"; done <<<"$status"
    if [ "${answer[verdict]}" = ok ]; then
        _build_say "using the installed library: ${answer[have]}"
        return 0
    fi
    _build_say "rebuilding as the ${answer[variant]} build: ${answer[why]}"
    if [ "${answer[variant]}" = cuda ]; then
        TORCH_CUDA_ARCH_LIST="${answer[archs]}" build_variant cuda
    else
        build_variant "${answer[variant]}"
    fi
}

# What bench.sh and demo.sh need from their arguments: --device cuda needs the CUDA
# build, --device cpu the real CPU kernels, neither whatever this machine runs (auto).
need_for_device() {
    local prev="" arg device=""
    for arg in "$@"; do
        case "$arg" in --device=*) device="${arg#--device=}" ;; esac
        [ "$prev" = --device ] && device="$arg"
        prev="$arg"
    done
    case "$device" in
        cuda*) echo gpu ;;
        cpu) echo cpu ;;
        *) echo auto ;;
    esac
}
