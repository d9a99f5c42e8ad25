"""Build logic for spoofloss' compiled library ``spoofloss._C``.

Package metadata lives in pyproject.toml; this file decides how the C++/CUDA
extension is built, and the one piece of metadata that depends on the build:
the torch requirement. The library links against the C++ ABI of the torch it
was compiled with, so a built package requires exactly that torch release.

Environment variables understood here:

* ``SPOOFLOSS_CPU_ONLY=1``  build without CUDA even when a toolkit is present.
* ``FORCE_CUDA=1``          build the CUDA kernels; fail if that is impossible.
* ``SPOOFLOSS_CUDA_EMULATION=1``  the emulated-CUDA build: the CUDA kernels and
  their host code compiled by the host compiler against an emulated device
  (csrc/cuda/emulation/), registered for CPU tensors in place of the CPU
  kernels. Needs no toolkit and no GPU; see README ("Emulated CUDA").
* ``SPOOFLOSS_SANITIZE=1``  build with AddressSanitizer and UndefinedBehaviorSanitizer
  (run Python with their runtimes preloaded; see README).
* ``CUDA_HOME`` / ``CUDA_PATH``  CUDA toolkit root (otherwise found from nvcc).
* ``TORCH_CUDA_ARCH_LIST``  GPU architectures (default: DEFAULT_CUDA_ARCHS in
  scripts/build_config.py; nothing is detected from the machine, which may
  have no GPU).
* ``NVCC_THREADS``          nvcc ``--threads``: how many architectures of one .cu
  file compile at once (default: one per architecture, at most one per core).
* ``MAX_JOBS``              parallel compile jobs (read by torch's ninja build).

The facts shared with CMakeLists.txt and the scripts (the default architecture
list, the C++ standard rule, the toolkit discovery, the minimum torch and
setuptools) live in scripts/build_config.py.

Install with ``pip install --no-build-isolation -e .`` (or without ``-e``).
"""

import glob
import importlib.util
import os
import sys

import setuptools

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load_build_config():
    # by path: scripts/ is no package, and putting it on sys.path would leak into the build
    spec = importlib.util.spec_from_file_location("spoofloss_build_config",
                                                  os.path.join(ROOT, "scripts", "build_config.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_config = _load_build_config()
SETUPTOOLS_MAJOR = int(setuptools.__version__.split(".")[0])
# Checked before setuptools reads pyproject.toml, whose errors on an old setuptools
# would not say what to do.
if SETUPTOOLS_MAJOR < build_config.MIN_SETUPTOOLS:
    sys.exit(f"spoofloss: setuptools {setuptools.__version__} is too old to build spoofloss (it needs "
             f">= {build_config.MIN_SETUPTOOLS}); upgrade it in this environment: "
             f"pip install -U 'setuptools>={build_config.MIN_SETUPTOOLS}'")

from setuptools import setup  # noqa: E402

import torch  # noqa: E402
import torch.utils.cpp_extension as cpp_ext  # noqa: E402

TRUE_VALUES = ("1", "true", "yes", "on")


def log(msg):
    print(f"[spoofloss setup] {msg}", file=sys.stderr, flush=True)


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES


def rel_sources(pattern):
    """Sorted source files matching ``pattern``, relative to the project root."""
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def find_cuda_toolkit():
    """Return (root, how_found) of the CUDA toolkit, or (None, why_not)."""
    return build_config.find_cuda_toolkit(warn=lambda msg: log(f"warning: {msg}"))


def decide_cuda():
    """Decide once whether to build the CUDA kernels. Returns (use_cuda, reason, root)."""
    cpu_only, force_cuda = env_flag("SPOOFLOSS_CPU_ONLY"), env_flag("FORCE_CUDA")
    if cpu_only and force_cuda:
        raise RuntimeError("SPOOFLOSS_CPU_ONLY=1 and FORCE_CUDA=1 contradict each other; set only one")
    if EMULATE_CUDA:
        if force_cuda:
            raise RuntimeError("SPOOFLOSS_CUDA_EMULATION=1 and FORCE_CUDA=1 contradict each other; set only one")
        return False, "SPOOFLOSS_CUDA_EMULATION=1 (the CUDA kernels on an emulated device)", None
    if cpu_only:
        return False, "SPOOFLOSS_CPU_ONLY=1", None
    root, how = find_cuda_toolkit()
    if force_cuda:
        if torch.version.cuda is None:
            raise RuntimeError(
                f"FORCE_CUDA=1 but the installed torch {torch.__version__} is not a CUDA build")
        if root is None:
            raise RuntimeError(f"FORCE_CUDA=1 but no CUDA toolkit was found ({how})")
        return True, f"FORCE_CUDA=1 (toolkit from {how})", root
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is not a CUDA build", None
    if root is None:
        return False, f"torch is a CUDA build but no CUDA toolkit was found ({how})", None
    return True, f"torch is a CUDA {torch.version.cuda} build and a toolkit was found ({how})", root


def cxx_standard():
    """The C++ standard torch's headers require (scripts/build_config.py decides)."""
    return f"c++{build_config.cxx_standard(cpp_ext.include_paths())}"


def default_nvcc_threads(archs):
    """One nvcc thread per device-code target of a .cu file, at most one per core:
    the targets compile in parallel, and ninja runs other files beside them."""
    try:
        cubins, ptx = build_config.device_code(archs)
        targets = len(cubins) + len(ptx)
    except ValueError:  # a named architecture ("Hopper"): torch expands it, we cannot count it
        targets = 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(targets, cores))


EMULATE_CUDA = env_flag("SPOOFLOSS_CUDA_EMULATION")
SANITIZE = env_flag("SPOOFLOSS_SANITIZE")
SANITIZER_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-omit-frame-pointer"]


def emulation_sources():
    """The emulated build's sources: the CUDA host code, the emulator, and each
    kernel file (csrc/cuda/*.cu, csrc/cuda/emulation/*.cu) through a generated
    .cpp that includes it, so that the host compiler builds the very same file
    (torch's build would hand a .cu file to nvcc)."""
    sources = rel_sources("csrc/cuda/*.cpp") + rel_sources("csrc/cuda/emulation/*.cpp")
    wrapper_dir = os.path.join("build", "emulation-sources")
    os.makedirs(os.path.join(ROOT, wrapper_dir), exist_ok=True)
    for kernel_file in rel_sources("csrc/cuda/*.cu") + rel_sources("csrc/cuda/emulation/*.cu"):
        stem = os.path.splitext(kernel_file)[0].replace("csrc/", "").replace("/", "_")
        wrapper = os.path.join(wrapper_dir, stem + ".cpp")
        text = ("// Generated by setup.py for the emulated-CUDA build: the kernel file compiled as C++.\n"
                f'#include "../../{kernel_file}"\n')
        path = os.path.join(ROOT, wrapper)
        if not os.path.isfile(path) or open(path, encoding="utf-8").read() != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)  # rewritten only on change, so ninja's rebuild stays incremental
        sources.append(wrapper)
    return sources


def make_extension():
    if torch.__version__ < build_config.MIN_TORCH_VERSION:  # TorchVersion compares as a version
        raise RuntimeError(f"spoofloss needs torch >= {build_config.MIN_TORCH_VERSION}; "
                           f"the installed torch is {torch.__version__}")
    use_cuda, reason, cuda_root = decide_cuda()
    std = cxx_standard()
    torch_version = torch.__version__

    sources = rel_sources("csrc/*.cpp") + rel_sources("csrc/cpu/*.cpp")
    if EMULATE_CUDA:
        # the CPU kernels give way to the CUDA kernels on the emulated device
        sources = [f for f in sources if not f.endswith("_kernel.cpp")] + emulation_sources()
    # csrc/ is deliberately NOT an include dir: it holds scalar_math.h, which would
    # shadow the C library's <scalar_math.h>. Sources include their headers by
    # relative path ("../validation.h").
    include_dirs = []
    # -g0 cancels the -g that Python's own CFLAGS bring: it halves compile time and
    # shrinks the library several-fold.
    cxx_flags = ["-O3", "-g0", f"-std={std}", "-fopenmp"]
    link_flags = ["-fopenmp"]
    nvcc_flags = []
    macros = [("SPOOFLOSS_TORCH_VERSION", f'"{torch_version}"')]
    if EMULATE_CUDA:
        # the kernels' `#pragma unroll` means nothing to the host compiler
        cxx_flags += ["-Wno-unknown-pragmas"]
        macros += [("SPOOFLOSS_CUDA_EMULATION", None)]
        log("building the EMULATED CUDA variant: csrc/cuda kernels on the emulated device, for CPU tensors")
    if SANITIZE:
        cxx_flags = [f for f in cxx_flags if f not in ("-O3", "-g0")] + ["-O1", "-g"] + SANITIZER_FLAGS
        link_flags += SANITIZER_FLAGS
        macros += [("SPOOFLOSS_SANITIZERS", '"address,undefined"')]
        log("with AddressSanitizer + UndefinedBehaviorSanitizer (-O1 -g)")

    if use_cuda:
        archs = build_config.cuda_arch_list()
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs  # read by torch when it compiles .cu files
        os.environ["CUDA_HOME"] = cuda_root
        cpp_ext.CUDA_HOME = cuda_root  # computed at import time from a possibly wrong guess
        # csrc/cuda/*.cpp (optional): host-side CUDA code compiled by the C++ compiler, so
        # that the .cu files can stay lean (nvcc compiles every header once per arch).
        sources += rel_sources("csrc/cuda/*.cpp") + rel_sources("csrc/cuda/*.cu")
        extra_inc = build_config.nvidia_include_dirs(cuda_root)
        # Keep the toolkit's own include folder ahead of the pip nvidia folders
        # (which also carry cuda_runtime headers of a possibly different version).
        try:
            torch_cuda_includes = cpp_ext.include_paths(device_type="cuda")
        except TypeError:  # torch < 2.6: include_paths(cuda=True)
            torch_cuda_includes = cpp_ext.include_paths(cuda=True)
        include_dirs += torch_cuda_includes + extra_inc
        threads = os.environ.get("NVCC_THREADS", "").strip() or str(default_nvcc_threads(archs))
        nvcc_flags = ["-O3", f"-std={std}", "--threads", threads, "-Xcompiler", "-fopenmp"]
        macros += [("WITH_CUDA", None), ("SPOOFLOSS_CUDA_ARCHS", f'"{archs}"')]
        log(f"building WITH CUDA: {reason}")
        log(f"CUDA toolkit root: {cuda_root}")
        log(f"TORCH_CUDA_ARCH_LIST: {archs}")
        log(f"extra CUDA include dirs: {', '.join(extra_inc) if extra_inc else '(none needed)'}")
        log(f"nvcc --threads {threads}")
    else:
        macros += [("SPOOFLOSS_CUDA_ARCHS", '""')]
        log(f"building CPU ONLY: {reason}")
    log(f"torch {torch_version}, -std={std}, {len(sources)} source files, "
        f"MAX_JOBS={os.environ.get('MAX_JOBS', '(ninja default: cores + 2)')}")

    if not sources:
        raise RuntimeError(f"no sources found under {os.path.join(ROOT, 'csrc')}")

    # define_macros reach both the host compiler and nvcc.
    kwargs = dict(
        name="spoofloss._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags} if use_cuda else {"cxx": cxx_flags},
        extra_link_args=link_flags,
    )
    ext = cpp_ext.CUDAExtension(**kwargs) if use_cuda else cpp_ext.CppExtension(**kwargs)
    return ext, use_cuda


# Written beside the library at build time: the torch it was built against, for
# spoofloss/__init__.py to name when the library fails to load (build_info() is
# then out of reach). Keep the name in sync with __init__.py.
TORCH_VERSION_STAMP = "_C.torch_version"


class BuildExtension(cpp_ext.BuildExtension):
    """torch's BuildExtension, with object files kept in a fixed folder under build/,
    and the torch version stamp written beside the library.

    setuptools' editable install (pip install -e) compiles in a fresh temporary
    folder each time, so every rebuild would start from scratch; a fixed folder lets
    ninja recompile only what changed. CUDA and CPU-only builds use separate folders.
    """

    def build_extension(self, ext):
        super().build_extension(ext)
        with open(self._stamp_path(self.get_ext_fullpath(ext.name)), "w", encoding="utf-8") as f:
            f.write(torch.__version__ + "\n")

    def copy_extensions_to_source(self):
        # editable installs build into build/ and copy the library into the source
        # package; the stamp goes with it
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            if os.path.exists(self._stamp_path(regular_file)):
                self.copy_file(self._stamp_path(regular_file), self._stamp_path(inplace_file), level=self.verbose)

    @staticmethod
    def _stamp_path(library_path):
        return os.path.join(os.path.dirname(library_path), TORCH_VERSION_STAMP)

    def finalize_options(self):
        super().finalize_options()
        # Always hand the sources to ninja, which knows about header changes;
        # setuptools alone would skip the build when the .so is newer than the .cpp/.cu.
        self.force = True
        tag = "cuda" if USE_CUDA else "emulated" if EMULATE_CUDA else "cpu"
        if SANITIZE:
            tag += "-asan"
        self.build_temp = os.path.join(
            ROOT, "build", f"temp-{tag}-py{sys.version_info[0]}{sys.version_info[1]}")


def license_metadata():
    """The license, in the form this setuptools writes: an SPDX expression (PEP 639,
    setuptools >= 77) or, for the older setuptools found in many ESPnet
    environments, the classic License field. pyproject.toml declares `license`
    dynamic so that both can build."""
    if SETUPTOOLS_MAJOR >= 77:
        return dict(license_expression="MIT", license_files=["LICENSE"])
    return dict(license="MIT", license_files=["LICENSE"])


EXTENSION, USE_CUDA = make_extension()

setup(
    ext_modules=[EXTENSION],
    # pyproject.toml declares dependencies dynamic for this; ==X.Y.Z also accepts
    # the local builds of that release (+cpu, +cu130)
    install_requires=[f"torch=={torch.__version__.split('+')[0]}"],
    cmdclass={"build_ext": BuildExtension},
    **license_metadata(),
)
