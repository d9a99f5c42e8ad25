"""Thin wrappers on torch.ops.spoofloss.* and their fake (meta) kernels.

The kernels, their validation and their autograd live in C++ (csrc/); this
module only names the integer codes, drops the auxiliary outputs a caller
does not need, and tells torch.compile the output shapes.
"""

from typing import Optional

import torch
from torch import Tensor

from . import _C  # noqa: F401  (registers torch.ops.spoofloss)

# Epilogue codes of the cosine-margin family (csrc/math.h, enum Epilogue).
AM_SOFTMAX = 0
OC_SOFTMAX = 1
COSINE = 2

_ops = torch.ops.spoofloss


def cosine_margin_loss(
    emb: Tensor,
    centers: Tensor,
    label: Tensor,
    lengths: Optional[Tensor],
    epilogue: int,
    scale: float,
    margin_bonafide: float,
    margin_spoof: float,
    bonafide_label: int,
    reduction: int,
) -> Tensor:
    """The loss of the cosine-margin family (epilogue AM_SOFTMAX or OC_SOFTMAX).

    emb: [B, T, D] or [B, D]; centers: [2, D] (AM) or [1, D] (OC); label: [B] or
    [B, 1]; lengths: [B] frame counts or None; reduction: 0 none, 1 mean, 2 sum.
    """
    return _ops.cosine_margin_loss.default(
        emb, centers, label, lengths, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label, reduction
    )[0]


def cosine_margin_loss_and_score(
    emb: Tensor,
    centers: Tensor,
    label: Tensor,
    lengths: Optional[Tensor],
    epilogue: int,
    scale: float,
    margin_bonafide: float,
    margin_spoof: float,
    bonafide_label: int,
    reduction: int,
) -> tuple[Tensor, Tensor]:
    """The loss and, from the same pass over emb, the score [B] (not differentiable)."""
    loss, score, _ = _ops.cosine_margin_loss.default(
        emb, centers, label, lengths, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label, reduction
    )
    return loss, score


def cosine_score(emb: Tensor, centers: Tensor, lengths: Optional[Tensor], center_index: int) -> Tensor:
    """Cosine of the masked time-mean of emb with centers[center_index], shape [B]."""
    return _ops.cosine_score.default(emb, centers, lengths, center_index)[0]


def binary_cross_entropy(pred: Tensor, label: Tensor, bonafide_label: int, reduction: int) -> Tensor:
    """BCE with logits over the flattened pred; [N] for reduction none, else a scalar."""
    return _ops.binary_cross_entropy.default(pred, label, bonafide_label, reduction)


# --- fake kernels: shapes and dtypes only, for torch.compile and opcheck ---


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_emb(emb: Tensor, centers: Tensor) -> None:
    torch._check(emb.dim() in (2, 3), lambda: f"emb must have shape [B, T, D] or [B, D], got {tuple(emb.shape)}")
    torch._check(centers.dim() == 2, lambda: f"centers must have shape [C, D], got {tuple(centers.shape)}")
    torch._check(
        centers.shape[1] == emb.shape[-1],
        lambda: f"centers have enc_dim {centers.shape[1]} but emb has D = {emb.shape[-1]}",
    )


@torch.library.register_fake("spoofloss::cosine_margin_loss")
def _cosine_margin_loss_fake(
    emb, centers, label, lengths, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label, reduction
):
    _check_emb(emb, centers)
    torch._check(label.shape[0] == emb.shape[0], lambda: "label and emb have different batch sizes")
    batch, dim = emb.shape[0], emb.shape[-1]
    dtype = _compute_dtype(emb.dtype)
    loss = emb.new_empty((batch,) if reduction == 0 else (), dtype=dtype)
    return loss, emb.new_empty((batch,), dtype=dtype), emb.new_empty((batch, dim), dtype=dtype)


@torch.library.register_fake("spoofloss::cosine_score")
def _cosine_score_fake(emb, centers, lengths, center_index):
    _check_emb(emb, centers)
    batch, dim = emb.shape[0], emb.shape[-1]
    dtype = _compute_dtype(emb.dtype)
    return emb.new_empty((batch,), dtype=dtype), emb.new_empty((batch, dim), dtype=dtype)


@torch.library.register_fake("spoofloss::_cosine_margin_loss_backward")
def _cosine_margin_loss_backward_fake(
    grad_loss, pooled, centers, label, lengths, emb_sizes, emb_dtype, epilogue, scale, margin_bonafide,
    margin_spoof, bonafide_label, reduction,
):
    return pooled.new_empty(emb_sizes, dtype=emb_dtype), torch.empty_like(centers, memory_format=torch.contiguous_format)


@torch.library.register_fake("spoofloss::binary_cross_entropy")
def _binary_cross_entropy_fake(pred, label, bonafide_label, reduction):
    torch._check(label.numel() == pred.numel(), lambda: "label and pred have different numbers of elements")
    shape = (pred.numel(),) if reduction == 0 else ()
    return pred.new_empty(shape, dtype=_compute_dtype(pred.dtype))


@torch.library.register_fake("spoofloss::_binary_cross_entropy_backward")
def _binary_cross_entropy_backward_fake(grad_loss, pred, label, bonafide_label, reduction):
    return torch.empty_like(pred, memory_format=torch.contiguous_format)
