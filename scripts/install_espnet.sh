#!/usr/bin/env bash
# Install the pinned ESPnet that tests/test_espnet_model.py runs against, into the
# environment of $PYTHON (default: python on PATH), without touching its torch:
#   PYTHON=.venv/bin/python bash scripts/install_espnet.sh
# Every package of scripts/requirements-espnet.txt is pinned and installed with
# --no-deps, so pip resolves nothing and cannot replace torch. Idempotent: when
# every pin is already installed it does nothing (about a second).
# Exits non-zero, saying why, when a pin cannot be installed, when ESPnet's
# asvspoof model or task does not import afterwards, or when torch changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"
REQUIREMENTS=scripts/requirements-espnet.txt
T0=$SECONDS

fail() {
    echo "install_espnet.sh: FAILED: $*" >&2
    exit 1
}

command -v "$PYTHON" >/dev/null 2>&1 || fail "no interpreter '$PYTHON' (set PYTHON to the python to install into)"
[ -f "$REQUIREMENTS" ] || fail "missing $REQUIREMENTS"

# torch's installed version, read from its metadata (importing torch takes seconds)
torch_version() {
    "$PYTHON" -c 'from importlib import metadata; print(metadata.version("torch"))' 2>/dev/null
}
torch_before="$(torch_version)" || fail "torch is not installed in $PYTHON; install it first (scripts/setup_env.sh)"

# The pins not yet installed at their pinned version (no network needed to tell).
missing="$("$PYTHON" - "$REQUIREMENTS" <<'PY'
import re, sys
from importlib import metadata

for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line).groups()
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have != version:
        print(f"{name}=={version}")
PY
)" || fail "could not read $REQUIREMENTS"

if [ -n "$missing" ]; then
    echo "[install_espnet] installing into $("$PYTHON" -c 'import sys; print(sys.prefix)') with --no-deps:"
    echo "$missing" | sed 's/^/    /'
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install -q --no-deps --disable-pip-version-check --progress-bar off $missing \
        || fail "pip install --no-deps of the pins above failed"
else
    # the import check below costs half a minute; it ran when these were installed
    echo "[install_espnet] every pin of $REQUIREMENTS is already installed in $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    exit 0
fi

torch_after="$(torch_version)"
[ "$torch_after" = "$torch_before" ] || fail "torch changed from $torch_before to $torch_after"

# What the tests import. g2p_en (imported by ESPnet's text pre-processing) tries
# to download NLTK data on import and only warns where it cannot: hide that noise.
"$PYTHON" - <<'PY' 2> >(grep -v -e '^\[nltk_data\]' -e 'flash_attn' >&2) \
    || fail "ESPnet's asvspoof model or task does not import after the install (see the error above)"
import espnet
import espnet2.asvspoof.espnet_model  # noqa: F401
import espnet2.tasks.asvspoof  # noqa: F401
print(f"[install_espnet] espnet {espnet.__version__}: espnet2.asvspoof.espnet_model and espnet2.tasks.asvspoof import")
PY
echo "[install_espnet] done in $((SECONDS - T0)) s (torch $torch_after unchanged)"
