"""Which CUDA kernels the emulated-CUDA build ran, with which dtypes.

The emulator counts every launch per kernel instantiation
(``spoofloss._C.emulation.coverage()``: "pool_chunks_kernel<c10::Half, float, true>"
-> launches). This module sets that against the ``__global__`` kernels declared
in csrc/cuda/*.cu and *.cuh: a kernel templated on the input dtype
(``scalar_t``) must have run with float32, float64, float16 and bfloat16, one
templated on the accumulation dtype (``acc_t``) alone with float32 and float64
(a second dtype parameter follows from the first), and each of these with both
values of every ``bool`` parameter (a vectorised and a plain path are two
kernels); any other kernel at least once. conftest.py prints the result at the
end of an emulated run, and fails the run with
SPOOFLOSS_REQUIRE_KERNEL_COVERAGE=1 (CI) when a kernel or a combination is
missing; tests/test_emulation.py holds helpers/every_kernel.py to the same.
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


def _required_combinations(params: str) -> list[tuple]:
    """The argument combinations a kernel with these template parameters must
    run with: (dtype of the first dtype parameter or None, bool values in order)."""
    dtypes, bools = [None], [()]
    for index, param in enumerate(p.strip() for p in params.split(",") if p.strip()):
        kind, _, name = param.rpartition(" ")
        if kind == "typename" and index == 0:
            dtypes = list(REQUIRED.get(name, (None,)))
        elif kind == "bool":
            bools = [values + (value,) for values in bools for value in ("true", "false")]
    return [(dtype, values) for dtype in dtypes for values in bools]


def declared_kernels(source_dir: str = SOURCE_DIR) -> dict:
    """{kernel name: the combinations it must run with (_required_combinations)}
    for every __global__ kernel of csrc/cuda (the emulator's deliberately broken
    self-test kernels excluded)."""
    kernels = {}
    for path in sorted(glob.glob(os.path.join(source_dir, "*.cu")) + glob.glob(os.path.join(source_dir, "*.cuh"))):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for match in KERNEL_DECLARATION.finditer(text):
            kernels[match.group("name")] = _required_combinations(match.group("params") or "")
    return kernels


def split_instantiation(name: str) -> tuple[str, list[str]]:
    """"pool_chunks_kernel<c10::Half, float, 8>" -> ("pool_chunks_kernel", ["c10::Half", "float", "8"])."""
    base, _, rest = name.partition("<")
    args = [a.strip() for a in rest.rstrip(">").split(",")] if rest else []
    return base.split("::")[-1], args


def _combination(args: list[str]) -> tuple:
    """(dtype name or None, bool arguments in order) of one instantiation's arguments."""
    dtype = DTYPE_NAMES.get(args[0]) if args else None
    return dtype, tuple(a for a in args if a in ("true", "false"))


def _covered(required: tuple, ran: set) -> bool:
    """Whether an instantiation that ran meets ``required`` (a dtype of None: any dtype)."""
    return any(required[0] in (None, dtype) and required[1] == bools for dtype, bools in ran)


def _describe(combination: tuple) -> str:
    dtype, bools = combination
    return " ".join([dtype or "(no dtype parameter)", *(f"bool={b}" for b in bools)])


def report(coverage: dict, source_dir: str = SOURCE_DIR) -> tuple[list[str], list[str]]:
    """(lines to print, what is missing) for the emulator's coverage dict."""
    declared = declared_kernels(source_dir)
    ran: dict[str, dict] = {}
    for instantiation, launches in coverage.items():
        base, args = split_instantiation(instantiation)
        entry = ran.setdefault(base, {"combinations": set(), "instantiations": 0, "launches": 0})
        entry["combinations"].add(_combination(args))
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
        absent = [_describe(c) for c in required if not _covered(c, entry["combinations"])]
        missing += [f"{name} never ran with {a}" for a in absent]
        dtypes = {dtype for dtype, _ in entry["combinations"]}
        listed = ", ".join(d for d in DTYPE_NAMES.values() if d in dtypes) or "(no dtype parameter)"
        lines.append(f"  {name}: {listed}; {entry['instantiations']} instantiations, {entry['launches']} launches"
                     + (f"; MISSING {'; '.join(absent)}" if absent else ""))
    return lines, missing
