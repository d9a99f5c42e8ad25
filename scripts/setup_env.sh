# shellcheck shell=bash
# Source this file (". scripts/setup_env.sh"): it makes sure the project's virtual
# environment exists and holds what builds and tests need, then puts it first on PATH.
#
#   SPOOFLOSS_VENV        venv location (default: <repo>/.venv)
#   SPOOFLOSS_TORCH_SPEC  torch requirement to install (default: torch==TORCH_VERSION of
#                         scripts/build_config.py, the release the project is tested with)
#   SPOOFLOSS_PYTHON      interpreter that creates the venv (default: python3)
#
# Idempotent: when everything is already there it only runs one quick check.

_spoofloss_setup_env() {
    local repo venv torch_spec base_python missing
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="${SPOOFLOSS_VENV:-$repo/.venv}"
    base_python="${SPOOFLOSS_PYTHON:-python3}"
    torch_spec="${SPOOFLOSS_TORCH_SPEC:-}"
    if [ -z "$torch_spec" ]; then
        torch_spec="torch==$("$base_python" "$repo/scripts/build_config.py" torch-version)" || return 1
    fi

    if [ ! -x "$venv/bin/python" ]; then
        echo "[setup_env] creating virtual environment $venv with $base_python"
        "$base_python" -m venv "$venv" || return 1
    fi

    # Which requirements are not met yet? (one interpreter start, no network)
    missing="$("$venv/bin/python" - "$torch_spec" "$repo/scripts" <<'PY'
import re, sys
from importlib import metadata

sys.path.insert(0, sys.argv[2])
import build_config

def installed(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None

torch_spec = sys.argv[1]
want = []
m = re.fullmatch(r"\s*torch\s*==\s*([^\s;]+)\s*", torch_spec)
have = installed("torch")
if m:
    # local version labels (+cu130, +cpu) do not matter
    if have is None or have.split("+")[0] != m.group(1).split("+")[0]:
        want.append(torch_spec)
elif have is None:
    want.append(torch_spec)
for dist in ("ninja", "pybind11", "pytest", "hypothesis", "numpy", "packaging", "matplotlib", "wheel"):
    if installed(dist) is None:
        want.append(dist)
st = installed("setuptools")
if st is None or int(re.match(r"\d+", st).group()) < build_config.MIN_SETUPTOOLS:
    want.append(f"setuptools>={build_config.MIN_SETUPTOOLS}")
print(" ".join(want))
PY
)" || return 1

    if [ -n "$missing" ]; then
        echo "[setup_env] installing into $venv: $missing (quietly; torch takes a few minutes)"
        # shellcheck disable=SC2086
        "$venv/bin/python" -m pip install -qq --disable-pip-version-check --progress-bar off $missing \
            || { echo "[setup_env] pip install failed" >&2; return 1; }
    else
        echo "[setup_env] using $venv ($("$venv/bin/python" -c 'import sys; print(f"python {sys.version.split()[0]}")'), $torch_spec and the build/test tools already installed)"
    fi

    export VIRTUAL_ENV="$venv"
    export PATH="$venv/bin:$PATH"
    hash -r 2>/dev/null || true
}

_spoofloss_setup_env || { echo "[setup_env] FAILED to set up the environment" >&2; return 1 2>/dev/null || exit 1; }
unset -f _spoofloss_setup_env
