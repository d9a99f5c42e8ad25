"""Which CUDA kernels the emulated-CUDA build ran, with which dtypes.

The emulator counts every launch per kernel instantiation
(``spoofloss._C.emulation.coverage()``: "pool_chunks_kernel<c10::Half, float, 8>"
-> launches). This module sets that against the ``__global__`` kernels declared
in csrc/cuda/*.cu and *.cuh: a kernel templated on the input dtype
(``scalar_t``) must have run with float32, float64, float16 and bfloat16, one
templated on the accumulation dtype (``acc_t``) with float32 and float64, any
other at least once. conftest.py prints the result at the end of an emulated
run, and fails the run with SPOOFLOSS_REQUIRE_KERNEL_COVERAGE=1 (CI) when a
kernel or a dtype is missing.
"""

from __future__ import annotations

import glob
import os
import re

# tests/helpers/ -> the repository root
REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE_DIR = os.path.join(REPO_DIR, "csrc", "cuda")

DTYPE_NAMES = {"float": "float32", "double": "float64", "c10::Half": "float16", "c10::BFloat16": "bfloat16"}
REQUIRED = {
    "scalar_t": ("float32", "float64", "float16", "bfloat16"),
    "acc_t": ("float32", "float64"),
}

KERNEL_DECLARATION = re.compile(
    r"(?:template\s*<(?P<params>[^>]*)>\s*)?__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(?P<name>\w+)\s*\(")


def declared_kernels(source_dir: str = SOURCE_DIR) -> dict:
    """{kernel name: the dtypes it must run with} for every __global__ kernel of
    csrc/cuda (the emulator's deliberately broken self-test kernels excluded)."""
    kernels = {}
    for path in sorted(glob.glob(os.path.join(source_dir, "*.cu")) + glob.glob(os.path.join(source_dir, "*.cuh"))):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for match in KERNEL_DECLARATION.finditer(text):
            params = match.group("params") or ""
            first = re.match(r"\s*typename\s+(\w+)", params)
            kernels[match.group("name")] = REQUIRED.get(first.group(1) if first else "", ())
    return kernels


def split_instantiation(name: str) -> tuple[str, list[str]]:
    """"pool_chunks_kernel<c10::Half, float, 8>" -> ("pool_chunks_kernel", ["c10::Half", "float", "8"])."""
    base, _, rest = name.partition("<")
    args = [a.strip() for a in rest.rstrip(">").split(",")] if rest else []
    return base.split("::")[-1], args


def report(coverage: dict, source_dir: str = SOURCE_DIR) -> tuple[list[str], list[str]]:
    """(lines to print, what is missing) for the emulator's coverage dict."""
    declared = declared_kernels(source_dir)
    ran: dict[str, dict] = {}
    for instantiation, launches in coverage.items():
        base, args = split_instantiation(instantiation)
        entry = ran.setdefault(base, {"dtypes": set(), "instantiations": 0, "launches": 0})
        if args and args[0] in DTYPE_NAMES:
            entry["dtypes"].add(DTYPE_NAMES[args[0]])
        entry["instantiations"] += 1
        entry["launches"] += launches
    lines = [f"emulated CUDA kernels run ({len(declared)} declared in csrc/cuda):"]
    missing = []
    for name, required in declared.items():
        entry = ran.get(name)
        if entry is None:
            missing.append(f"{name} never ran")
            lines.append(f"  {name}: NEVER RAN")
            continue
        absent = [d for d in required if d not in entry["dtypes"]]
        missing += [f"{name} never ran with {d}" for d in absent]
        dtypes = ", ".join(d for d in DTYPE_NAMES.values() if d in entry["dtypes"]) or "(no dtype parameter)"
        lines.append(f"  {name}: {dtypes}; {entry['instantiations']} instantiations, {entry['launches']} launches"
                     + (f"; MISSING {', '.join(absent)}" if absent else ""))
    return lines, missing
