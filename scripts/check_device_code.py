"""Check that a CUDA build of spoofloss holds the GPU code it was asked for.

    python scripts/check_device_code.py LIBRARY [ARCHS]

ARCHS is a TORCH_CUDA_ARCH_LIST (default: $TORCH_CUDA_ARCH_LIST, else the default
list of scripts/build_config.py). With cuobjdump (the toolkit's, the one on PATH,
or the copy that triton ships) it checks that LIBRARY holds

  - a cubin for every architecture of ARCHS from every kernel file (csrc/cuda/*.cu),
    and no cubin for another architecture;
  - the PTX of every "+PTX" entry from every kernel file, and no other PTX;
  - the same kernels in every cubin and in the PTX: each architecture holds every
    instantiated __global__ function, so no GPU finds one missing at launch.

A GPU runs the cubin of its own major generation (the newest minor at or below its
own), else JIT-compiles the newest PTX at or below its capability; with neither,
it fails with "no kernel image is available". scripts/test.sh runs this on the
CUDA build (stage 4).
"""

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import build_config  # noqa: E402


def find_cuobjdump():
    root, _ = build_config.find_cuda_toolkit(warn=lambda msg: None)
    candidates = [os.path.join(root, "bin", "cuobjdump")] if root else []
    candidates.append(shutil.which("cuobjdump"))
    spec = importlib.util.find_spec("triton")  # pip's triton ships one for its own use
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidates.append(os.path.join(folder, "backends", "nvidia", "bin", "cuobjdump"))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


def run(cuobjdump, *args):
    proc = subprocess.run([cuobjdump, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"FAIL: {cuobjdump} {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def kernels_by_arch(text, entry_pattern):
    """{arch: set of kernel names} from a cuobjdump dump in which each fatbin
    entry starts with an "arch = sm_XY" line."""
    found, arch = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*arch = (sm_\w+)", line)
        if m:
            arch = m[1]
            found.setdefault(arch, set())
            continue
        m = re.match(entry_pattern, line)
        if m and arch:
            found[arch].add(m[1])
    return found


def main(argv):
    if not argv or len(argv) > 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    library = argv[0]
    archs = build_config.cuda_arch_list(argv[1] if len(argv) > 1 else None)
    want_cubins, want_ptx = build_config.device_code(archs)
    kernel_files = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        sys.exit("FAIL: no cuobjdump (not in the CUDA toolkit, not on PATH, no triton) to check the CUDA build")
    print(f"{cuobjdump}: {os.path.basename(library)}, TORCH_CUDA_ARCH_LIST={archs}, "
          f"{len(kernel_files)} kernel files")

    # cuobjdump names a cubin "<lib>.<n>.sm_80.cubin" and the PTX "<lib>.<n>.sm_120.ptx"
    elf = re.findall(r"\.(sm_\w+)\.cubin$", run(cuobjdump, "--list-elf", library), re.MULTILINE)
    ptx = ["compute_" + a[3:] for a in
           re.findall(r"\.(sm_\w+)\.ptx$", run(cuobjdump, "--list-ptx", library), re.MULTILINE)]
    problems = []
    for kind, want, have in (("cubin", want_cubins, elf), ("PTX", want_ptx, ptx)):
        for arch in want:
            if have.count(arch) != len(kernel_files):
                problems.append(f"{have.count(arch)} {arch} {kind}s, expected one from each of the "
                                f"{len(kernel_files)} kernel files")
        for arch in sorted(set(have) - set(want)):
            problems.append(f"{have.count(arch)} {arch} {kind}s, which TORCH_CUDA_ARCH_LIST does not ask for")

    # the kernels in each cubin (per architecture) and in the PTX
    cubin_kernels = kernels_by_arch(run(cuobjdump, "--dump-resource-usage", library), r"\s*Function (\S+?):?$")
    ptx_kernels = {"compute_" + a[3:]: k for a, k in
                   kernels_by_arch(run(cuobjdump, "--dump-ptx", library), r"\s*(?:\.visible\s+)?\.entry\s+(\w+)").items()}
    every = set().union(*cubin_kernels.values(), *ptx_kernels.values())
    if not every:
        problems.append("no kernels found in the device code")
    print(f"{'code':<14}{'files':>6}{'kernels':>9}")
    for name, kernels, count in ([(a, cubin_kernels.get(a, set()), elf.count(a)) for a in want_cubins]
                                 + [(a, ptx_kernels.get(a, set()), ptx.count(a)) for a in want_ptx]):
        print(f"{name:<14}{count:>6}{len(kernels):>9}")
        missing = every - kernels
        if missing:
            problems.append(f"{name} lacks {len(missing)} of the {len(every)} kernels, e.g. {sorted(missing)[0]}")
    if problems:
        print("FAIL: the CUDA build does not hold the GPU code asked for:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    covered = ", ".join(want_cubins + [p + " PTX" for p in want_ptx])
    print(f"OK: {covered}; every one holds all {len(every)} kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
