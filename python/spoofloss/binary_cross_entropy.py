"""The binary loss on logits: ESPnet's ASVSpoofBinaryLoss (one logit per
utterance, BCE with logits), and the class-weighted cross-entropy over two
logits per utterance that AASIST and most ASVspoof 5 systems train with."""

from typing import Optional, Sequence

from torch import Tensor

from . import ops
from .base import AbsASVSpoofLoss, check_bonafide_label, check_class_weight, check_tensor, reduction_code
from .registry import register

SCORES = ("logit_difference", "bonafide_logit")


@register(name="binary", family="logits", reference="BinaryLoss", espnet_name="binary_loss",
          variants={
              "bonafide-0": {"bonafide_label": 0},
              "class-weight": {"class_weight": (0.3, 1.7)},
              "class-weight-bonafide-0": {"class_weight": (0.3, 1.7), "bonafide_label": 0},
              "two-logits": {"num_logits": 2},
              "two-logits-class-weight": {"num_logits": 2, "class_weight": (0.1, 0.9)},
              "two-logits-bonafide-logit": {"num_logits": 2, "class_weight": (0.1, 0.9), "score": "bonafide_logit"},
              "two-logits-bonafide-0": {"num_logits": 2, "class_weight": (0.9, 0.1), "bonafide_label": 0},
          })
class BinaryLoss(AbsASVSpoofLoss):
    """The binary loss on logits, one or two per utterance.

    ``num_logits=1`` (default, ESPnet's): pred holds one logit per label (any
    shape with label's element count), sigmoid(pred) estimates P(bona fide),
    and the loss is BCE with logits, softplus(pred) - t pred, exact for any
    logit (t = label, or 1 - label for ``bonafide_label=0``).

    ``num_logits=2`` (AASIST's): pred [B, 2] holds the logits of label 0 and
    label 1 (column k is label k's, as in torch's CrossEntropyLoss; the bona
    fide column is ``bonafide_label``), and the loss is torch's cross-entropy
    over them. ``BinaryLoss(num_logits=2, class_weight=(0.1, 0.9))`` is
    AASIST's ``CrossEntropyLoss(weight=[0.1, 0.9])`` with its labels (1 =
    bona fide).

    ``class_weight``: the weights of label 0 and label 1, as torch's
    ``weight`` (``weight`` here is ESPnet's loss weight, stored, not applied).
    Labels of an integer or bool dtype are class indices; labels of a floating
    dtype are probabilities of label 1 (soft targets). Two logits: a weighted
    mean of class indices divides by the targets' total weight sum_i w_{y_i}
    (CrossEntropyLoss); of soft targets by N. One logit: the weights scale the
    two terms, w_b t softplus(-x) + w_s (1 - t) softplus(x)
    (BCEWithLogitsLoss(weight=w_s, pos_weight=w_b / w_s)), and the mean divides
    by N. ``class_weight`` is read at every call, so a schedule may change it.

    ``score``: for two logits, "logit_difference" (default) is the bona fide
    logit minus the spoof logit, the log posterior odds of bona fide that the
    loss trains (it ranks as the posterior does, and it is the one-logit
    score); "bonafide_logit" is the bona fide logit alone, as AASIST scores
    (``batch_out[:, 1]``). For one logit both are pred itself, as ESPnet's.
    """

    def __init__(
        self,
        weight: float = 1.0,
        bonafide_label: int = 1,
        reduction: str = "mean",
        num_logits: int = 1,
        class_weight: Optional[Sequence[float]] = None,
        score: str = "logit_difference",
    ):
        super().__init__(weight)
        self.bonafide_label = check_bonafide_label(bonafide_label)
        reduction_code(reduction)
        if isinstance(num_logits, bool) or not isinstance(num_logits, int) or num_logits not in (1, 2):
            raise ValueError(f"num_logits must be 1 (one logit per label) or 2 (the logits of label 0 and label 1), "
                             f"got {num_logits!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.reduction = reduction
        self.num_logits = int(num_logits)
        self.class_weight = class_weight
        self.score_kind = score

    @property
    def class_weight(self) -> Optional[tuple]:
        """The weights of label 0 and label 1 (a tuple of two floats), or None."""
        return self._class_weight

    @class_weight.setter
    def class_weight(self, value) -> None:
        self._class_weight = check_class_weight(value)

    @property
    def name(self) -> str:
        return "binary_loss"

    def forward(self, pred: Tensor, label: Tensor) -> Tensor:
        check_tensor("pred", pred)
        check_tensor("label", label)
        return ops.binary_cross_entropy(pred, label, self.bonafide_label, reduction_code(self.reduction),
                                        self._class_weight, self.num_logits)

    def score(self, pred: Tensor) -> Tensor:
        check_tensor("pred", pred)
        if self.num_logits == 1:
            return pred
        if pred.dim() != 2 or pred.shape[1] != 2:
            raise ValueError(f"pred must have shape [B, 2] (the logits of label 0 and label 1) with num_logits = 2, "
                             f"got shape {list(pred.shape)}")
        bonafide = pred[:, self.bonafide_label]
        if self.score_kind == "bonafide_logit":
            return bonafide
        return bonafide - pred[:, 1 - self.bonafide_label]
