"""The build facts of spoofloss, each in one place.

setup.py imports this file; CMakeLists.txt and the shell scripts run it
(``python scripts/build_config.py FACT [ARGS]`` prints one fact on one line).
Standard library only: it runs before torch is importable (scripts/setup_env.sh
asks it which torch to install) and from CMake for a libtorch consumer.

    torch-version           the torch release the project is developed and tested with
    second-torch-version    the older release scripts/check_wheel.sh also builds against
    min-torch-version       the oldest torch setup.py accepts
    min-setuptools          the oldest setuptools setup.py accepts
    cuda-archs              the GPU architectures to build: $TORCH_CUDA_ARCH_LIST, else the default
    device-code [ARCHS]     the cubins and PTX a build for ARCHS must hold ("sm_80 sm_90 ... | compute_120")
    covers ARCHS MAJOR.MINOR  whether a library built for ARCHS runs on a GPU of that capability
    cuda-root               the CUDA toolkit root (exit 1 and the reason on stderr when none)
    nvidia-include-dirs CUDA_ROOT  the pip nvidia/*/include folders holding CUDA library headers
                            that the toolkit lacks (';'-separated)
    cxx-std INCLUDE_DIR...  the C++ standard torch's headers in those folders require (20 or 17)
    sanitizer-env           VAR=value words to run Python with a SPOOFLOSS_SANITIZE=1 library
"""

import glob
import os
import re
import shutil
import subprocess
import sys

# torch is pinned to one release: the compiled library links against torch's C++
# ABI, and the tests, benchmarks and CI run against this one (setup_env.sh installs it).
TORCH_VERSION = "2.14.1"
# scripts/check_wheel.sh builds and tests the wheel against this older release as
# well, to show that the sources are not tied to one torch.
SECOND_TORCH_VERSION = "2.13.0"
# torch.library.register_fake, which python/spoofloss/ops.py uses, came in 2.4.
MIN_TORCH_VERSION = "2.4"
# The oldest setuptools that builds spoofloss: 64 brought editable installs of
# pyproject projects (PEP 660). setup.py checks it before setuptools reads
# pyproject.toml, and writes the license in the form that setuptools knows
# (an SPDX License-Expression from 77 on).
MIN_SETUPTOOLS = 64

# GPU architectures built when TORCH_CUDA_ARCH_LIST is unset (nothing is detected
# from the machine, which may have no GPU). A cubin runs on its own major
# generation from its minor version up, so:
#   8.0   A100, A10/A30/A40, RTX 30 and L4/L40/RTX 40 (sm_86, sm_89);
#   9.0   H100/H200/GH200;
#   10.0  B200/GB200 and B300/GB300 (sm_103);
#   12.0  RTX 50, RTX PRO 6000 Blackwell, DGX Spark (sm_121);
#   +PTX  the compute_120 PTX, which the driver compiles for any later GPU.
# These are the architectures the CUDA 13 builds of torch ship cubins for, less
# sm_75 (Turing: T4) and sm_86 (which the sm_80 cubin covers). sm_110 (Jetson
# Thor, aarch64) needs TORCH_CUDA_ARCH_LIST to include 11.0.
DEFAULT_CUDA_ARCHS = "8.0;9.0;10.0;12.0+PTX"

_ARCH_RE = re.compile(r"(\d+)\.(\d+)([af]?)(\+PTX)?")


def cuda_arch_list(value=None):
    """The architecture list, ';'-separated: ``value``, else $TORCH_CUDA_ARCH_LIST, else the default."""
    if value is None:
        value = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    value = value.strip() or DEFAULT_CUDA_ARCHS
    # torch accepts ';' or ' ' separators; keep the entries, joined by ';'
    return ";".join(a for a in re.split(r"[;\s]+", value) if a)


def _parse(arch_list):
    """[(major, minor, suffix, with_ptx)] of a numeric architecture list ("8.0;9.0a;12.0+PTX")."""
    parsed = []
    for entry in cuda_arch_list(arch_list).split(";"):
        match = _ARCH_RE.fullmatch(entry)
        if not match:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST entry {entry!r}: expected a form such as 9.0 or 12.0+PTX "
                             "(named architectures such as 'Hopper' cannot be checked here)")
        parsed.append((int(match[1]), int(match[2]), match[3], bool(match[4])))
    return parsed


def device_code(arch_list=None):
    """(cubins, ptx): what a library built for ``arch_list`` holds, as cuobjdump names it:
    (["sm_80", "sm_90", ...], ["compute_120"])."""
    cubins, ptx = [], []
    for major, minor, suffix, with_ptx in _parse(arch_list):
        cubins.append(f"sm_{major}{minor}{suffix}")
        if with_ptx:
            ptx.append(f"compute_{major}{minor}{suffix}")
    return cubins, ptx


def covers(arch_list, capability):
    """How a GPU of ``capability`` (major, minor) would run a library built for
    ``arch_list``: "sm_XY cubin", "compute_XY PTX (JIT-compiled)", or None when it cannot."""
    major, minor = capability
    cubin = ptx = None
    for a_major, a_minor, suffix, with_ptx in _parse(arch_list):
        # a cubin runs on its own major generation from its minor version up; the
        # arch-specific ones (9.0a, 10.0a) only on that exact GPU
        if a_major == major and (a_minor == minor if suffix == "a" else a_minor <= minor):
            if cubin is None or a_minor > cubin[1]:
                cubin = (a_major, a_minor, suffix)
        # PTX compiles for any GPU of at least its capability (not "a"/"f" PTX)
        if with_ptx and not suffix and (a_major, a_minor) <= (major, minor):
            if ptx is None or (a_major, a_minor) > ptx:
                ptx = (a_major, a_minor)
    if cubin:
        return f"sm_{cubin[0]}{cubin[1]}{cubin[2]} cubin"
    if ptx:
        return f"compute_{ptx[0]}{ptx[1]} PTX (JIT-compiled by the driver)"
    return None


def _has_nvcc(root):
    return os.path.isfile(os.path.join(root, "bin", "nvcc"))


def find_cuda_toolkit(environ=None, warn=None):
    """(root, how_found) of the CUDA toolkit, or (None, why_not).

    $CUDA_HOME, then $CUDA_PATH, then the toolkit of the nvcc on PATH (asked
    with ``nvcc -dryrun``: nvcc on PATH may be a wrapper script outside the
    toolkit), then /usr/local/cuda."""
    environ = os.environ if environ is None else environ
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = environ.get(var)
        if value:
            if _has_nvcc(value):
                return os.path.realpath(value), f"${var}"
            warn(f"${var}={value} has no bin/nvcc; ignoring it")
    nvcc = shutil.which("nvcc", path=environ.get("PATH"))
    if nvcc:
        try:
            proc = subprocess.run([nvcc, "-dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                                  capture_output=True, text=True, timeout=120)
            match = re.search(r"^#\$ TOP=(.+)$", proc.stderr + proc.stdout, re.MULTILINE)
        except (OSError, subprocess.SubprocessError):
            match = None
        if match:
            top = os.path.realpath(match.group(1).strip())
            if _has_nvcc(top):
                return top, f"nvcc on PATH ({nvcc}, toolkit reported by nvcc -dryrun)"
        guess = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if _has_nvcc(guess):
            return guess, f"nvcc on PATH ({nvcc})"
    if _has_nvcc("/usr/local/cuda"):
        return os.path.realpath("/usr/local/cuda"), "/usr/local/cuda"
    return None, "no nvcc on PATH, no CUDA_HOME/CUDA_PATH, no /usr/local/cuda"


# Headers that torch's CUDA headers (ATen/cuda/CUDAContext.h ...) include. Recent
# pip-installed torch wheels ship them in site-packages/nvidia/*/include rather than
# relying on the toolkit.
CUDA_LIBRARY_HEADERS = ("cublas_v2.h", "cublasLt.h", "cusparse.h", "cusolverDn.h", "curand.h", "cufft.h")


def nvidia_include_dirs(cuda_root):
    """Include folders of the pip ``nvidia`` packages (of the running interpreter)
    that hold the headers the toolkit at ``cuda_root`` lacks."""
    toolkit_inc = os.path.join(cuda_root, "include")
    missing = [h for h in CUDA_LIBRARY_HEADERS if not os.path.isfile(os.path.join(toolkit_inc, h))]
    if not missing:
        return []
    try:
        import nvidia  # a namespace package, installed with the CUDA builds of torch
        bases = list(nvidia.__path__)
    except ImportError:
        return []
    candidates = [d for base in bases for d in sorted(glob.glob(os.path.join(base, "*", "include")))]
    dirs = []
    for header in missing:
        for cand in candidates:
            if os.path.isfile(os.path.join(cand, header)):
                if cand not in dirs:
                    dirs.append(cand)
                break
    return dirs


def cxx_standard(include_dirs):
    """20 when torch's ATen/ATen.h (found in ``include_dirs``) requires C++20
    (torch >= 2.10 refuses anything older), else 17."""
    for inc in include_dirs:
        aten = os.path.join(inc, "ATen", "ATen.h")
        if os.path.isfile(aten):
            with open(aten, encoding="utf-8", errors="replace") as f:
                return 20 if "202002L" in f.read() else 17
    raise FileNotFoundError(f"no ATen/ATen.h in {list(include_dirs)}: not torch's include folders")


def sanitizer_env():
    """The environment a library built with SPOOFLOSS_SANITIZE=1 runs under: the ASan and
    UBSan runtimes preloaded (the Python interpreter is not built with them), leak
    reports off (Python's own allocations would flood them), stop at the first UBSan
    report."""
    def runtime(name):
        return subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True,
                              check=True).stdout.strip()
    return {
        "LD_PRELOAD": f"{runtime('libasan.so')}:{runtime('libubsan.so')}",
        "ASAN_OPTIONS": "detect_leaks=0",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    fact, args = argv[0], argv[1:]
    if fact == "torch-version":
        print(TORCH_VERSION)
    elif fact == "second-torch-version":
        print(SECOND_TORCH_VERSION)
    elif fact == "min-torch-version":
        print(MIN_TORCH_VERSION)
    elif fact == "min-setuptools":
        print(MIN_SETUPTOOLS)
    elif fact == "cuda-archs":
        print(cuda_arch_list())
    elif fact == "device-code":
        cubins, ptx = device_code(args[0] if args else None)
        print(" ".join(cubins), "|", " ".join(ptx))
    elif fact == "covers":
        major, minor = (int(x) for x in args[1].split("."))
        how = covers(args[0], (major, minor))
        if how is None:
            return 1
        print(how)
    elif fact == "cuda-root":
        root, how = find_cuda_toolkit()
        if root is None:
            print(how, file=sys.stderr)
            return 1
        print(root)
    elif fact == "nvidia-include-dirs":
        print(";".join(nvidia_include_dirs(args[0])))
    elif fact == "cxx-std":
        print(cxx_standard(args))
    elif fact == "sanitizer-env":
        print(" ".join(f"{k}={v}" for k, v in sanitizer_env().items()))
    else:
        print(f"unknown fact {fact!r}; see --help", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (ValueError, OSError) as error:
        print(f"build_config.py: {error}", file=sys.stderr)
        sys.exit(2)
