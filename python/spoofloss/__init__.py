"""spoofloss: fused CPU/CUDA kernels for speech anti-spoofing losses.

Drop-in replacements for ESPnet2's asvspoof losses (see ``spoofloss.espnet``),
with forward, backward and score each fused into single kernels.
"""

__version__ = "0.1.0"


def _load_library():
    import torch

    try:
        from . import _C
    except ImportError as error:
        raise ImportError(
            f"spoofloss: the compiled library spoofloss._C could not be loaded ({error}). It may be missing, or "
            f"built against a torch other than the one imported now ({torch.__version__}). Rebuild it in the "
            "repository with `pip install --no-build-isolation -e .` (see README.md)."
        ) from error
    built_with = _C.build_info()["torch_version"]
    if built_with != torch.__version__:
        raise ImportError(
            f"spoofloss: the compiled library was built against torch {built_with}, but torch {torch.__version__} "
            "is imported; rebuild it with `pip install --no-build-isolation -e .` (see README.md)."
        )
    return _C


_C = _load_library()

from . import ops  # noqa: E402
from .am_softmax import AMSoftmaxLoss  # noqa: E402
from .base import AbsASVSpoofLoss  # noqa: E402
from .binary import BinaryLoss  # noqa: E402
from .oc_softmax import OCSoftmaxLoss  # noqa: E402


def build_info() -> dict:
    """How the compiled library was built: torch version, CUDA or not, CUDA architectures."""
    return dict(_C.build_info())


__all__ = ["AbsASVSpoofLoss", "AMSoftmaxLoss", "BinaryLoss", "OCSoftmaxLoss", "build_info", "ops"]
