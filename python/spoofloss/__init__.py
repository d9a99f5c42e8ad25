"""spoofloss: fused CPU/CUDA kernels for speech anti-spoofing losses.

Drop-in replacements for ESPnet2's asvspoof losses (see ``spoofloss.espnet``),
with forward, backward and score each fused into single kernels.
"""

__version__ = "0.1.0"

# Written beside the library by setup.py (TORCH_VERSION_STAMP there): the torch
# it was built against, readable when the library itself will not load.
_TORCH_VERSION_STAMP = "_C.torch_version"


def _how_to_build(verb):
    return (f"{verb} it against the torch imported now: in the spoofloss repository run "
            "`pip install --no-build-isolation -e .` (SPOOFLOSS_CPU_ONLY=1 for a build without CUDA), or install a "
            "spoofloss wheel built against this torch (see README.md).")


def _read_stamp(package_dir):
    import os

    try:
        with open(os.path.join(package_dir, _TORCH_VERSION_STAMP), encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _load_library():
    import glob
    import importlib.util
    import os
    import sys

    import torch

    package_dir = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.find_spec(f"{__name__}._C")
    if spec is None:
        # Nothing this interpreter can import; a library built for another Python
        # (another cpython-3XX tag) would still be lying there.
        others = sorted(os.path.basename(p) for p in glob.glob(os.path.join(package_dir, "_C.*"))
                        if not p.endswith(_TORCH_VERSION_STAMP))
        found = (f" It holds {', '.join(others)}, built for another Python than this one "
                 f"({sys.implementation.cache_tag})." if others else "")
        raise ImportError(
            f"spoofloss: the compiled library spoofloss._C is not built: {package_dir} has no _C library for this "
            f"Python.{found} {_how_to_build('Build')}"
        )
    try:
        from . import _C
    except ImportError as error:
        # There, but the dynamic loader or the module's init refused it: most often an
        # undefined symbol because torch changed since the build.
        stamp = _read_stamp(package_dir)
        if stamp is None:
            built = "It was probably built against another torch"
        elif stamp != torch.__version__:
            built = f"It was built against torch {stamp}"
        else:
            built = f"It was built against this torch ({stamp}), so the loader's message above names the cause"
        raise ImportError(
            f"spoofloss: the compiled library {spec.origin} is present but fails to load ({error}). {built}; torch "
            f"{torch.__version__} is imported. {_how_to_build('Rebuild')}"
        ) from error
    built_with = _C.build_info()["torch_version"]
    if built_with != torch.__version__:
        raise ImportError(
            f"spoofloss: the compiled library {spec.origin} was built against torch {built_with}, but torch "
            f"{torch.__version__} is imported. {_how_to_build('Rebuild')}"
        )
    return _C


_C = _load_library()

from . import ops, registry  # noqa: E402
from .am_softmax import AMSoftmaxLoss  # noqa: E402
from .base import AbsASVSpoofLoss  # noqa: E402
from .binary_cross_entropy import BinaryLoss  # noqa: E402
from .oc_softmax import OCSoftmaxLoss  # noqa: E402
from .samo import MultiCenterOCSoftmaxLoss  # noqa: E402
from .aam_softmax import AAMSoftmaxLoss  # noqa: E402
from .p2sgrad import P2SGradLoss  # noqa: E402


def build_info() -> dict:
    """How the compiled library was built: torch version, CUDA or not, CUDA architectures."""
    return dict(_C.build_info())


__all__ = ["AbsASVSpoofLoss", "AMSoftmaxLoss", "BinaryLoss", "OCSoftmaxLoss", "build_info", "ops", "registry"]
__all__ += ["AAMSoftmaxLoss", "MultiCenterOCSoftmaxLoss", "P2SGradLoss"]
