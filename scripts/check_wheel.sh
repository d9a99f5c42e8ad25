#!/usr/bin/env bash
# Build the spoofloss wheel the way a user would, install it into a fresh virtual
# environment, and run the test suite against the installed package:
#   1. copy the source tree (tracked files and untracked ones git does not ignore,
#      so uncommitted edits count while build/, *.so and .venv stay behind) into a
#      temporary folder: the wheel cannot pick up stale build products;
#   2. find torch $WHEEL_TORCH (default: SECOND_TORCH_VERSION of scripts/build_config.py,
#      an older release than the one the project is developed with, to show that
#      the sources build against more than one) on this machine's disk, through
#      pip's find-links only (`pip install --dry-run --no-index`, no download; pip's
#      configuration or PIP_FIND_LINKS names the folders): here /opt/wheels holds
#      its CPU build, seconds to install. Where
#      it is not on disk the check is SKIPPED, saying so, because pip would download
#      it (the CUDA build is several GB); WHEEL_TORCH_DOWNLOAD=1 lets pip fetch it;
#   3. a build venv with that torch file and the build tools; an sdist of the copy,
#      then `pip wheel --no-build-isolation` of the unpacked sdist there (as
#      `python -m build` does, so that a file the sdist lacks shows), CPU-only
#      (SPOOFLOSS_CPU_ONLY=1) to keep the compile short; the CUDA build is
#      scripts/test.sh's business;
#   4. check the wheel's contents and metadata: the _C library and its torch stamp,
#      every module of python/spoofloss, LICENSE, the torch pin, no tests or build junk;
#      and that the metadata also builds with the oldest setuptools setup.py accepts
#      (MIN_SETUPTOOLS; older ones are common in ESPnet environments), when pip can get it;
#   5. a fresh venv: `pip install <wheel>[test] <the same torch file>`: the wheel's own
#      pin (torch==<the build's torch>) must accept that torch;
#   6. pytest on a copy of tests/ from a folder where the source tree's python/ is
#      not importable, after checking that spoofloss comes from the venv's site-packages.
# Extra arguments go to pytest (e.g. scripts/check_wheel.sh -x -k ddp).
# Environment: WHEEL_TORCH (torch release of both venvs), WHEEL_TORCH_DOWNLOAD=1
# (let pip download it when it is not on disk), BASE_PYTHON (interpreter the venvs
# are made from, default python3), SPOOFLOSS_KEEP_WHEEL_DIR=1 keeps the temporary
# folder, MAX_JOBS (see setup.py).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
T_START=$SECONDS
BASE_PYTHON="${BASE_PYTHON:-python3}"
WHEEL_TORCH="${WHEEL_TORCH:-$("$BASE_PYTHON" scripts/build_config.py second-torch-version)}"
MIN_SETUPTOOLS="$("$BASE_PYTHON" scripts/build_config.py min-setuptools)"
BUILD_TAG=check_wheel
# shellcheck source=scripts/build.sh
source scripts/build.sh
WORK="$(mktemp -d "${TMPDIR:-/tmp}/spoofloss-wheel.XXXXXX")"
STEP=setup
STEP_T0=$SECONDS
TIMINGS=()

step() {
    [ "$STEP" = setup ] || step_done
    STEP="$1"
    STEP_T0=$SECONDS
    echo
    echo "=== [$(date +%H:%M:%S)] $STEP ==="
}
step_done() {
    TIMINGS+=("$(printf -- '--- %-46s %4d s' "$STEP:" $((SECONDS - STEP_T0)))")
}
fail() {
    echo "FAIL [$STEP]: $*" >&2
    exit 1
}
finish() {
    local rc=$?
    if [ "${SPOOFLOSS_KEEP_WHEEL_DIR:-0}" = 1 ]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    [ $rc -eq 0 ] || echo "scripts/check_wheel.sh FAILED in step \"$STEP\" (exit $rc) after $((SECONDS - T_START)) s" >&2
}
trap finish EXIT

# ------------------------------------------------------------------ 1. clean copy
step "1/6 clean copy of the source tree"
git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1 || fail "$REPO is not a git checkout"
mkdir -p "$WORK/src" "$WORK/dist" "$WORK/run"
# ls-files still lists tracked files deleted in the working tree: copy what exists
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar -C "$REPO" --null -T - -cf - | tar -C "$WORK/src" -xf -
stale="$(cd "$WORK/src" && find . \( -name '*.so' -o -name 'build' -o -name '*.egg-info' -o -name '_C.torch_version' \) -print)"
[ -z "$stale" ] || fail "the copy holds build products: $stale"
echo "$(find "$WORK/src" -type f | wc -l) files in $WORK/src"

# ------------------------------------------------------------------ 2. which torch
step "2/6 where torch==$WHEEL_TORCH comes from"
# deactivate any venv of the caller: the venvs below come from the base interpreter
BASE_PYTHON="$(env -u VIRTUAL_ENV "$BASE_PYTHON" -c 'import sys; print(sys._base_executable)')"
# what pip would install with no index, from find-links alone (pip's configuration
# or PIP_FIND_LINKS), without installing it
report="$WORK/torch-report.json"
if "$BASE_PYTHON" -m pip install --disable-pip-version-check --quiet --dry-run --ignore-installed \
        --no-index --no-deps --report "$report" "torch==$WHEEL_TORCH" >"$WORK/torch-dry-run.log" 2>&1; then
    TORCH_REQ="$("$BASE_PYTHON" -c '
import json, sys, urllib.parse, urllib.request
item = json.load(open(sys.argv[1]))["install"][0]
url = item["download_info"]["url"]
print(urllib.request.url2pathname(urllib.parse.urlparse(url).path) if url.startswith("file:") else url)
' "$report")"
    echo "torch==$WHEEL_TORCH: $TORCH_REQ (on this machine's disk, found by pip without an index)"
elif [ "${WHEEL_TORCH_DOWNLOAD:-0}" = 1 ]; then
    TORCH_REQ="torch==$WHEEL_TORCH"
    echo "torch==$WHEEL_TORCH is not on this machine's disk; WHEEL_TORCH_DOWNLOAD=1: pip downloads it" \
         "from its index (the CUDA build is several GB)"
else
    echo "############################################################"
    echo "## SKIPPED the wheel check: torch==$WHEEL_TORCH is not on this machine's disk"
    echo "## (pip install --dry-run --no-index finds no wheel for it; PIP_FIND_LINKS=${PIP_FIND_LINKS:-unset})."
    echo "## pip would download it, several GB for the CUDA build. To run the check anyway:"
    echo "##   WHEEL_TORCH_DOWNLOAD=1 bash scripts/check_wheel.sh     (let pip download it), or"
    echo "##   PIP_FIND_LINKS=<folder with a torch-$WHEEL_TORCH wheel> bash scripts/check_wheel.sh, or"
    echo "##   WHEEL_TORCH=<a torch release on disk> bash scripts/check_wheel.sh"
    echo "############################################################"
    sed 's/^/    pip: /' "$WORK/torch-dry-run.log" | tail -n 3
    exit 0
fi

# ------------------------------------------------------------------ 3. wheel
step "3/6 build venv (torch==$WHEEL_TORCH) + sdist + pip wheel (CPU only)"
"$BASE_PYTHON" -m venv "$WORK/build-venv"
BUILD_PYTHON="$WORK/build-venv/bin/python"
build_log="$WORK/build-venv.log"
if ! "$BUILD_PYTHON" -m pip install --disable-pip-version-check --progress-bar off \
        "$TORCH_REQ" "setuptools>=77" wheel ninja pybind11 numpy >"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    fail "could not install torch==$WHEEL_TORCH and the build tools into the build venv"
fi
"$BUILD_PYTHON" -c 'import setuptools, torch; print(f"build venv: torch {torch.__version__}, setuptools {setuptools.__version__}")'
# the wheel is built from an sdist of the copy, as `python -m build` does: a file the
# sdist lacks (MANIFEST.in) fails the build here rather than for a user
mkdir -p "$WORK/sdist"
sdist="$(cd "$WORK/src" && SPOOFLOSS_CPU_ONLY=1 "$BUILD_PYTHON" -c \
    'import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))' "$WORK/sdist" \
    2>"$WORK/sdist.log" | tail -n 1)" && [ -f "$WORK/sdist/$sdist" ] \
    || { tail -n 30 "$WORK/sdist.log" >&2; fail "building the sdist failed"; }
tar -C "$WORK/sdist" -xzf "$WORK/sdist/$sdist"
echo "sdist $sdist: $(tar -tzf "$WORK/sdist/$sdist" | grep -vc '/$') files"
BUILD_LOG_DIR="$WORK" pip_build wheel cpu "$BUILD_PYTHON" "$WORK/sdist/${sdist%.tar.gz}" \
    wheel --no-build-isolation --no-deps -w "$WORK/dist" . || fail "pip wheel (from the sdist) failed"
shopt -s nullglob
wheels=("$WORK"/dist/spoofloss-*.whl)
shopt -u nullglob
[ ${#wheels[@]} -eq 1 ] || fail "expected one spoofloss wheel in $WORK/dist, found ${#wheels[@]}"
WHEEL="${wheels[0]}"
echo "built $(basename "$WHEEL") ($(du -k "$WHEEL" | cut -f1) KiB)"

# ------------------------------------------------------------------ 3. contents
step "4/6 wheel contents and metadata"
"$BUILD_PYTHON" - "$WHEEL" "$WORK/src" <<'PY' || fail "the wheel's contents or metadata are wrong"
import email.parser, glob, os, re, sys, sysconfig, zipfile
import torch

wheel, src = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
problems = []
dist_info = [n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")][0]
allowed_tops = {"spoofloss", dist_info}
junk = sorted(n for n in names if n.split("/")[0] not in allowed_tops or "__pycache__" in n)
if junk:
    problems.append(f"entries outside the package: {junk}")
modules = {os.path.basename(p) for p in glob.glob(os.path.join(src, "python", "spoofloss", "*.py"))}
missing = sorted(m for m in modules if f"spoofloss/{m}" not in names)
if missing:
    problems.append(f"modules missing: {missing}")
library = "spoofloss/_C" + sysconfig.get_config_var("EXT_SUFFIX")
for wanted in (library, "spoofloss/_C.torch_version", f"{dist_info}/licenses/LICENSE"):
    if wanted not in names:
        problems.append(f"{wanted} missing")
meta = email.parser.Parser().parsestr(zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode())
version = re.search(r'__version__ = "([^"]+)"', open(os.path.join(src, "python", "spoofloss", "__init__.py")).read())[1]
torch_pin = f"torch=={torch.__version__.split('+')[0]}"
checks = {
    "Name": meta["Name"] == "spoofloss",
    "Version": meta["Version"] == version,
    "License-Expression": meta["License-Expression"] == "MIT",
    "Requires-Python": meta["Requires-Python"] == ">=3.10",
    f"Requires-Dist {torch_pin}": torch_pin in (meta.get_all("Requires-Dist") or []),
    "Provides-Extra test, bench": {"test", "bench"} <= set(meta.get_all("Provides-Extra") or []),
}
problems += [f"METADATA: {what} wrong" for what, ok in checks.items() if not ok]
stamp = zipfile.ZipFile(wheel).read("spoofloss/_C.torch_version").decode().strip() if "spoofloss/_C.torch_version" in names else None
if stamp != torch.__version__:
    problems.append(f"torch stamp {stamp!r}, expected {torch.__version__!r}")
for name in names:
    print("   ", name)
print(f"METADATA: {meta['Name']} {meta['Version']}, License-Expression {meta['License-Expression']}, "
      f"Requires-Python {meta['Requires-Python']}, Requires-Dist {meta.get_all('Requires-Dist')}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
PY
# The oldest setuptools setup.py accepts must produce the metadata too (it has no
# SPDX License-Expression: setup.py then writes the classic License field). In the
# build venv, which is thrown away; the metadata alone, no compile.
if "$BUILD_PYTHON" -m pip install --disable-pip-version-check --quiet "setuptools==$MIN_SETUPTOOLS.*" \
        >"$WORK/old-setuptools.log" 2>&1; then
    rm -rf "$WORK/old-meta" && mkdir -p "$WORK/old-meta"
    (cd "$WORK/src" && SPOOFLOSS_CPU_ONLY=1 "$BUILD_PYTHON" -c '
import sys, setuptools
from setuptools import build_meta
print(sys.argv[1] + "/" + build_meta.prepare_metadata_for_build_wheel(sys.argv[1]), setuptools.__version__)
' "$WORK/old-meta" >"$WORK/old-meta.out" 2>"$WORK/old-meta.log") \
        || { tail -n 30 "$WORK/old-meta.log" >&2; fail "setuptools $MIN_SETUPTOOLS.* cannot build the metadata"; }
    read -r meta_dir old_version < <(tail -n 1 "$WORK/old-meta.out")  # after setuptools' own lines
    grep -qx 'License: MIT' "$meta_dir/METADATA" && grep -Eqx "Requires-Dist: torch ?==$WHEEL_TORCH" "$meta_dir/METADATA" \
        || { cat "$meta_dir/METADATA" >&2; fail "setuptools $old_version wrote wrong metadata"; }
    echo "setuptools $old_version (MIN_SETUPTOOLS) builds the metadata too: License: MIT, Requires-Dist: torch==$WHEEL_TORCH"
else
    echo "SKIPPED the old-setuptools check: pip cannot install setuptools==$MIN_SETUPTOOLS.* here (no index?):" \
         "$(tail -n 1 "$WORK/old-setuptools.log")"
fi

# ------------------------------------------------------------------ 5. fresh venv
step "5/6 fresh venv + pip install wheel[test]"
"$BASE_PYTHON" -m venv "$WORK/venv"
VENV_PY="$WORK/venv/bin/python"
install_log="$WORK/install.log"
# the same torch as the build, named explicitly: the wheel's pin must accept it
if ! "$VENV_PY" -m pip install --disable-pip-version-check --progress-bar off "${WHEEL}[test]" "$TORCH_REQ" \
        >"$install_log" 2>&1; then
    tail -n 60 "$install_log" >&2
    fail "pip install of the wheel failed"
fi
grep -E '^Successfully installed' "$install_log" | fold -s -w 160 || true

# ------------------------------------------------------------------ 5. tests
step "6/6 pytest against the installed wheel"
cp -r "$WORK/src/tests" "$WORK/run/tests"
cd "$WORK/run"
unset PYTHONPATH
export PYTHONNOUSERSITE=1
"$VENV_PY" - <<'PY' || fail "spoofloss is not imported from the fresh venv's site-packages"
import os, sys, sysconfig
import spoofloss

site = os.path.realpath(sysconfig.get_paths()["platlib"])
here = os.path.realpath(spoofloss.__file__)
print(f"spoofloss {spoofloss.__version__} from {here}; build_info {spoofloss.build_info()}")
sys.exit(0 if here.startswith(site + os.sep) and sys.prefix != sys.base_prefix else 1)
PY
rc=0
"$VENV_PY" -m pytest -q -ra -p no:cacheprovider tests "$@" || rc=$?
case $rc in
    0) ;;
    5) fail "pytest collected no tests (exit 5)" ;;
    *) fail "pytest failed (exit $rc)" ;;
esac
step_done

echo
echo "=== timings ==="
printf '%s\n' "${TIMINGS[@]}"
echo "WHEEL CHECK PASSED in $((SECONDS - T_START)) s"
