"""Random inputs of the tests. Every draw happens on the CPU, then moves, so a
test sees the same data on every device; nothing is ever all zeros."""

from __future__ import annotations

from typing import Optional

import torch


def make_lengths(batch: int, frames: int, dtype: torch.dtype = torch.int64, device="cpu") -> torch.Tensor:
    """Random lengths in [1, T], one == T and (B >= 2) one small, at random places."""
    lengths = torch.randint(1, frames + 1, (batch,))
    order = torch.randperm(batch)
    lengths[order[0]] = frames
    if batch >= 2:
        lengths[order[1]] = min(frames, 1 + int(torch.randint(0, 2, ()).item()))
    return lengths.to(device=device, dtype=dtype)


def make_labels(batch: int, classes: int = 2) -> torch.Tensor:
    """Random class indices [B] (int64) in [0, classes), every class present
    where B allows (both of 0/1 for B >= 2), at random places."""
    labels = torch.randint(0, classes, (batch,))
    present = min(batch, classes)
    labels[torch.randperm(batch)[:present]] = torch.randperm(classes)[:present]
    return labels


def label_as(labels: torch.Tensor, shape: str = "B", dtype: torch.dtype = torch.int64, device="cpu") -> torch.Tensor:
    """Class labels as shape "B" ([B]) or "B1" ([B, 1]) of ``dtype``."""
    out = labels.to(dtype)
    if shape == "B1":
        out = out.unsqueeze(1)
    return out.to(device)


def randn(*shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Standard normal in float64, then rounded to ``dtype`` (never all zeros)."""
    return torch.randn(*shape, dtype=torch.float64).to(dtype).to(device)


def make_emb(batch: int, frames: Optional[int], dim: int, dtype=torch.float32, device="cpu",
             layout: str = "contiguous") -> torch.Tensor:
    """emb [B, T, D] (or [B, D] when frames is None) requiring grad, in a layout:
    contiguous, "transposed" (a [T, B, D] tensor transposed), "dslice" (every
    other feature of a [B, T, 2D] tensor) or "expanded" (stride 0 over time).
    A view's gradient reaches emb itself (autograd.grad with respect to it)."""
    if frames is None:
        return randn(batch, dim, dtype=dtype, device=device).requires_grad_()
    if layout == "contiguous":
        return randn(batch, frames, dim, dtype=dtype, device=device).requires_grad_()
    if layout == "transposed":
        base = randn(frames, batch, dim, dtype=dtype, device=device).requires_grad_()
        emb = base.transpose(0, 1)
    elif layout == "dslice":
        base = randn(batch, frames, 2 * dim, dtype=dtype, device=device).requires_grad_()
        emb = base[..., 1::2]
    elif layout == "expanded":
        base = randn(batch, 1, dim, dtype=dtype, device=device).requires_grad_()
        emb = base.expand(batch, frames, dim)
    else:
        raise AssertionError(f"unknown layout {layout!r}")
    assert not emb.is_contiguous()
    return emb


def random_upstream(out: torch.Tensor) -> torch.Tensor:
    """A random upstream gradient for ``out`` in [0.5, 1.5): never zero, never
    all ones, so a backward that drops or misplaces it is seen."""
    return (torch.rand(out.shape, dtype=torch.float64) + 0.5).to(device=out.device, dtype=out.dtype)


def f64(t: Optional[torch.Tensor], grad: bool = True) -> Optional[torch.Tensor]:
    """A detached float64 CPU copy (requiring grad) of an already rounded tensor."""
    if t is None:
        return None
    out = t.detach().to("cpu", torch.float64)
    return out.requires_grad_(grad)


def cpu(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().cpu()
