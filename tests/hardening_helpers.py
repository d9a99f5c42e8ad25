"""Helpers shared by the hardening tests (devices, backward-op validation,
double backward, accuracy, properties): valid argument sets for every op, so
that a test can spoil one argument at a time, and the error matcher."""

from __future__ import annotations

import re

import pytest
import torch

import spoofloss  # noqa: F401  (registers torch.ops.spoofloss)
from spoofloss import ops

from conftest import make_labels, make_lengths, randn

# Loss codes from the library's table; COSINE stands for the score op (no loss).
AM, OC, COSINE = ops.loss_code("am_softmax"), ops.loss_code("oc_softmax"), ops.NO_LOSS
NONE, MEAN, SUM = 0, 1, 2
RED_NAMES = {NONE: "none", MEAN: "mean", SUM: "sum"}


def raises_naming(argument, *values, error=(ValueError, RuntimeError)):
    """pytest.raises whose message matches ``argument`` (a regex) and shows
    each of ``values``: a number as a whole number ("7" matches "7", "[5, 7]",
    not "17"), a string as a regex of its own; in any order."""
    patterns = [argument] + [
        v if isinstance(v, str) else rf"(?<![\w.]){re.escape(str(v))}(?![\w])" for v in values
    ]
    regex = "".join(f"(?=[\\s\\S]*?(?:{p}))" for p in patterns)
    return pytest.raises(error, match=regex)


def device_message(name, device, other_name, other_device):
    """The library's device message (csrc/common.cpp, check_same_device) as a regex."""
    return (rf"spoofloss: {name} is on {re.escape(str(device))}(:0)? but {other_name} is on "
            rf"{re.escape(str(other_device))}(:0)?; move them to one device")


def cosine_loss_args(epilogue=AM, batch=4, frames=5, dim=6, lengths=True, dtype=torch.float32, device="cpu"):
    """Keyword arguments of torch.ops.spoofloss.cosine_margin_loss, valid."""
    return dict(
        emb=randn(batch, frames, dim, dtype=dtype, device=device),
        centers=randn(2 if epilogue == AM else 1, dim, device=device),
        label=make_labels(batch).to(device),
        lengths=make_lengths(batch, frames, device=device) if lengths else None,
        center_index=None,
        loss=epilogue, scale=20.0, margin_bonafide=0.5, margin_spoof=0.2 if epilogue == OC else 0.5,
        bonafide_label=1, score_rule=0, score_center=1 if epilogue == AM else 0, reduction=MEAN,
    )


def cosine_score_args(batch=4, frames=5, dim=6, lengths=True, device="cpu"):
    return dict(
        emb=randn(batch, frames, dim, device=device), centers=randn(2, dim, device=device),
        lengths=make_lengths(batch, frames, device=device) if lengths else None, center_index=None,
        score_rule=0, score_center=1, scale=1.0,
    )


def cosine_backward_args(epilogue=AM, batch=4, frames=5, dim=6, lengths=True, reduction=MEAN, device="cpu"):
    """Keyword arguments of torch.ops.spoofloss._cosine_margin_loss_backward,
    valid (pooled from a real forward, so the values are meaningful). For the
    score op (COSINE) the upstream gradient is grad_score, else grad_loss."""
    fwd = cosine_loss_args(AM if epilogue == COSINE else epilogue, batch, frames, dim, lengths, device=device)
    fwd["reduction"] = reduction
    grad_loss = grad_score = None
    if epilogue == COSINE:
        _, pooled = torch.ops.spoofloss.cosine_score(fwd["emb"], fwd["centers"], fwd["lengths"], None, 0, 1, 1.0)
        grad_score = torch.rand(batch, device=device) + 0.5
        label, bonafide_label, reduction = None, 0, NONE
    else:
        loss, _, pooled = call_op("cosine_margin_loss", fwd)
        grad_loss = torch.rand(loss.shape, device=device) + 0.5
        label, bonafide_label = fwd["label"], fwd["bonafide_label"]
    return dict(
        grad_loss=grad_loss, grad_score=grad_score, pooled=pooled, centers=fwd["centers"], label=label,
        lengths=fwd["lengths"], center_index=None, emb_sizes=list(fwd["emb"].shape), emb_dtype=fwd["emb"].dtype,
        loss=epilogue, scale=fwd["scale"], margin_bonafide=fwd["margin_bonafide"], margin_spoof=fwd["margin_spoof"],
        bonafide_label=bonafide_label, score_rule=0, score_center=fwd["score_center"], reduction=reduction,
    )


def binary_args(numel=6, soft=False, device="cpu"):
    label = torch.rand(numel) if soft else make_labels(numel)
    return dict(pred=randn(numel, 1, device=device), label=label.reshape(numel, 1).to(device), bonafide_label=1,
                reduction=MEAN)


def binary_backward_args(numel=6, reduction=MEAN, device="cpu"):
    args = binary_args(numel, device=device)
    args["reduction"] = reduction
    grad = torch.rand(numel if reduction == NONE else (), device=device) + 0.5
    return dict(grad_loss=grad, **args)


# (op name, argument builder, tensor arguments, the argument the outputs follow)
OPS = {
    "cosine_margin_loss": (cosine_loss_args, ("emb", "centers", "label", "lengths"), "emb"),
    "cosine_score": (cosine_score_args, ("emb", "centers", "lengths"), "emb"),
    "_cosine_margin_loss_backward": (cosine_backward_args, ("grad_loss", "pooled", "centers", "label", "lengths"),
                                     "pooled"),
    "binary_cross_entropy": (binary_args, ("pred", "label"), "pred"),
    "_binary_cross_entropy_backward": (binary_backward_args, ("grad_loss", "pred", "label"), "pred"),
}


def call_op(name, args):
    """torch.ops.spoofloss.<name> with keyword arguments, in schema order."""
    op = getattr(torch.ops.spoofloss, name).default
    return op(*[args[a.name] for a in op._schema.arguments])


def loss_op(emb, centers, label, lengths, loss, scale, margin_bonafide, margin_spoof, bonafide_label, reduction):
    """torch.ops.spoofloss.cosine_margin_loss with the default score (cosine to the
    bona fide class's centre, or to centre 0 for a one-centre loss) and no
    centre indices: (loss, score, pooled)."""
    score_center = bonafide_label if loss == AM else 0
    return torch.ops.spoofloss.cosine_margin_loss(
        emb, centers, label, lengths, None, loss, scale, margin_bonafide, margin_spoof, bonafide_label,
        ops.SCORE_RULES["center_cosine"], score_center, reduction)


def score_op(emb, centers, lengths, center):
    """torch.ops.spoofloss.cosine_score, the cosine to centers[center]: (score, pooled)."""
    return torch.ops.spoofloss.cosine_score(emb, centers, lengths, None, ops.SCORE_RULES["center_cosine"], center, 1.0)
