"""Binary cross-entropy on one logit per utterance (ESPnet's ASVSpoofBinaryLoss)."""

from torch import Tensor

from . import ops
from .base import AbsASVSpoofLoss, check_bonafide_label, check_tensor, reduction_code
from .registry import register


@register(name="binary", family="logits", reference="BinaryLoss", espnet_name="binary_loss",
          variants={"bonafide-0": {"bonafide_label": 0}})
class BinaryLoss(AbsASVSpoofLoss):
    """BCE with logits: softplus(pred) - target * pred, exact for any logit.

    pred holds one logit per label (any shape with label's element count);
    sigmoid(pred) estimates P(bona fide). ``score`` returns pred, as ESPnet does.
    """

    def __init__(self, weight: float = 1.0, bonafide_label: int = 1, reduction: str = "mean"):
        super().__init__(weight)
        self.bonafide_label = check_bonafide_label(bonafide_label)
        reduction_code(reduction)
        self.reduction = reduction

    @property
    def name(self) -> str:
        return "binary_loss"

    def forward(self, pred: Tensor, label: Tensor) -> Tensor:
        check_tensor("pred", pred)
        check_tensor("label", label)
        return ops.binary_cross_entropy(pred, label, self.bonafide_label, reduction_code(self.reduction))

    def score(self, pred: Tensor) -> Tensor:
        check_tensor("pred", pred)
        return pred
