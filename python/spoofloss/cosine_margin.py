"""What the cosine-margin losses share: one op family, a different epilogue each."""

from typing import Optional

import torch
from torch import Tensor

from . import ops
from .base import AbsASVSpoofLoss, check_bonafide_label, check_tensor, reduction_code


class CosineMarginLoss(AbsASVSpoofLoss):
    """A loss of the cosine-margin family over emb [B, T, D] or [B, D].

    A subclass names its row of the library's loss table (``loss_name``),
    registers its centres as the parameter named ``centers_name`` (ESPnet's
    names), and says how its hyper-parameters map onto the op's scale and two
    margins (``_margins``) and how it scores (``_score_rule``). Margins and
    scales are read at every call, so a schedule may change them between steps.
    """

    loss_name: str
    centers_name: str

    def __init__(self, weight: float, reduction: str):
        super().__init__(weight)
        reduction_code(reduction)
        self.reduction = reduction

    def _margins(self) -> tuple[float, float, float]:
        """(scale, margin of bona fide, margin of the other classes)."""
        raise NotImplementedError

    def _score_rule(self) -> tuple[int, int]:
        """(score rule code, score centre) of ``score``."""
        raise NotImplementedError

    @property
    def _centers(self) -> Tensor:
        return getattr(self, self.centers_name)

    def _run(self, label, emb, lengths, center_index=None) -> tuple[Tensor, Tensor]:
        check_tensor("label", label)
        check_tensor("emb", emb)
        check_tensor("lengths", lengths, optional=True)
        scale, margin_bonafide, margin_spoof = self._margins()
        score_rule, score_center = self._score_rule()
        return ops.cosine_margin_loss_and_score(
            emb, self._centers, label, lengths, ops.loss_code(self.loss_name), scale, margin_bonafide, margin_spoof,
            self.bonafide_label, reduction_code(self.reduction), score_rule, score_center, center_index)

    def forward(self, label: Tensor, emb: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """The loss. label: [B] or [B, 1] class indices; lengths: valid frames per utterance."""
        return self._run(label, emb, lengths)[0]

    def score(self, emb: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """The countermeasure score [B] (higher is more bona fide), differentiable."""
        check_tensor("emb", emb)
        check_tensor("lengths", lengths, optional=True)
        score_rule, score_center = self._score_rule()
        return ops.cosine_score(emb, self._centers, lengths, score_center, score_rule, self._margins()[0])

    def forward_and_score(self, label: Tensor, emb: Tensor, lengths: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """The loss and ``score`` from one pass over emb (a training step that
        reports both need not read emb twice); both are differentiable, and
        their gradients come from one fused backward pass."""
        return self._run(label, emb, lengths)


class ClassCentreLoss(CosineMarginLoss):
    """A margin softmax over one centre per class (AM- and AAM-softmax):
    centres [num_classes, enc_dim], centre k for label value k, the bona fide
    class ``bonafide_label``; scale ``s`` and margin ``m``; ``score`` "cosine"
    (the cosine to the bona fide centre) or "posterior" (the bona fide class's
    log-posterior log softmax_k(s cos_k), without margin)."""

    SCORES = ("cosine", "posterior")
    centers_name = "centers"

    def __init__(self, weight: float, enc_dim: int, s: float, m: float, bonafide_label: int, reduction: str,
                 num_classes: int, score: str):
        super().__init__(weight, reduction)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if score not in self.SCORES:
            raise ValueError(f"score must be one of {self.SCORES}, got {score!r}")
        self.bonafide_label = check_bonafide_label(bonafide_label, num_classes)
        self.enc_dim = enc_dim
        self.s = s
        self.m = m
        self.num_classes = num_classes
        self.score_kind = score
        self.centers = torch.nn.Parameter(torch.randn(num_classes, enc_dim))

    def _margins(self) -> tuple[float, float, float]:
        return self.s, self.m, self.m

    def _score_rule(self) -> tuple[int, int]:
        rule = "center_cosine" if self.score_kind == "cosine" else "log_posterior"
        return ops.score_rule_code(rule), self.bonafide_label


class OneClassLoss(CosineMarginLoss):
    """A one-class softmax around bona fide centres (OC-softmax, SAMO):
    softplus(alpha (m_real - cos)) for bona fide, softplus(alpha (cos - m_fake))
    for spoof, two classes (label ``bonafide_label`` is bona fide)."""

    def __init__(self, weight: float, enc_dim: int, m_real: float, m_fake: float, alpha: float, bonafide_label: int,
                 reduction: str):
        super().__init__(weight, reduction)
        self.bonafide_label = check_bonafide_label(bonafide_label)
        self.enc_dim = enc_dim
        self.m_real = m_real
        self.m_fake = m_fake
        self.alpha = alpha

    def _margins(self) -> tuple[float, float, float]:
        return self.alpha, self.m_real, self.m_fake
