"""Which devices the suite runs on, and which kernels run there."""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
NO_CUDA_REASON = "no CUDA GPU on this machine"
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)


def _emulated_cuda() -> bool:
    try:
        import spoofloss
    except ImportError:  # tests/test_import_errors.py covers a missing library
        return False
    return bool(spoofloss.build_info().get("cuda_emulation", False))


# The emulated-CUDA build (SPOOFLOSS_CUDA_EMULATION=1) runs the CUDA kernels for
# CPU tensors: tests of backend-specific behaviour expect CUDA's there.
EMULATED_CUDA = _emulated_cuda()


def runs_cuda_kernels(device: str) -> bool:
    """Whether the ops run their CUDA kernels on ``device``: on a GPU, or on the
    CPU of the emulated build. (The CPU kernels raise on a bad label or length;
    the CUDA kernels, which cannot without a host synchronisation, give NaN.)"""
    return device == "cuda" or EMULATED_CUDA


def cuda_only(test):
    """Decorator: a CUDA-only test (marked ``cuda``; skipped without a GPU)."""
    return pytest.mark.cuda(requires_cuda(test))


def devices() -> list:
    """["cpu", "cuda"] as pytest params; cuda is skipped without a GPU."""
    return [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, requires_cuda])]
