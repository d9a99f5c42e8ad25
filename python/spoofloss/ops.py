"""Thin wrappers on torch.ops.spoofloss.* and their fake (meta) kernels.

The kernels, their validation and their autograd live in C++ (csrc/); this
module names the integer codes (read from the library's own loss table,
csrc/cosine_losses.h, never copied), drops the auxiliary outputs a caller does
not need, and tells torch.compile the output shapes.
"""

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _C  # noqa: F401  (registers torch.ops.spoofloss)

# The cosine-margin losses of the library: name -> row of its table
# (code, min_centers, max_centers, label_classes, default_score).
COSINE_LOSSES = {row["name"]: row for row in _C.cosine_loss_table()}
# Score rules: name -> code ("center_cosine", "nearest_center", "log_posterior", "utterance_center").
SCORE_RULES = dict(_C.score_rules())
NO_LOSS = -1  # the score op's loss code
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
_REDUCTION_NAMES = {code: name for name, code in REDUCTIONS.items()}
_LOSS_NAMES = {row["code"]: name for name, row in COSINE_LOSSES.items()}
_SCORE_RULE_NAMES = {code: name for name, code in SCORE_RULES.items()}

_ops = torch.ops.spoofloss


def loss_code(name: str) -> int:
    """The library's code of a cosine-margin loss, or a ValueError listing the known ones."""
    try:
        return COSINE_LOSSES[name]["code"]
    except KeyError:
        raise ValueError(f"unknown cosine-margin loss {name!r}; the library has {sorted(COSINE_LOSSES)}") from None


def score_rule_code(name: str) -> int:
    """The library's code of a score rule, or a ValueError listing the known ones."""
    try:
        return SCORE_RULES[name]
    except KeyError:
        raise ValueError(f"unknown score rule {name!r}; the library has {sorted(SCORE_RULES)}") from None


def _default_score_center(loss: int, bonafide_label: int) -> int:
    row = COSINE_LOSSES.get(_LOSS_NAMES.get(loss))
    return bonafide_label if row is not None and row["label_classes"] == "one_per_center" else 0


def cosine_margin_loss_and_score(
    emb: Tensor,
    centers: Tensor,
    label: Tensor,
    lengths: Optional[Tensor],
    loss: int,
    scale: float,
    margin_bonafide: float,
    margin_spoof: float,
    bonafide_label: int,
    reduction: int,
    score_rule: int = 0,
    score_center: Optional[int] = None,
    center_index: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """A loss of the cosine-margin family and, from the same pass over emb, the
    score [B]; both differentiable.

    emb: [B, T, D] or [B, D]; centers: [C, D]; label: [B] or [B, 1] class
    indices; lengths: [B] frame counts or None; loss: loss_code(name);
    reduction: 0 none, 1 mean, 2 sum; score_rule: score_rule_code(name), with
    score_center its centre; center_index: [B] centre per utterance (-1: none)
    or None. score_center defaults to the bona fide class's centre where each
    class has a centre, else centre 0.
    """
    if score_center is None:
        score_center = _default_score_center(loss, bonafide_label)
    out = _ops.cosine_margin_loss.default(
        emb, centers, label, lengths, center_index, loss, scale, margin_bonafide, margin_spoof, bonafide_label,
        score_rule, score_center, reduction)
    return out[0], out[1]


def cosine_margin_loss(
    emb: Tensor,
    centers: Tensor,
    label: Tensor,
    lengths: Optional[Tensor],
    loss: int,
    scale: float,
    margin_bonafide: float,
    margin_spoof: float,
    bonafide_label: int,
    reduction: int,
    score_rule: int = 0,
    score_center: Optional[int] = None,
    center_index: Optional[Tensor] = None,
) -> Tensor:
    """The loss of cosine_margin_loss_and_score alone."""
    if score_center is None:
        score_center = _default_score_center(loss, bonafide_label)
    return _ops.cosine_margin_loss.default(
        emb, centers, label, lengths, center_index, loss, scale, margin_bonafide, margin_spoof, bonafide_label,
        score_rule, score_center, reduction)[0]


def cosine_score(
    emb: Tensor,
    centers: Tensor,
    lengths: Optional[Tensor],
    score_center: int,
    score_rule: int = 0,
    scale: float = 1.0,
    center_index: Optional[Tensor] = None,
) -> Tensor:
    """The score [B] of the masked time-mean of emb: by default its cosine with
    centers[score_center]; scale serves the log-posterior rule."""
    return _ops.cosine_score.default(emb, centers, lengths, center_index, score_rule, score_center, scale)[0]


def binary_cross_entropy(
    pred: Tensor,
    label: Tensor,
    bonafide_label: int,
    reduction: int,
    class_weight: Optional[Sequence[float]] = None,
    num_logits: int = 1,
) -> Tensor:
    """The binary loss over N labels; [N] for reduction none, else a scalar.

    num_logits 1: BCE with logits over the flattened pred (one logit per
    label, bona fide against spoof). 2: pred [N, 2] holds the logits of label 0
    and label 1, and the loss is torch's cross-entropy over them. label:
    class indices (integer or bool dtype) or the probability of label 1
    (floating dtype). class_weight: the weights of label 0 and label 1, as
    torch's ``weight`` (CrossEntropyLoss: a weighted mean of class indices
    divides by the sum of the targets' weights; BCEWithLogitsLoss and soft
    targets: by N). reduction: 0 none, 1 mean, 2 sum.
    """
    return _ops.binary_cross_entropy.default(pred, label, bonafide_label, reduction, class_weight, num_logits)[0]


# --- fake kernels: shapes, dtypes and devices, for torch.compile, opcheck and meta tensors ---
#
# A fake kernel also runs whenever any argument is on the meta device (the Meta
# dispatch key wins over CPU and CUDA), for instance with a module built under
# torch.device("meta") and never materialised, called on real inputs. So each
# one refuses arguments on different devices with the C++ ops' message
# (csrc/validation.cpp, check_same_device) instead of returning uninitialised memory,
# and allocates its outputs on the device the real kernel would use.


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_same_device(owner: Tensor, owner_name: str, t: Optional[Tensor], name: str) -> None:
    if t is not None and t.device != owner.device:
        raise RuntimeError(
            f"spoofloss: {name} is on {t.device} but {owner_name} is on {owner.device}; move them to one device"
        )


def _check_reduction(reduction: int) -> None:
    torch._check_value(reduction in (0, 1, 2), lambda: f"reduction must be 0 (none), 1 (mean) or 2 (sum), got {reduction}")


def _check_loss(loss: int, has_label: bool) -> None:
    known = ", ".join(f"{code} ({name})" for code, name in sorted(_LOSS_NAMES.items()))
    torch._check_value(loss == NO_LOSS or loss in _LOSS_NAMES, lambda: f"loss must be one of {known}, got {loss}")
    torch._check_value(has_label == (loss != NO_LOSS), lambda: "label is required for the loss" if has_label is False
                       else f"label must be None without a loss (loss = {NO_LOSS}, the score), got a tensor")


def _check_center_index(center_index: Optional[Tensor], batch, owner: Tensor, owner_name: str) -> None:
    if center_index is None:
        return
    _check_same_device(owner, owner_name, center_index, "center_index")
    torch._check_value(center_index.dim() == 1 and center_index.shape[0] == batch,
                       lambda: f"center_index must have shape [{batch}] (one centre index per utterance), "
                               f"got shape {list(center_index.shape)}")


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
    """B, T and D of emb (or of emb_sizes) are positive, as csrc/validation.cpp checks."""
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
    emb, centers, label, lengths, center_index, loss, scale, margin_bonafide, margin_spoof, bonafide_label,
    score_rule, score_center, reduction,
):
    _check_reduction(reduction)
    _check_loss(loss, True)
    _check_emb(emb, centers)
    batch, dim = emb.shape[0], emb.shape[-1]
    _check_label(label, batch, emb, "emb")
    _check_lengths(lengths, batch, emb, "emb")
    _check_center_index(center_index, batch, emb, "emb")
    dtype = _compute_dtype(emb.dtype)
    loss_value = emb.new_empty((batch,) if reduction == 0 else (), dtype=dtype)
    return loss_value, emb.new_empty((batch,), dtype=dtype), emb.new_empty((batch, dim), dtype=dtype)


@torch.library.register_fake("spoofloss::cosine_score")
def _cosine_score_fake(emb, centers, lengths, center_index, score_rule, score_center, scale):
    _check_emb(emb, centers)
    batch, dim = emb.shape[0], emb.shape[-1]
    _check_lengths(lengths, batch, emb, "emb")
    _check_center_index(center_index, batch, emb, "emb")
    dtype = _compute_dtype(emb.dtype)
    return emb.new_empty((batch,), dtype=dtype), emb.new_empty((batch, dim), dtype=dtype)


@torch.library.register_fake("spoofloss::_cosine_margin_loss_backward")
def _cosine_margin_loss_backward_fake(
    grad_loss, grad_score, pooled, centers, label, lengths, center_index, emb_sizes, emb_dtype, loss, scale,
    margin_bonafide, margin_spoof, bonafide_label, score_rule, score_center, reduction,
):
    _check_reduction(reduction)
    _check_loss(loss, label is not None)
    _check_sizes(emb_sizes, "emb_sizes")
    torch._check_value(pooled.dim() == 2 and pooled.shape[0] == emb_sizes[0] and pooled.shape[1] == emb_sizes[-1],
                       lambda: f"pooled must have shape [{emb_sizes[0]}, {emb_sizes[-1]}], got {list(pooled.shape)}")
    torch._check_value(grad_loss is not None or grad_score is not None,
                       lambda: "one of grad_loss and grad_score must be given")
    _check_same_device(pooled, "pooled", grad_loss, "grad_loss")
    _check_same_device(pooled, "pooled", grad_score, "grad_score")
    _check_same_device(pooled, "pooled", centers, "centers")
    if label is not None:
        _check_label(label, emb_sizes[0], pooled, "pooled")
    _check_lengths(lengths, emb_sizes[0], pooled, "pooled")
    _check_center_index(center_index, emb_sizes[0], pooled, "pooled")
    return (pooled.new_empty(emb_sizes, dtype=emb_dtype),
            torch.empty_like(centers, memory_format=torch.contiguous_format))


def _check_binary(pred: Tensor, label: Tensor, bonafide_label: int, reduction: int, class_weight,
                  num_logits: int) -> int:
    """The binary ops' checks (csrc/validation.cpp, check_binary_inputs); returns N."""
    _check_reduction(reduction)
    torch._check_value(num_logits in (1, 2),
                       lambda: f"num_logits must be 1 (one logit per label) or 2 (the logits of label 0 and label 1 "
                               f"per label), got {num_logits}")
    torch._check_value(pred.numel() > 0, lambda: f"pred is empty (shape {list(pred.shape)})")
    if num_logits == 2:
        torch._check_value(pred.dim() == 2 and pred.shape[1] == 2,
                           lambda: f"pred must have shape [B, 2] (the logits of label 0 and label 1) with "
                                   f"num_logits = 2, got shape {list(pred.shape)}")
    _check_same_device(pred, "pred", label, "label")
    labels = pred.numel() // num_logits
    torch._check_value(label.numel() == labels,
                       lambda: f"label has {label.numel()} elements (shape {list(label.shape)}) but pred holds "
                               f"{labels} labels' logits (shape {list(pred.shape)})")
    torch._check_value(bonafide_label in (0, 1), lambda: f"bonafide_label must be 0 or 1, got {bonafide_label}")
    if class_weight is not None:
        torch._check_value(len(class_weight) == 2,
                           lambda: f"class_weight must hold two weights (of label 0 and of label 1), "
                                   f"got {list(class_weight)}")
    return labels


@torch.library.register_fake("spoofloss::binary_cross_entropy")
def _binary_cross_entropy_fake(pred, label, bonafide_label, reduction, class_weight=None, num_logits=1):
    labels = _check_binary(pred, label, bonafide_label, reduction, class_weight, num_logits)
    dtype = _compute_dtype(pred.dtype)
    shape = (labels,) if reduction == 0 else ()
    return pred.new_empty(shape, dtype=dtype), pred.new_empty((), dtype=dtype)


@torch.library.register_fake("spoofloss::_binary_cross_entropy_backward")
def _binary_cross_entropy_backward_fake(grad_loss, pred, label, bonafide_label, reduction, class_weight=None,
                                        num_logits=1, total_weight=None):
    _check_binary(pred, label, bonafide_label, reduction, class_weight, num_logits)
    _check_same_device(pred, "pred", grad_loss, "grad_loss")
    _check_same_device(pred, "pred", total_weight, "total_weight")
    return torch.empty_like(pred, memory_format=torch.contiguous_format)


# --- differentiable backward composites, for a backward with create_graph=True ---
#
# csrc/autograd.cpp runs the fused backward ops on the first-order path. When a
# backward records a graph (double backward, gradient penalties) it calls these
# instead: the first-order gradients as torch ops that autograd can
# differentiate again, taken from spoofloss.reference (differentiated by
# autograd), so each loss's math lives in one Python place. Not on any hot path.

_composite_lib = torch.library.Library("spoofloss", "IMPL")  # kept alive: it holds the registrations


def _as_variable(t: Tensor) -> Tensor:
    """t itself where it takes part in a graph, else a leaf copy to differentiate against."""
    return t if t.requires_grad else t.detach().requires_grad_()


def _cosine_margin_loss_backward_composite(
    grad_loss, grad_score, pooled, centers, label, center_index, loss, scale, margin_bonafide, margin_spoof,
    bonafide_label, score_rule, score_center, reduction,
):
    from . import reference

    x, c = _as_variable(pooled), _as_variable(centers)
    outputs, upstream = [], []
    with torch.enable_grad():
        c_acc = c.to(x.dtype)
        if grad_loss is not None:
            outputs.append(reference.cosine_margin_loss(
                _LOSS_NAMES[loss], label, x, c_acc, None, center_index=center_index, scale=scale,
                margin_bonafide=margin_bonafide, margin_spoof=margin_spoof, bonafide_label=bonafide_label,
                reduction=_REDUCTION_NAMES[reduction]))
            upstream.append(grad_loss)
        if grad_score is not None:
            outputs.append(reference.cosine_score(
                _SCORE_RULE_NAMES[score_rule], x, c_acc, None, score_center=score_center, scale=scale,
                center_index=center_index))
            upstream.append(grad_score)
        grad_pooled, grad_centers = torch.autograd.grad(outputs, (x, c), upstream, create_graph=True)
    return grad_pooled, grad_centers


def _binary_cross_entropy_backward_composite(grad_loss, pred, label, bonafide_label, reduction, class_weight=None,
                                             num_logits=1):
    from . import reference

    x = _as_variable(pred)
    inputs = (x, label) if label.requires_grad else (x,)
    with torch.enable_grad():
        loss = reference.binary_loss(x.to(_compute_dtype(x.dtype)), label, bonafide_label=bonafide_label,
                                     reduction=_REDUCTION_NAMES[reduction], class_weight=class_weight,
                                     num_logits=num_logits)
        grads = torch.autograd.grad(loss, inputs, grad_loss, create_graph=True)
    return grads[0], grads[1] if label.requires_grad else label.new_empty(0)


_composite_lib.impl("_cosine_margin_loss_backward_composite", _cosine_margin_loss_backward_composite,
                    "CompositeImplicitAutograd")
_composite_lib.impl("_binary_cross_entropy_backward_composite", _binary_cross_entropy_backward_composite,
                    "CompositeImplicitAutograd")
