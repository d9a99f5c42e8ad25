# Sourced by scripts/bench.sh and scripts/demo.sh: set up .venv (scripts/setup_env.sh)
# and (re)build spoofloss when its compiled library is missing, does not import, or
# is older than the C++/CUDA sources or the build files. The build takes setup.py's
# default decision (CUDA when torch is a CUDA build and nvcc is found);
# SPOOFLOSS_CPU_ONLY=1 or FORCE_CUDA=1 override it. $ENSURE_BUILT_TAG prefixes messages.
# shellcheck shell=bash

# shellcheck source=scripts/setup_env.sh
source scripts/setup_env.sh

ensure_built() {
    local tag="[${ENSURE_BUILT_TAG:-spoofloss}]" need_build="" so newer log start
    so="$(python -c 'import spoofloss._C as C; print(C.__file__)' 2>/dev/null)" || need_build="spoofloss._C does not import"
    if [ -z "$need_build" ]; then
        newer="$(find csrc setup.py pyproject.toml -newer "$so" -type f \
            \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' -o -name '*.py' -o -name '*.toml' \) \
            -print -quit 2>/dev/null || true)"
        if [ -n "$newer" ]; then need_build="$newer is newer than $(basename "$so")"; fi
    fi
    [ -n "$need_build" ] || return 0

    log="$(mktemp "${TMPDIR:-/tmp}/spoofloss-build.XXXXXX.log")"
    echo "$tag building spoofloss ($need_build); this takes a few minutes; log: $log"
    start=$SECONDS
    if ! python -m pip install --no-build-isolation --no-deps --disable-pip-version-check -v -e . >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "$tag build FAILED; full log: $log" >&2
        return 1
    fi
    grep -F '[spoofloss setup]' "$log" | sed 's/^ *//' | awk '!seen[$0]++' || true
    echo "$tag built in $((SECONDS - start)) s"
}

ensure_built
