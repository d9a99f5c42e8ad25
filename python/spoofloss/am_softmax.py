"""AM-softmax (additive margin softmax, CosFace) over learned class centres."""

from .cosine_margin import ClassCentreLoss
from .registry import register


@register(name="am_softmax", family="cosine", reference="AMSoftmaxLoss", espnet_name="am_softmax_loss",
          variants={"posterior-score": {"score": "posterior"}, "5-classes": {"num_classes": 5, "bonafide_label": 3}})
class AMSoftmaxLoss(ClassCentreLoss):
    """Cross-entropy over s * (cos(x, c_k) - m * [k == label]), k < num_classes.

    Centre k belongs to class k (label value k); the bona fide class is
    ``bonafide_label``, the others are spoof (or attack types). ``score``:
    "cosine" (default, ESPnet's choice) is the cosine to the bona fide centre;
    "posterior" the log-posterior of the bona fide class, log softmax_k(s cos_k)
    without margin, which AIR-ASVspoof and NII's baselines rank by (for two
    classes a function of cos_bona - cos_spoof alone). Defaults are ESPnet's.
    """

    loss_name = "am_softmax"

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
        super().__init__(weight, enc_dim, s, m, bonafide_label, reduction, num_classes, score)

    @property
    def name(self) -> str:
        return "am_softmax_loss"
