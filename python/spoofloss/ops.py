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
    """The loss and, from the same pass over emb, the score [B] (both differentiable)."""
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


# --- fake kernels: shapes, dtypes and devices, for torch.compile, opcheck and meta tensors ---
#
# A fake kernel also runs whenever any argument is on the meta device (the Meta
# dispatch key wins over CPU and CUDA), for instance with a module built under
# torch.device("meta") and never materialised, called on real inputs. So each
# one refuses arguments on different devices with the C++ ops' message
# (csrc/common.cpp, check_same_device) instead of returning uninitialised memory,
# and allocates its outputs on the device the real kernel would use.


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_same_device(owner: Tensor, owner_name: str, t: Optional[Tensor], name: str) -> None:
    if t is not None and t.device != owner.device:
        raise RuntimeError(
            f"spoofloss: {name} is on {t.device} but {owner_name} is on {owner.device}; move them to one device"
        )


def _check_enums(epilogue: int, reduction: int) -> None:
    torch._check_value(epilogue in (AM_SOFTMAX, OC_SOFTMAX, COSINE),
                       lambda: f"epilogue must be 0 (AM-softmax), 1 (OC-softmax) or 2 (cosine score), got {epilogue}")
    torch._check_value(reduction in (0, 1, 2), lambda: f"reduction must be 0 (none), 1 (mean) or 2 (sum), got {reduction}")


def _check_label(label: Tensor, batch, owner: Tensor, owner_name: str) -> None:
    _check_same_device(owner, owner_name, label, "label")
    torch._check_value(label.dim() == 1 or (label.dim() == 2 and label.shape[1] == 1),
                       lambda: f"label must have shape [B] or [B, 1], got shape {list(label.shape)}")
    torch._check_value(label.shape[0] == batch,
                       lambda: f"label has batch size {label.shape[0]} but {owner_name} has batch size {batch}")


def _check_lengths(lengths: Optional[Tensor], batch, owner: Tensor, owner_name: str) -> None:
    if lengths is None:
        return
    _check_same_device(owner, owner_name, lengths, "lengths")
    torch._check_value(not lengths.is_floating_point() and not lengths.is_complex() and lengths.dtype != torch.bool,
                       lambda: f"lengths must be an integer tensor of frame counts, got dtype {lengths.dtype}")
    torch._check_value(lengths.dim() == 1 and lengths.shape[0] == batch,
                       lambda: f"lengths must have shape [{batch}] (one frame count per utterance), "
                               f"got shape {list(lengths.shape)}")


def _check_sizes(sizes, name: str) -> None:
    """B, T and D of emb (or of emb_sizes) are positive, as csrc/common.cpp checks."""
    torch._check_value(len(sizes) in (2, 3),
                       lambda: f"{name} must describe a [B, T, D] or [B, D] emb, got {list(sizes)}")
    torch._check_value(sizes[0] > 0, lambda: f"{name} {list(sizes)} has an empty batch (B = {sizes[0]})")
    torch._check_value(sizes[-1] > 0, lambda: f"{name} {list(sizes)} has D = {sizes[-1]}; D must be positive")
    if len(sizes) == 3:
        torch._check_value(sizes[1] > 0, lambda: f"{name} {list(sizes)} has T = {sizes[1]} frames; T must be positive")


def _check_emb(emb: Tensor, centers: Tensor) -> None:
    _check_sizes(emb.shape, "emb")
    _check_same_device(emb, "emb", centers, "centers")
    torch._check_value(centers.dim() == 2, lambda: f"centers must have shape [C, D], got {list(centers.shape)}")
    torch._check_value(
        centers.shape[1] == emb.shape[-1],
        lambda: f"centers have enc_dim {centers.shape[1]} but emb has D = {emb.shape[-1]}",
    )


@torch.library.register_fake("spoofloss::cosine_margin_loss")
def _cosine_margin_loss_fake(
    emb, centers, label, lengths, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label, reduction
):
    _check_enums(epilogue, reduction)
    _check_emb(emb, centers)
    batch, dim = emb.shape[0], emb.shape[-1]
    _check_label(label, batch, emb, "emb")
    _check_lengths(lengths, batch, emb, "emb")
    dtype = _compute_dtype(emb.dtype)
    loss = emb.new_empty((batch,) if reduction == 0 else (), dtype=dtype)
    return loss, emb.new_empty((batch,), dtype=dtype), emb.new_empty((batch, dim), dtype=dtype)


@torch.library.register_fake("spoofloss::cosine_score")
def _cosine_score_fake(emb, centers, lengths, center_index):
    _check_emb(emb, centers)
    batch, dim = emb.shape[0], emb.shape[-1]
    _check_lengths(lengths, batch, emb, "emb")
    dtype = _compute_dtype(emb.dtype)
    return emb.new_empty((batch,), dtype=dtype), emb.new_empty((batch, dim), dtype=dtype)


@torch.library.register_fake("spoofloss::_cosine_margin_loss_backward")
def _cosine_margin_loss_backward_fake(
    grad_loss, pooled, centers, label, lengths, emb_sizes, emb_dtype, epilogue, scale, margin_bonafide,
    margin_spoof, bonafide_label, reduction,
):
    _check_enums(epilogue, reduction)
    _check_sizes(emb_sizes, "emb_sizes")
    torch._check_value(pooled.dim() == 2 and pooled.shape[0] == emb_sizes[0] and pooled.shape[1] == emb_sizes[-1],
                       lambda: f"pooled must have shape [{emb_sizes[0]}, {emb_sizes[-1]}], got {list(pooled.shape)}")
    _check_same_device(pooled, "pooled", grad_loss, "grad_loss")
    _check_same_device(pooled, "pooled", centers, "centers")
    if label is not None:
        _check_label(label, emb_sizes[0], pooled, "pooled")
    _check_lengths(lengths, emb_sizes[0], pooled, "pooled")
    return (pooled.new_empty(emb_sizes, dtype=emb_dtype),
            torch.empty_like(centers, memory_format=torch.contiguous_format))


@torch.library.register_fake("spoofloss::binary_cross_entropy")
def _binary_cross_entropy_fake(pred, label, bonafide_label, reduction):
    _check_enums(0, reduction)
    torch._check_value(pred.numel() > 0, lambda: f"pred is empty (shape {list(pred.shape)})")
    _check_same_device(pred, "pred", label, "label")
    torch._check_value(label.numel() == pred.numel(), lambda: "label and pred have different numbers of elements")
    shape = (pred.numel(),) if reduction == 0 else ()
    return pred.new_empty(shape, dtype=_compute_dtype(pred.dtype))


@torch.library.register_fake("spoofloss::_binary_cross_entropy_backward")
def _binary_cross_entropy_backward_fake(grad_loss, pred, label, bonafide_label, reduction):
    _check_enums(0, reduction)
    _check_same_device(pred, "pred", label, "label")
    _check_same_device(pred, "pred", grad_loss, "grad_loss")
    torch._check_value(label.numel() == pred.numel(), lambda: "label and pred have different numbers of elements")
    return torch.empty_like(pred, memory_format=torch.contiguous_format)


# --- differentiable backward composites, for a backward with create_graph=True ---
#
# csrc/autograd.cpp runs the fused backward ops on the first-order path. When a
# backward records a graph (double backward, gradient penalties) it calls these
# instead: the first-order gradients as torch ops that autograd can
# differentiate again, taken from spoofloss.reference (differentiated by
# autograd), so each loss's math lives in one Python place. Not on any hot path.

_REDUCTION_NAMES = ("none", "mean", "sum")
_composite_lib = torch.library.Library("spoofloss", "IMPL")  # kept alive: it holds the registrations


def _as_variable(t: Tensor) -> Tensor:
    """t itself where it takes part in a graph, else a leaf copy to differentiate against."""
    return t if t.requires_grad else t.detach().requires_grad_()


def _margin_loss(label, pooled, centers, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label, reduction):
    from . import reference

    red = _REDUCTION_NAMES[reduction]
    if epilogue == OC_SOFTMAX:
        return reference.oc_softmax_loss(label, pooled, centers, None, m_real=margin_bonafide, m_fake=margin_spoof,
                                         alpha=scale, bonafide_label=bonafide_label, reduction=red)
    if margin_bonafide == margin_spoof:
        return reference.am_softmax_loss(label, pooled, centers, None, s=scale, m=margin_bonafide, reduction=red)
    # the op's AM takes the margin of the utterance's class (bona fide or spoof)
    per_bonafide = reference.am_softmax_loss(label, pooled, centers, None, s=scale, m=margin_bonafide, reduction="none")
    per_spoof = reference.am_softmax_loss(label, pooled, centers, None, s=scale, m=margin_spoof, reduction="none")
    per = torch.where(label.reshape(-1) == bonafide_label, per_bonafide, per_spoof)
    return {"none": per, "mean": per.mean(), "sum": per.sum()}[red]


def _cosine_margin_loss_backward_composite(
    grad_loss, grad_score, pooled, centers, label, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label,
    reduction,
):
    from . import reference

    x, c = _as_variable(pooled), _as_variable(centers)
    outputs, upstream = [], []
    with torch.enable_grad():
        c_acc = c.to(x.dtype)
        if grad_loss is not None:
            if epilogue == COSINE:  # the score op: bonafide_label carries the centre index
                outputs.append(reference.am_softmax_score(x, c_acc, None, bonafide_label=bonafide_label))
            else:
                outputs.append(_margin_loss(label, x, c_acc, epilogue, scale, margin_bonafide, margin_spoof,
                                            bonafide_label, reduction))
            upstream.append(grad_loss)
        if grad_score is not None:  # the loss op's score: the cosine to the bona fide centre
            outputs.append(reference.am_softmax_score(x, c_acc, None,
                                                      bonafide_label=bonafide_label if epilogue == AM_SOFTMAX else 0))
            upstream.append(grad_score)
        grad_pooled, grad_centers = torch.autograd.grad(outputs, (x, c), upstream, create_graph=True)
    return grad_pooled, grad_centers


def _binary_cross_entropy_backward_composite(grad_loss, pred, label, bonafide_label, reduction):
    from . import reference

    x = _as_variable(pred)
    inputs = (x, label) if label.requires_grad else (x,)
    with torch.enable_grad():
        loss = reference.binary_loss(x.to(_compute_dtype(x.dtype)), label, bonafide_label=bonafide_label,
                                     reduction=_REDUCTION_NAMES[reduction])
        grads = torch.autograd.grad(loss, inputs, grad_loss, create_graph=True)
    return grads[0], grads[1] if label.requires_grad else label.new_empty(0)


_composite_lib.impl("_cosine_margin_loss_backward_composite", _cosine_margin_loss_backward_composite,
                    "CompositeImplicitAutograd")
_composite_lib.impl("_binary_cross_entropy_backward_composite", _binary_cross_entropy_backward_composite,
                    "CompositeImplicitAutograd")
