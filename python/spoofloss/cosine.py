"""What the cosine-margin losses share: one op family, a different epilogue each."""

from typing import Optional

from torch import Tensor

from . import ops
from .base import AbsASVSpoofLoss, check_bonafide_label, check_tensor, reduction_code


class CosineMarginLoss(AbsASVSpoofLoss):
    """A loss of the cosine-margin family over emb [B, T, D] or [B, D].

    Subclasses set ``_epilogue``, the margins and the scale, and register their
    centres as the parameter named ``_centers_name`` (ESPnet's names).
    """

    _epilogue: int
    _centers_name: str

    def __init__(self, weight: float, bonafide_label: int, reduction: str):
        super().__init__(weight)
        self.bonafide_label = check_bonafide_label(bonafide_label)
        reduction_code(reduction)
        self.reduction = reduction

    def _margins(self) -> tuple[float, float, float]:
        """(scale, margin of bona fide, margin of spoof)."""
        raise NotImplementedError

    def _score_center(self) -> int:
        raise NotImplementedError

    def forward(self, label: Tensor, emb: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """The loss. label: [B] or [B, 1] holding 0/1; lengths: valid frames per utterance."""
        _check_inputs(label, emb, lengths)
        scale, margin_bonafide, margin_spoof = self._margins()
        return ops.cosine_margin_loss(
            emb, getattr(self, self._centers_name), label, lengths, self._epilogue, scale, margin_bonafide,
            margin_spoof, self.bonafide_label, reduction_code(self.reduction),
        )

    def score(self, emb: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """Cosine of the pooled emb with the bona fide centre, shape [B]."""
        check_tensor("emb", emb)
        check_tensor("lengths", lengths, optional=True)
        return ops.cosine_score(emb, getattr(self, self._centers_name), lengths, self._score_center())

    def forward_and_score(self, label: Tensor, emb: Tensor, lengths: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """The loss and ``score`` from one pass over emb (a training step that
        reports both need not read emb twice). Both are differentiable; a score
        that is only reported costs no backward pass."""
        _check_inputs(label, emb, lengths)
        scale, margin_bonafide, margin_spoof = self._margins()
        loss, score = ops.cosine_margin_loss_and_score(
            emb, getattr(self, self._centers_name), label, lengths, self._epilogue, scale, margin_bonafide,
            margin_spoof, self.bonafide_label, reduction_code(self.reduction),
        )
        return loss, score


def _check_inputs(label, emb, lengths) -> None:
    check_tensor("label", label)
    check_tensor("emb", emb)
    check_tensor("lengths", lengths, optional=True)
