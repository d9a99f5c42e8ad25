"""The ops' arguments, taken from the registered losses, and valid argument
sets of every op (so a test can spoil one argument at a time), with the error
matcher.

``CosineOp`` holds what torch.ops.spoofloss.cosine_margin_loss needs beyond the
tensors, read from a registered module (its row of the library's loss table,
its scale and margins, its score rule), so op-level tests iterate the
registered cosine losses as the module-level ones do; ``reference_loss`` and
``reference_score`` are the op's references (spoofloss.reference's op-level
forms, as the ops' double backward uses them).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

import pytest
import torch

import spoofloss  # noqa: F401  (registers torch.ops.spoofloss)
from spoofloss import ops, reference
from spoofloss.registry import LOSSES

from .inputs import make_labels, make_lengths, randn
from .losses import build, centres_of, names

NONE, MEAN, SUM = ops.REDUCTIONS["none"], ops.REDUCTIONS["mean"], ops.REDUCTIONS["sum"]
RED_NAMES = {code: name for name, code in ops.REDUCTIONS.items()}
SCORE_RULE_NAMES = {code: name for name, code in ops.SCORE_RULES.items()}
CENTER_COSINE = ops.SCORE_RULES["center_cosine"]
SCORE = "score"  # stands for the score op (no loss) where a test takes a loss name


@dataclasses.dataclass(frozen=True)
class CosineOp:
    """The non-tensor arguments of cosine_margin_loss for one registered configuration."""

    name: str  # the registry's loss name
    variant: Optional[str]
    loss_name: str  # its row of the library's table
    num_centers: int
    label_classes: int
    scale: float
    margin_bonafide: float
    margin_spoof: float
    bonafide_label: int
    score_rule: int
    score_center: int

    @property
    def code(self) -> int:
        return ops.loss_code(self.loss_name)

    @classmethod
    def of(cls, name: str, variant: Optional[str] = None, dim: int = 6) -> "CosineOp":
        module = build(name, variant, enc_dim=dim)[0]
        scale, margin_bonafide, margin_spoof = module._margins()
        score_rule, score_center = module._score_rule()
        return cls(name, variant, module.loss_name, centres_of(module).shape[0],
                   LOSSES[name].label_classes(module), scale, margin_bonafide, margin_spoof,
                   module.bonafide_label, score_rule, score_center)

    def replace(self, **changes) -> "CosineOp":
        return dataclasses.replace(self, **changes)

    def non_default(self) -> "CosineOp":
        """Another scale and distinct margins (reaching the right utterances is then visible)."""
        return dataclasses.replace(self, scale=0.625 * self.scale, margin_bonafide=0.7 * self.margin_bonafide,
                                   margin_spoof=0.25 * self.margin_spoof)

    def extra_inputs(self, batch: int, device="cpu") -> dict:
        """The op's further tensor arguments for this loss (e.g. center_index), from spec.make_inputs."""
        spec = LOSSES[self.name]
        if spec.make_inputs is None:
            return {"center_index": None}
        module = build(self.name, self.variant, enc_dim=4)[0]
        extra = spec.make_inputs(module, batch, None)
        return {"center_index": extra["center_index"].to(device) if "center_index" in extra else None}

    def margins(self) -> tuple:
        """(scale, margin_bonafide, margin_spoof, bonafide_label): the op's arguments in schema order."""
        return self.scale, self.margin_bonafide, self.margin_spoof, self.bonafide_label

    def labels(self, batch: int) -> torch.Tensor:
        return make_labels(batch, self.label_classes)


# gradcheck builds the whole numerical Jacobian, one forward per element of emb
# and of the centres, each forward costing in proportion to the number of
# centres: C^2 in all, a minute per check through the emulated CUDA kernels at
# C = 64. Above this many centres the checks use torch's fast mode (the
# Jacobian projected on random vectors, numerically and analytically): the
# kernels, the epilogue's per-centre loop and the centre gradient are the same
# code at C = 2 or 5, which gets the full Jacobian.
FULL_JACOBIAN_MAX_CENTERS = 8


def gradcheck_fast_mode(num_centers: int) -> bool:
    """Whether a gradcheck over ``num_centers`` centres uses fast mode (above)."""
    return num_centers > FULL_JACOBIAN_MAX_CENTERS


def cosine_ops(variants: bool = True) -> list:
    """pytest params of a CosineOp for every registered cosine loss (and variant)."""
    return [pytest.param(CosineOp.of(name, variant), id=name if variant is None else f"{name}-{variant}")
            for name in names("cosine") for variant in ([None, *LOSSES[name].variants] if variants else [None])]


def first_cosine_op() -> CosineOp:
    """A registered cosine loss, for tests about the ops rather than a loss."""
    return CosineOp.of(names("cosine")[0])


def loss_op(emb, centers, label, lengths, op: CosineOp, reduction, center_index=None):
    """torch.ops.spoofloss.cosine_margin_loss with ``op``'s arguments: (loss, score, pooled)."""
    return torch.ops.spoofloss.cosine_margin_loss(
        emb, centers, label, lengths, center_index, op.code, *op.margins(), op.score_rule, op.score_center, reduction)


def score_op(emb, centers, lengths, center):
    """torch.ops.spoofloss.cosine_score, the cosine to centers[center]: (score, pooled)."""
    return torch.ops.spoofloss.cosine_score(emb, centers, lengths, None, CENTER_COSINE, center, 1.0)


def reference_loss(op: CosineOp, label, emb, centers, lengths, reduction, center_index=None):
    """The float64 reference of cosine_margin_loss's loss for ``op`` (reduction: the op's code)."""
    return reference.cosine_margin_loss(
        op.loss_name, label, emb, centers, lengths, center_index=center_index, scale=op.scale,
        margin_bonafide=op.margin_bonafide, margin_spoof=op.margin_spoof, bonafide_label=op.bonafide_label,
        reduction=RED_NAMES[reduction])


def reference_score(op: CosineOp, emb, centers, lengths, center_index=None):
    """The float64 reference of cosine_margin_loss's score for ``op``."""
    return reference.cosine_score(SCORE_RULE_NAMES[op.score_rule], emb, centers, lengths,
                                  score_center=op.score_center, scale=op.scale, center_index=center_index)


# --------------------------------------------------------------------------- valid argument sets
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
    """The library's device message (csrc/validation.cpp, check_same_device) as a regex."""
    return (rf"spoofloss: {name} is on {re.escape(str(device))}(:0)? but {other_name} is on "
            rf"{re.escape(str(other_device))}(:0)?; move them to one device")


def cosine_loss_args(op: Optional[CosineOp] = None, batch=4, frames=5, dim=6, lengths=True, dtype=torch.float32,
                     device="cpu"):
    """Keyword arguments of torch.ops.spoofloss.cosine_margin_loss, valid (``op``:
    default the first registered cosine loss)."""
    op = op or first_cosine_op()
    return dict(
        emb=randn(batch, frames, dim, dtype=dtype, device=device),
        centers=randn(op.num_centers, dim, device=device),
        label=op.labels(batch).to(device),
        lengths=make_lengths(batch, frames, device=device) if lengths else None,
        **op.extra_inputs(batch, device),
        loss=op.code, scale=op.scale, margin_bonafide=op.margin_bonafide, margin_spoof=op.margin_spoof,
        bonafide_label=op.bonafide_label, score_rule=op.score_rule, score_center=op.score_center, reduction=MEAN,
    )


def cosine_score_args(batch=4, frames=5, dim=6, lengths=True, device="cpu"):
    return dict(
        emb=randn(batch, frames, dim, device=device), centers=randn(2, dim, device=device),
        lengths=make_lengths(batch, frames, device=device) if lengths else None, center_index=None,
        score_rule=CENTER_COSINE, score_center=1, scale=1.0,
    )


def cosine_backward_args(op=None, batch=4, frames=5, dim=6, lengths=True, reduction=MEAN, device="cpu"):
    """Keyword arguments of torch.ops.spoofloss._cosine_margin_loss_backward,
    valid (pooled from a real forward, so the values are meaningful). ``op`` a
    CosineOp (default the first registered cosine loss), or SCORE for the score
    op's backward (no loss: only grad_score, no label)."""
    fwd = cosine_loss_args(None if op == SCORE else op, batch, frames, dim, lengths, device=device)
    fwd["reduction"] = reduction
    grad_loss = grad_score = None
    if op == SCORE:
        _, pooled = torch.ops.spoofloss.cosine_score(fwd["emb"], fwd["centers"], fwd["lengths"], None,
                                                     CENTER_COSINE, 0, 1.0)
        grad_score = torch.rand(batch, device=device) + 0.5
        label, bonafide_label, reduction, loss = None, 0, NONE, ops.NO_LOSS
        score_rule, score_center = CENTER_COSINE, 0
    else:
        out, _, pooled = call_op("cosine_margin_loss", fwd)
        grad_loss = torch.rand(out.shape, device=device) + 0.5
        label, bonafide_label, loss = fwd["label"], fwd["bonafide_label"], fwd["loss"]
        score_rule, score_center = fwd["score_rule"], fwd["score_center"]
    return dict(
        grad_loss=grad_loss, grad_score=grad_score, pooled=pooled, centers=fwd["centers"], label=label,
        lengths=fwd["lengths"], center_index=fwd["center_index"], emb_sizes=list(fwd["emb"].shape),
        emb_dtype=fwd["emb"].dtype, loss=loss, scale=fwd["scale"], margin_bonafide=fwd["margin_bonafide"],
        margin_spoof=fwd["margin_spoof"], bonafide_label=bonafide_label, score_rule=score_rule,
        score_center=score_center, reduction=reduction,
    )


def binary_args(numel=6, soft=False, device="cpu"):
    label = torch.rand(numel) if soft else make_labels(numel)
    return dict(pred=randn(numel, 1, device=device), label=label.reshape(numel, 1).to(device), bonafide_label=1,
                reduction=MEAN, class_weight=None, num_logits=1)


def binary_backward_args(numel=6, reduction=MEAN, device="cpu"):
    args = binary_args(numel, device=device)
    args["reduction"] = reduction
    grad = torch.rand(numel if reduction == NONE else (), device=device) + 0.5
    return dict(grad_loss=grad, total_weight=None, **args)


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
