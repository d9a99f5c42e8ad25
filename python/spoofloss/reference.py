"""Plain-PyTorch reference implementations of the spoofloss losses.

These are the unfused chains of torch ops that the fused kernels replace: the
yardstick of the test suite (run in float64) and the baseline of the benchmarks
(run in whatever dtype the inputs have). Everything here is differentiable by
autograd and computes in the dtype of its inputs (the promoted dtype of ``emb``
and the centres when they differ); nothing here synchronises with the device.

Math (see the API contract), per utterance ``b``:

* ``pooled_b`` is the mean of ``emb[b, :L_b]`` over time (``L_b = lengths[b]``,
  or all ``T`` frames without ``lengths``); a rank-2 ``emb`` [B, D] is already
  pooled.
* ``cos_{b,k}`` is the cosine between ``pooled_b`` and centre ``k``, both
  normalised with ``F.normalize(..., eps=1e-12)``.
* AM-softmax: cross-entropy of class ``label_b`` over the C logits
  ``s * (cos_k - m * [k == label_b])`` (m of the bona fide class may differ
  from the others'; computed as ``log(1 + sum_{k != y} exp(z_k - z_y))``, no
  cancellation; softplus(z_other - z_y) for two classes); the score is
  ``cos_{b, bonafide_label}``, or the log-posterior of the bona fide class.
* OC-softmax: ``softplus(alpha * (m_real - cos_b))`` for bona fide
  (``label_b == bonafide_label``), ``softplus(alpha * (cos_b - m_fake))`` for
  spoof; the score is ``cos_b``.
* Binary: binary cross-entropy with logits over the flattened ``pred``, with the
  target ``label`` (or ``1 - label`` when ``bonafide_label == 0``); or, with two
  logits per label, torch's cross-entropy over them (column k is label k's);
  either optionally class-weighted (see ``binary_loss``).

Labels may be [B] or [B, 1] of any integer, bool or float dtype holding class
indices (0/1 for two classes).
Only shapes and arguments are checked here (cheap, no host synchronisation);
label and length values are trusted.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import check_bonafide_label, check_class_weight

__all__ = [
    "masked_mean",
    "cosines",
    "cosine_margin_loss",
    "cosine_score",
    "am_softmax_loss",
    "am_softmax_score",
    "oc_softmax_loss",
    "oc_softmax_score",
    "binary_loss",
    "binary_score",
    "espnet_binary_loss",
    "BinaryLoss",
    "AMSoftmaxLoss",
    "OCSoftmaxLoss",
]

NORM_EPS = 1e-12
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _set_hyperparameters(module: nn.Module, weight: float, enc_dim: int, bonafide_label: int, reduction: str,
                         classes: int = 2, **hyper) -> None:
    """What every twin module stores, checked as the fused modules check it."""
    check_bonafide_label(bonafide_label, classes)
    _check_reduction(reduction)
    module.weight = weight
    module.enc_dim = enc_dim
    module.bonafide_label = bonafide_label
    module.reduction = reduction
    for name, value in hyper.items():
        setattr(module, name, value)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    _check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _flat_label(label: torch.Tensor, batch: int) -> torch.Tensor:
    """A [B] or [B, 1] label as a [B] tensor (dtype unchanged)."""
    if label.dim() == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.dim() != 1 or label.shape[0] != batch:
        raise ValueError(
            f"label must have shape [B] or [B, 1] with B={batch} (emb's batch size), "
            f"got shape {tuple(label.shape)}"
        )
    return label


def masked_mean(emb: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of ``emb`` [B, T, D] over the first ``lengths[b]`` frames -> [B, D].

    A rank-2 ``emb`` [B, D] is returned as it is (``lengths`` is then ignored).
    Padded frames get exactly zero gradient, whatever they hold (NaN included).
    """
    if emb.dim() == 2:
        return emb
    if emb.dim() != 3:
        raise ValueError(f"emb must have shape [B, T, D] or [B, D], got shape {tuple(emb.shape)}")
    if lengths is None:
        return emb.mean(dim=1)
    if lengths.dim() != 1 or lengths.shape[0] != emb.shape[0]:
        raise ValueError(
            f"lengths must have shape [B] with B={emb.shape[0]} (emb's batch size), "
            f"got shape {tuple(lengths.shape)}"
        )
    frames = torch.arange(emb.shape[1], device=emb.device)
    valid = frames.unsqueeze(0) < lengths.to(emb.device).unsqueeze(1)  # [B, T]
    # where(), not a multiplication by the mask: NaN * 0 would leak padded NaNs.
    total = torch.where(valid.unsqueeze(-1), emb, emb.new_zeros(())).sum(dim=1)
    return total / lengths.to(device=emb.device, dtype=emb.dtype).unsqueeze(1)


def cosines(emb: torch.Tensor, centers: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """cos [B, C] between the pooled embeddings and the centres [C, D]."""
    if centers.dim() != 2:
        raise ValueError(f"centers must have shape [C, D], got shape {tuple(centers.shape)}")
    if emb.dim() not in (2, 3):
        raise ValueError(f"emb must have shape [B, T, D] or [B, D], got shape {tuple(emb.shape)}")
    if emb.shape[-1] != centers.shape[1]:
        raise ValueError(
            f"emb's feature size D={emb.shape[-1]} does not match the centres' enc_dim={centers.shape[1]}"
        )
    dtype = torch.promote_types(emb.dtype, centers.dtype)
    pooled = masked_mean(emb.to(dtype), lengths)
    xn = F.normalize(pooled, p=2.0, dim=-1, eps=NORM_EPS)
    cn = F.normalize(centers.to(dtype), p=2.0, dim=-1, eps=NORM_EPS)
    return xn @ cn.t()


_cosines = cosines  # the name the test helpers used


def _softplus(x: torch.Tensor) -> torch.Tensor:
    # log(1 + exp(x)) exactly for every x (F.softplus switches to x above its
    # threshold of 20, which is 2e-9 away from the exact value).
    return torch.logaddexp(x, x.new_zeros(()))


def _class_label(label: torch.Tensor, batch: int, device) -> torch.Tensor:
    return _flat_label(label, batch).to(device=device).long()


def margin_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy [B] of class target[b] over logits [B, C], as
    log(1 + sum_{k != y} exp(z_k - z_y)): no cancellation, so a loss of 1e-12
    keeps its digits (F.cross_entropy computes lse(z) - z_y, which loses all
    relative accuracy below ~1e-9 in float64)."""
    z_y = logits.gather(1, target.unsqueeze(1))  # [B, 1]
    gaps = logits - z_y
    others = gaps.masked_fill(F.one_hot(target, logits.shape[1]).bool(), float("-inf"))  # [B, C]
    # The shift cancels out of the value, so it is a constant to autograd: through
    # max/clamp its derivative at an exact tie (two equal logits) would be torch's
    # subgradient convention, which changed between releases (clamp_min's at the
    # bound is 1 in torch 2.13, 0 in 2.14) and in 2.13 zeroed the gradient of a
    # two-class posterior at cos_1 = cos_2.
    largest = others.max(dim=1).values.clamp_min(0).detach()  # [B]
    tail = torch.exp(others - largest.unsqueeze(1)).sum(dim=1)
    return torch.where(largest > 0, largest + torch.log(torch.exp(-largest) + tail), torch.log1p(tail))


def am_softmax_from_cosines(cos: torch.Tensor, target: torch.Tensor, s: float, m_bonafide: float, m_spoof: float,
                            bonafide_label: int) -> torch.Tensor:
    """AM-softmax per utterance [B] from cos [B, C] and class targets [B]."""
    # (the margins as tensors of cos's dtype: where() of two Python floats would round them to float32)
    margin = torch.where(target == bonafide_label, cos.new_tensor(m_bonafide), cos.new_tensor(m_spoof))  # [B]
    logits = s * (cos - margin.unsqueeze(1) * F.one_hot(target, cos.shape[1]).to(cos.dtype))
    if cos.shape[1] == 2:
        # the exact two-class form: softplus(z_other - z_y)
        z_y = logits.gather(1, target.unsqueeze(1)).squeeze(1)
        z_other = logits.gather(1, (1 - target).unsqueeze(1)).squeeze(1)
        return _softplus(z_other - z_y)
    return margin_cross_entropy(logits, target)


def am_softmax_loss(
    label: torch.Tensor,
    emb: torch.Tensor,
    centers: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    s: float = 20.0,
    m: float = 0.5,
    reduction: str = "mean",
    bonafide_label: int = 1,
    m_spoof: Optional[float] = None,
) -> torch.Tensor:
    """AM-softmax (CosFace) loss with C >= 2 centres [C, D], centre k for class k;
    the margin m of the bona fide class, m_spoof (default m) of the others."""
    _check_reduction(reduction)
    if centers.dim() != 2 or centers.shape[0] < 2:
        raise ValueError(f"centers must have shape [C >= 2, enc_dim], got shape {tuple(centers.shape)}")
    cos = cosines(emb, centers, lengths)  # [B, C]
    target = _class_label(label, cos.shape[0], cos.device)
    per = am_softmax_from_cosines(cos, target, s, m, m if m_spoof is None else m_spoof, bonafide_label)
    return _reduce(per, reduction)


def am_softmax_score(
    emb: torch.Tensor,
    centers: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    bonafide_label: int = 1,
) -> torch.Tensor:
    """Cosine [B] between the pooled embedding and the bona fide centre."""
    check_bonafide_label(bonafide_label, centers.shape[0])
    return cosines(emb, centers, lengths)[:, bonafide_label]


def log_posterior_score(
    emb: torch.Tensor,
    centers: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    center: int = 1,
    s: float = 20.0,
) -> torch.Tensor:
    """log softmax_k(s cos_k) at class ``center``, [B]: the margin-free posterior
    of the bona fide class that AIR-ASVspoof and NII's baselines rank by (for two
    classes a function of cos_bona - cos_spoof alone)."""
    cos = cosines(emb, centers, lengths)
    target = torch.full((cos.shape[0],), center, dtype=torch.long, device=cos.device)
    return -margin_cross_entropy(s * cos, target)


def oc_softmax_from_cosines(cos: torch.Tensor, target: torch.Tensor, m_real: float, m_fake: float, alpha: float,
                            bonafide_label: int) -> torch.Tensor:
    """One-class softmax per utterance [B] from cos [B, 1] and class targets [B]."""
    cos = cos[:, 0]
    margin = torch.where(target == bonafide_label, m_real - cos, cos - m_fake)
    return _softplus(alpha * margin)


def oc_softmax_loss(
    label: torch.Tensor,
    emb: torch.Tensor,
    center: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    m_real: float = 0.5,
    m_fake: float = 0.2,
    alpha: float = 20.0,
    bonafide_label: int = 1,
    reduction: str = "mean",
) -> torch.Tensor:
    """One-class softmax loss with one centre [1, D]."""
    _check_reduction(reduction)
    check_bonafide_label(bonafide_label)
    if center.dim() != 2 or center.shape[0] != 1:
        raise ValueError(f"center must have shape [1, enc_dim], got shape {tuple(center.shape)}")
    cos = cosines(emb, center, lengths)  # [B, 1]
    target = _class_label(label, cos.shape[0], cos.device)
    return _reduce(oc_softmax_from_cosines(cos, target, m_real, m_fake, alpha, bonafide_label), reduction)


def oc_softmax_score(
    emb: torch.Tensor,
    center: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Cosine [B] between the pooled embedding and the one centre."""
    return cosines(emb, center, lengths)[:, 0]


# The op-level form of each cosine-margin loss, by its name in the library's
# loss table (csrc/cosine_losses.h): per-utterance losses [B] from
# (cos [B, C], class targets [B], centre indices [B] or None, scale,
# margin_bonafide, margin_spoof, bonafide_label). What
# spoofloss.ops.cosine_margin_loss computes; the double backward of the fused
# ops differentiates these.
OP_FORMS = {
    "am_softmax": lambda cos, target, center_index, scale, mb, ms, bonafide: am_softmax_from_cosines(
        cos, target, scale, mb, ms, bonafide),
    "oc_softmax": lambda cos, target, center_index, scale, mb, ms, bonafide: oc_softmax_from_cosines(
        cos, target, mb, ms, scale, bonafide),
}


def cosine_margin_loss(
    loss: str,
    label: torch.Tensor,
    emb: torch.Tensor,
    centers: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    *,
    center_index: Optional[torch.Tensor] = None,
    scale: float,
    margin_bonafide: float,
    margin_spoof: float,
    bonafide_label: int,
    reduction: str = "mean",
) -> torch.Tensor:
    """The reference of spoofloss.ops.cosine_margin_loss for the loss named ``loss``."""
    cos = cosines(emb, centers, lengths)
    target = _class_label(label, cos.shape[0], cos.device)
    index = None if center_index is None else center_index.to(cos.device).long()
    per = OP_FORMS[loss](cos, target, index, scale, margin_bonafide, margin_spoof, bonafide_label)
    return _reduce(per, reduction)


def cosine_score(
    rule: str,
    emb: torch.Tensor,
    centers: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    *,
    score_center: int = 0,
    scale: float = 1.0,
    center_index: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The reference of the score rules (spoofloss.ops.SCORE_RULES), [B]."""
    cos = cosines(emb, centers, lengths)
    if rule == "center_cosine":
        return cos[:, score_center]
    if rule == "nearest_center":
        return cos.max(dim=1).values
    if rule == "log_posterior":
        target = torch.full((cos.shape[0],), score_center, dtype=torch.long, device=cos.device)
        return -margin_cross_entropy(scale * cos, target)
    if rule == "utterance_center":
        if center_index is None:
            raise ValueError("the utterance_center score needs center_index")
        return own_or_nearest_cosine(cos, center_index.to(cos.device).long())
    raise ValueError(f"unknown score rule {rule!r}")


BINARY_SCORES = ("logit_difference", "bonafide_logit")


def _check_num_logits(num_logits: int) -> None:
    if isinstance(num_logits, bool) or not isinstance(num_logits, int) or num_logits not in (1, 2):
        raise ValueError(f"num_logits must be 1 (one logit per label) or 2 (the logits of label 0 and label 1), "
                         f"got {num_logits!r}")


def binary_loss(
    pred: torch.Tensor,
    label: torch.Tensor,
    bonafide_label: int = 1,
    reduction: str = "mean",
    class_weight=None,
    num_logits: int = 1,
) -> torch.Tensor:
    """The binary loss, restated with torch's own losses.

    ``num_logits=1``: binary cross-entropy with logits over the flattened
    ``pred`` (one logit per label, bona fide against spoof; the target is
    ``label``, or ``1 - label`` when ``bonafide_label == 0``). With
    ``class_weight = (w_0, w_1)`` (the weights of label 0 and label 1) it is
    torch's BCEWithLogitsLoss(weight=w_s, pos_weight=w_b / w_s) for the weights
    w_b of bona fide and w_s of spoof, written out as
    ``w_b t softplus(-x) + w_s (1 - t) softplus(x)`` (which also holds at
    w_s = 0); for class-index labels that is BCEWithLogitsLoss(weight=w[label]).
    As torch's BCE, the mean divides by N.

    ``num_logits=2``: ``pred`` [N, 2] holds the logits of label 0 and label 1,
    and the loss is torch's cross-entropy, ``F.cross_entropy(pred, label,
    weight=class_weight)``: class indices for an integer or bool label, whose
    weighted mean divides by the targets' total weight sum_i w_{label_i}; for a
    floating label p, the class probabilities (1 - p, p), whose mean divides by N
    with the weights inside the sum.
    """
    _check_reduction(reduction)
    check_bonafide_label(bonafide_label)
    _check_num_logits(num_logits)
    weights = check_class_weight(class_weight)
    if num_logits == 2:
        if pred.dim() != 2 or pred.shape[1] != 2:
            raise ValueError(f"pred must have shape [B, 2] with num_logits = 2, got shape {tuple(pred.shape)}")
        if label.numel() != pred.shape[0]:
            raise ValueError(f"label must hold one value per row of pred, got pred shape {tuple(pred.shape)} "
                             f"and label shape {tuple(label.shape)}")
        flat = label.reshape(-1).to(pred.device)
        weight = None if weights is None else pred.new_tensor(weights)
        if flat.is_floating_point():  # probabilities of label 1
            p = flat.to(pred.dtype)
            return F.cross_entropy(pred, torch.stack([1 - p, p], dim=1), weight=weight, reduction=reduction)
        return F.cross_entropy(pred, flat.long(), weight=weight, reduction=reduction)
    if pred.numel() != label.numel():
        raise ValueError(
            f"pred and label must have the same number of elements, got pred shape "
            f"{tuple(pred.shape)} and label shape {tuple(label.shape)}"
        )
    logits = pred.reshape(-1)
    dtype = logits.dtype if logits.is_floating_point() else torch.get_default_dtype()
    logits = logits.to(dtype)
    target = label.reshape(-1).to(device=logits.device, dtype=dtype)
    if bonafide_label == 0:
        target = 1 - target
    if weights is None:
        return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)
    w_b, w_s = weights[bonafide_label], weights[1 - bonafide_label]
    return _reduce(w_b * target * _softplus(-logits) + w_s * (1 - target) * _softplus(logits), reduction)


def binary_score(pred: torch.Tensor, bonafide_label: int = 1, num_logits: int = 1,
                 score: str = "logit_difference") -> torch.Tensor:
    """The binary loss's score: ``pred`` itself for one logit (ESPnet's); for
    two, the bona fide logit minus the spoof logit (``"logit_difference"``, the
    log posterior odds of bona fide) or the bona fide logit alone
    (``"bonafide_logit"``, AASIST's ``batch_out[:, 1]``)."""
    if score not in BINARY_SCORES:
        raise ValueError(f"score must be one of {BINARY_SCORES}, got {score!r}")
    if num_logits == 1:
        return pred
    if pred.dim() != 2 or pred.shape[1] != 2:
        raise ValueError(f"pred must have shape [B, 2] with num_logits = 2, got shape {tuple(pred.shape)}")
    bonafide = pred[:, bonafide_label]
    return bonafide if score == "bonafide_logit" else bonafide - pred[:, 1 - bonafide_label]


def espnet_binary_loss(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """ESPnet's ASVSpoofBinaryLoss formula: sigmoid, then BCELoss (mean).

    BCELoss clamps log(p) at -100, so a confidently wrong logit saturates at a
    loss of 100. The target is cast to ``pred``'s dtype (ESPnet casts to float32,
    which is the same thing for float32 predictions).
    """
    prob = torch.sigmoid(pred.reshape(-1))
    return F.binary_cross_entropy(prob, label.reshape(-1).to(prob.dtype), reduction="mean")


class BinaryLoss(nn.Module):
    """Reference of ``spoofloss.BinaryLoss``: BCE with logits, or torch's
    cross-entropy of two logits, class-weighted or not, as a torch ops chain."""

    def __init__(
        self,
        weight: float = 1.0,
        bonafide_label: int = 1,
        reduction: str = "mean",
        num_logits: int = 1,
        class_weight=None,
        score: str = "logit_difference",
    ):
        super().__init__()
        check_bonafide_label(bonafide_label)
        _check_reduction(reduction)
        _check_num_logits(num_logits)
        if score not in BINARY_SCORES:
            raise ValueError(f"score must be one of {BINARY_SCORES}, got {score!r}")
        self.weight = weight
        self.bonafide_label = bonafide_label
        self.reduction = reduction
        self.num_logits = num_logits
        self.class_weight = check_class_weight(class_weight)
        self.score_kind = score

    @property
    def name(self) -> str:
        return "binary_loss"

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return binary_loss(pred, label, bonafide_label=self.bonafide_label, reduction=self.reduction,
                           class_weight=self.class_weight, num_logits=self.num_logits)

    def score(self, pred: torch.Tensor) -> torch.Tensor:
        return binary_score(pred, self.bonafide_label, self.num_logits, self.score_kind)


class AMSoftmaxLoss(nn.Module):
    """Reference of ``spoofloss.AMSoftmaxLoss``: centres [num_classes, enc_dim], torch ops chain."""

    def __init__(
        self,
        weight: float = 1.0,
        enc_dim: int = 128,
        s: float = 20.0,
        m: float = 0.5,
        bonafide_label: int = 1,
        reduction: str = "mean",
        num_classes: int = 2,
        score: str = "cosine",
    ):
        super().__init__()
        if score not in ("cosine", "posterior"):
            raise ValueError(f"score must be 'cosine' or 'posterior', got {score!r}")
        _set_hyperparameters(self, weight, enc_dim, bonafide_label, reduction, num_classes, s=s, m=m,
                             num_classes=num_classes, score_kind=score)
        self.centers = nn.Parameter(torch.randn(num_classes, enc_dim))

    @property
    def name(self) -> str:
        return "am_softmax_loss"

    def forward(
        self, label: torch.Tensor, emb: torch.Tensor, lengths: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return am_softmax_loss(
            label, emb, self.centers, lengths, s=self.s, m=self.m, reduction=self.reduction,
            bonafide_label=self.bonafide_label,
        )

    def score(self, emb: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.score_kind == "posterior":
            return log_posterior_score(emb, self.centers, lengths, center=self.bonafide_label, s=self.s)
        return am_softmax_score(emb, self.centers, lengths, bonafide_label=self.bonafide_label)


class OCSoftmaxLoss(nn.Module):
    """Reference of ``spoofloss.OCSoftmaxLoss``: one centre [1, enc_dim], torch ops chain."""

    def __init__(
        self,
        weight: float = 1.0,
        enc_dim: int = 128,
        m_real: float = 0.5,
        m_fake: float = 0.2,
        alpha: float = 20.0,
        bonafide_label: int = 1,
        reduction: str = "mean",
    ):
        super().__init__()
        _set_hyperparameters(self, weight, enc_dim, bonafide_label, reduction, m_real=m_real, m_fake=m_fake,
                             alpha=alpha)
        self.center = nn.Parameter(torch.randn(1, enc_dim))
        nn.init.kaiming_uniform_(self.center, a=0.25)

    @property
    def name(self) -> str:
        return "oc_softmax_loss"

    def forward(
        self, label: torch.Tensor, emb: torch.Tensor, lengths: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return oc_softmax_loss(
            label,
            emb,
            self.center,
            lengths,
            m_real=self.m_real,
            m_fake=self.m_fake,
            alpha=self.alpha,
            bonafide_label=self.bonafide_label,
            reduction=self.reduction,
        )

    def score(self, emb: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        return oc_softmax_score(emb, self.center, lengths)


# --------------------------------------------------------------------------- #
# AAM-softmax (ArcFace) and P2SGrad
# --------------------------------------------------------------------------- #

__all__ += [
    "ANGULAR_SINE_SQUARED_FLOOR",
    "angular_margin_logit",
    "aam_softmax_from_cosines",
    "aam_softmax_loss",
    "p2sgrad_from_cosines",
    "p2sgrad_loss",
    "AAMSoftmaxLoss",
    "P2SGradLoss",
]

# sin(theta) = sqrt(max(1 - cos^2, floor)) in the angular margin: a finite
# derivative at cos = +-1 and no NaN for a cosine rounded past 1 (why this
# number: csrc/cosine_losses.h, kAngularSineSquaredFloor).
ANGULAR_SINE_SQUARED_FLOOR = 1e-6


def angular_margin_logit(c: torch.Tensor, margin: torch.Tensor, easy_margin: bool = False) -> torch.Tensor:
    """phi(c), the target class's cosine under the additive angular margin [B]:
    cos(theta + m) = c cos m - sin(theta) sin m where c > cos(pi - m) = -cos m,
    else the conventional fallback c - m sin m (easy margin: cos(theta + m)
    where c > 0, else c); sin(theta) = sqrt(max(1 - c^2, ANGULAR_SINE_SQUARED_FLOOR)).
    No acos; finite with a finite derivative for every finite c (|c| > 1 included).
    c, margin: [B] of one dtype."""
    cos_m, sin_m = torch.cos(margin), torch.sin(margin)
    sine_sq = 1 - c * c
    floor = c.new_tensor(ANGULAR_SINE_SQUARED_FLOOR)
    # where(), not clamp(): below the floor the sine is a constant, its gradient 0
    # (at the floor itself the exact branch, as in the kernels)
    sine = torch.sqrt(torch.where(sine_sq >= floor, sine_sq, floor))
    shifted = c * cos_m - sine * sin_m
    if easy_margin:
        return torch.where(c > 0, shifted, c)
    return torch.where(c > -cos_m, shifted, c - margin * sin_m)


def aam_softmax_from_cosines(cos: torch.Tensor, target: torch.Tensor, s: float, m_bonafide: float, m_spoof: float,
                             bonafide_label: int, easy_margin: bool = False) -> torch.Tensor:
    """AAM-softmax per utterance [B] from cos [B, C] and class targets [B]:
    cross-entropy of class y over s * cos_k (k != y) and s * phi(cos_y)."""
    margin = torch.where(target == bonafide_label, cos.new_tensor(m_bonafide), cos.new_tensor(m_spoof))  # [B]
    phi = angular_margin_logit(cos.gather(1, target.unsqueeze(1)).squeeze(1), margin, easy_margin)  # [B]
    logits = (s * cos).scatter(1, target.unsqueeze(1), (s * phi).unsqueeze(1))
    return margin_cross_entropy(logits, target)


def aam_softmax_loss(
    label: torch.Tensor,
    emb: torch.Tensor,
    centers: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    s: float = 30.0,
    m: float = 0.2,
    easy_margin: bool = False,
    reduction: str = "mean",
    bonafide_label: int = 1,
    m_spoof: Optional[float] = None,
) -> torch.Tensor:
    """AAM-softmax (ArcFace) loss with C >= 2 centres [C, D], centre k for class
    k; the margin m of the bona fide class, m_spoof (default m) of the others."""
    _check_reduction(reduction)
    if centers.dim() != 2 or centers.shape[0] < 2:
        raise ValueError(f"centers must have shape [C >= 2, enc_dim], got shape {tuple(centers.shape)}")
    cos = cosines(emb, centers, lengths)  # [B, C]
    target = _class_label(label, cos.shape[0], cos.device)
    per = aam_softmax_from_cosines(cos, target, s, m, m if m_spoof is None else m_spoof, bonafide_label,
                                   easy_margin)
    return _reduce(per, reduction)


def p2sgrad_from_cosines(cos: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """P2SGrad per utterance [B]: mean over the C classes of (cos_k - [k == y])^2
    (NII's MSELoss averages over batch and classes: the "mean" reduction)."""
    return (cos - F.one_hot(target, cos.shape[1]).to(cos.dtype)).square().mean(dim=1)


def p2sgrad_loss(
    label: torch.Tensor,
    emb: torch.Tensor,
    centers: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """P2SGrad loss with C >= 2 centres [C, D], centre k for class k."""
    _check_reduction(reduction)
    if centers.dim() != 2 or centers.shape[0] < 2:
        raise ValueError(f"centers must have shape [C >= 2, enc_dim], got shape {tuple(centers.shape)}")
    cos = cosines(emb, centers, lengths)  # [B, C]
    return _reduce(p2sgrad_from_cosines(cos, _class_label(label, cos.shape[0], cos.device)), reduction)


class AAMSoftmaxLoss(AMSoftmaxLoss):
    """Reference of ``spoofloss.AAMSoftmaxLoss``: centres [num_classes, enc_dim], torch ops chain
    (AM-softmax's centres and scores; the angular margin in forward)."""

    def __init__(
        self,
        weight: float = 1.0,
        enc_dim: int = 128,
        s: float = 30.0,
        m: float = 0.2,
        easy_margin: bool = False,
        bonafide_label: int = 1,
        reduction: str = "mean",
        num_classes: int = 2,
        score: str = "cosine",
    ):
        super().__init__(weight, enc_dim, s, m, bonafide_label, reduction, num_classes, score)
        self.easy_margin = easy_margin

    @property
    def name(self) -> str:
        return "aam_softmax_loss"

    def forward(
        self, label: torch.Tensor, emb: torch.Tensor, lengths: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return aam_softmax_loss(label, emb, self.centers, lengths, s=self.s, m=self.m, easy_margin=self.easy_margin,
                                reduction=self.reduction, bonafide_label=self.bonafide_label)


class P2SGradLoss(nn.Module):
    """Reference of ``spoofloss.P2SGradLoss``: centres [num_classes, enc_dim], torch ops chain."""

    def __init__(
        self,
        weight: float = 1.0,
        enc_dim: int = 128,
        bonafide_label: int = 1,
        reduction: str = "mean",
        num_classes: int = 2,
    ):
        super().__init__()
        _set_hyperparameters(self, weight, enc_dim, bonafide_label, reduction, num_classes, num_classes=num_classes)
        self.centers = nn.Parameter(torch.empty(num_classes, enc_dim).uniform_(-1.0, 1.0))

    @property
    def name(self) -> str:
        return "p2sgrad_loss"

    def forward(
        self, label: torch.Tensor, emb: torch.Tensor, lengths: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return p2sgrad_loss(label, emb, self.centers, lengths, reduction=self.reduction)

    def score(self, emb: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        return am_softmax_score(emb, self.centers, lengths, bonafide_label=self.bonafide_label)


OP_FORMS["aam_softmax"] = lambda cos, target, center_index, scale, mb, ms, bonafide: aam_softmax_from_cosines(
    cos, target, scale, mb, ms, bonafide)
OP_FORMS["aam_softmax_easy_margin"] = (
    lambda cos, target, center_index, scale, mb, ms, bonafide: aam_softmax_from_cosines(
        cos, target, scale, mb, ms, bonafide, easy_margin=True))
OP_FORMS["p2sgrad"] = lambda cos, target, center_index, scale, mb, ms, bonafide: p2sgrad_from_cosines(cos, target)


# --------------------------------------------------------------------------- #
# Multi-centre one-class softmax (SAMO: Ding, Zhang and Duan, ICASSP 2023)
# --------------------------------------------------------------------------- #

__all__ += ["samo_from_cosines", "samo_loss", "samo_score", "own_or_nearest_cosine", "MultiCenterOCSoftmaxLoss"]


def _nearest(cos: torch.Tensor) -> torch.Tensor:
    """The index [B] of each row's largest cosine, the first of equals (argmax's rule)."""
    return cos.argmax(dim=1)


def own_or_nearest_cosine(cos: torch.Tensor, center_index: torch.Tensor) -> torch.Tensor:
    """cos [B, C] at each utterance's own centre center_index [B], or at its
    nearest centre where the index is -1 (the utterance_center score rule)."""
    chosen = torch.where(center_index >= 0, center_index, _nearest(cos))
    return cos.gather(1, chosen.unsqueeze(1)).squeeze(1)


def samo_from_cosines(cos: torch.Tensor, target: torch.Tensor, center_index: Optional[torch.Tensor], m_real: float,
                      m_fake: float, alpha: float, bonafide_label: int) -> torch.Tensor:
    """SAMO per utterance [B] from cos [B, C], class targets [B] and centre
    indices [B] (or None): the one-class softmax at cos_j, j = the bona fide
    utterance's own centre when given (>= 0), else the nearest centre; spoof
    utterances always take the nearest."""
    bonafide = target == bonafide_label
    chosen = _nearest(cos)
    if center_index is not None:
        chosen = torch.where(bonafide & (center_index >= 0), center_index, chosen)
    cos_j = cos.gather(1, chosen.unsqueeze(1)).squeeze(1)
    return _softplus(alpha * torch.where(bonafide, m_real - cos_j, cos_j - m_fake))


def samo_loss(
    label: torch.Tensor,
    emb: torch.Tensor,
    centers: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    center_index: Optional[torch.Tensor] = None,
    m_real: float = 0.7,
    m_fake: float = 0.0,
    alpha: float = 20.0,
    bonafide_label: int = 1,
    reduction: str = "mean",
) -> torch.Tensor:
    """SAMO's multi-centre one-class softmax loss with centres [K, D]."""
    _check_reduction(reduction)
    check_bonafide_label(bonafide_label)
    if centers.dim() != 2 or centers.shape[0] < 1:
        raise ValueError(f"centers must have shape [K >= 1, enc_dim], got shape {tuple(centers.shape)}")
    cos = cosines(emb, centers, lengths)  # [B, K]
    target = _class_label(label, cos.shape[0], cos.device)
    index = None if center_index is None else center_index.to(cos.device).long()
    return _reduce(samo_from_cosines(cos, target, index, m_real, m_fake, alpha, bonafide_label), reduction)


def samo_score(
    emb: torch.Tensor,
    centers: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    center_index: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The largest cosine [B] to the centres, or with center_index the cosine
    to each utterance's own centre (the largest where it is -1)."""
    cos = cosines(emb, centers, lengths)
    if center_index is None:
        return cos.gather(1, _nearest(cos).unsqueeze(1)).squeeze(1)
    return own_or_nearest_cosine(cos, center_index.to(cos.device).long())


OP_FORMS["samo"] = lambda cos, target, center_index, scale, mb, ms, bonafide: samo_from_cosines(
    cos, target, center_index, mb, ms, scale, bonafide)


class MultiCenterOCSoftmaxLoss(nn.Module):
    """Reference of ``spoofloss.MultiCenterOCSoftmaxLoss``: centres [num_centers, enc_dim], torch ops chain."""

    def __init__(
        self,
        weight: float = 1.0,
        enc_dim: int = 128,
        num_centers: int = 20,
        m_real: float = 0.7,
        m_fake: float = 0.0,
        alpha: float = 20.0,
        bonafide_label: int = 1,
        reduction: str = "mean",
    ):
        super().__init__()
        _set_hyperparameters(self, weight, enc_dim, bonafide_label, reduction, num_centers=num_centers,
                             m_real=m_real, m_fake=m_fake, alpha=alpha)
        self.centers = nn.Parameter(F.normalize(torch.randn(num_centers, enc_dim), dim=1))

    @property
    def name(self) -> str:
        return "samo_loss"

    def forward(
        self,
        label: torch.Tensor,
        emb: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        center_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        return samo_loss(
            label, emb, self.centers, lengths, center_index, m_real=self.m_real, m_fake=self.m_fake,
            alpha=self.alpha, bonafide_label=self.bonafide_label, reduction=self.reduction,
        )

    def score(
        self, emb: torch.Tensor, lengths: Optional[torch.Tensor] = None, center_index: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return samo_score(emb, self.centers, lengths, center_index)
