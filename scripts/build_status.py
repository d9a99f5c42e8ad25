"""Does the installed spoofloss library fit what a script is about to do?

    python scripts/build_status.py NEED

scripts/build.sh (ensure_built) asks this before bench.sh, demo.sh and
`test.sh --quick` run, and rebuilds when the answer is no. NEED is one of

    gpu        the CUDA build, with device code for every GPU of this machine
    cpu        a library whose CPU kernels are the real ones: the CPU-only or the
               CUDA build, not the emulated or sanitized one (benchmarking or
               training on the emulator is meaningless)
    emulated   the emulated-CUDA build (the CUDA kernels on an emulated device)
    auto       gpu when this machine has a CUDA GPU, else cpu
    kernels    gpu when this machine has a CUDA GPU, else emulated: the build that
               runs the most kernel code here
    exactly:VARIANT  the VARIANT build (cuda, cpu, emulated, sanitized), whatever the
               machine: how scripts/build.sh checks what it has just built

and the answer is key=value lines on stdout:

    need=gpu|cpu|emulated          NEED with auto/kernels resolved
    have=...                       the installed library, in words
    build_info=...                 its spoofloss.build_info(), as JSON
    verdict=ok|rebuild
    why=...                        (rebuild) what does not fit
    variant=cuda|cpu|emulated      (rebuild) the variant to build
    archs=...                      (rebuild, cuda) the TORCH_CUDA_ARCH_LIST to build with

The library is inspected through spoofloss.build_info() in a child process (a
sanitized library loads only with the sanitizer runtimes preloaded, and one that
fails to import must not take this script down).
"""

import glob
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import build_config  # noqa: E402

# what a change to which forces a rebuild (besides the library failing to import)
BUILD_INPUTS = ("csrc", "setup.py", "pyproject.toml", os.path.join("scripts", "build_config.py"))
SOURCE_SUFFIXES = (".cpp", ".cu", ".h", ".cuh", ".py", ".toml")

VARIANT_WORDS = {
    "cuda": "the CUDA build",
    "cpu": "the CPU-only build",
    "emulated": "the emulated-CUDA build (the CUDA kernels on an emulated device, hundreds of times slower)",
    "sanitized": "the emulated build with AddressSanitizer + UBSan (it loads only with their runtimes preloaded)",
}


def library_path():
    """The spoofloss._C file the current interpreter would load, found without importing spoofloss."""
    spec = importlib.util.find_spec("spoofloss")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "_C" + sysconfig.get_config_var("EXT_SUFFIX"))
        if os.path.isfile(path):
            return path
    return None


def is_sanitized(path):
    with open(path, "rb") as f:
        return b"libasan.so" in f.read()


def installed_build_info(path):
    """(build_info dict, None) or (None, why it cannot be had)."""
    env = dict(os.environ)
    if is_sanitized(path):
        env.update(build_config.sanitizer_env())
    code = "import json, spoofloss; print(json.dumps(spoofloss.build_info()))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return None, f"the installed library does not import ({lines[-1] if lines else f'exit {proc.returncode}'})"
    return json.loads(proc.stdout.strip().splitlines()[-1]), None


def variant_of(info):
    if info.get("sanitizers"):
        return "sanitized"
    if info.get("cuda_emulation"):
        return "emulated"
    return "cuda" if info.get("with_cuda") else "cpu"


def newer_source(path):
    """A build input of this checkout newer than the library, or None. Only for a
    library built from this checkout (an editable install)."""
    if not os.path.realpath(path).startswith(os.path.join(os.path.realpath(ROOT), "")):
        return None
    built = os.path.getmtime(path)
    for item in BUILD_INPUTS:
        full = os.path.join(ROOT, item)
        files = [full] if os.path.isfile(full) else glob.glob(os.path.join(full, "**", "*"), recursive=True)
        for f in sorted(files):
            if f.endswith(SOURCE_SUFFIXES) and os.path.getmtime(f) > built:
                return os.path.relpath(f, ROOT)
    return None


def gpus():
    """[(name, (major, minor))] of the CUDA GPUs torch sees."""
    if torch.version.cuda is None or not torch.cuda.is_available():
        return []
    return [(torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i))
            for i in range(torch.cuda.device_count())]


def main(argv):
    needs = ("gpu", "cpu", "emulated", "auto", "kernels") + tuple(f"exactly:{v}" for v in VARIANT_WORDS)
    if len(argv) != 1 or argv[0] not in needs:
        print(__doc__, file=sys.stderr)
        return 2
    need = argv[0]
    devices = gpus()
    if need in ("auto", "kernels"):
        need = "gpu" if devices else ("cpu" if need == "auto" else "emulated")
    if need == "gpu" and not devices:
        why = (f"torch {torch.__version__} is not a CUDA build" if torch.version.cuda is None
               else "torch sees no CUDA GPU")
        print(f"build_status.py: the CUDA build was asked for, but {why}", file=sys.stderr)
        return 2
    out = {"need": need}

    path = library_path()
    why = None
    info = None
    if path is None:
        why = "spoofloss is not built (no compiled library)"
        out["have"] = "nothing"
    else:
        info, why = installed_build_info(path)
        if info is not None:
            have = variant_of(info)
            out["have"] = VARIANT_WORDS[have] + (f" for {info['cuda_archs']}" if have == "cuda" else "")
            out["build_info"] = json.dumps(info, sort_keys=True)
            newer = newer_source(path)
            if need.startswith("exactly:"):
                if have != need.split(":")[1]:
                    why = f"the installed library is {VARIANT_WORDS[have]}"
            elif need == "gpu":
                if have != "cuda":
                    why = f"this machine has a CUDA GPU ({devices[0][0]}) and the installed library is {VARIANT_WORDS[have]}"
                else:
                    for name, cap in devices:
                        if build_config.covers(info["cuda_archs"], cap) is None:
                            why = (f"the installed CUDA build has no code for {name} (sm_{cap[0]}{cap[1]}): "
                                   f"it was built for {info['cuda_archs']}")
                            break
            elif need == "cpu" and have not in ("cpu", "cuda"):
                why = f"the installed library is {VARIANT_WORDS[have]}; this needs the real CPU kernels"
            elif need == "emulated" and have != "emulated":
                why = f"the installed library is {VARIANT_WORDS[have]}"
            if why is None and newer:
                why = f"{newer} is newer than the library"
        else:
            out["have"] = "a library that does not import"

    if why is None:
        out["verdict"] = "ok"
    else:
        out["verdict"] = "rebuild"
        out["why"] = why
        if need == "cpu":
            # a CUDA build serves the CPU too: build it where a GPU could use it, or when asked to
            env_flag = lambda name: os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
            cuda = (devices or env_flag("FORCE_CUDA")) and not env_flag("SPOOFLOSS_CPU_ONLY")
            out["variant"] = "cuda" if cuda else "cpu"
        else:
            out["variant"] = {"gpu": "cuda"}.get(need, need.split(":")[-1])
        if out["variant"] == "cuda":
            archs = build_config.cuda_arch_list()
            for name, cap in devices:  # add the arch of a GPU that the list does not cover (T4: 7.5)
                if build_config.covers(archs, cap) is None:
                    archs += f";{cap[0]}.{cap[1]}"
            out["archs"] = archs
    for key, value in out.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
