"""AM-softmax (additive margin softmax, CosFace) over learned class centres."""

import torch

from . import ops
from .base import check_bonafide_label
from .cosine_margin import CosineMarginLoss
from .registry import register

SCORES = ("cosine", "posterior")


@register(name="am_softmax", family="cosine", reference="AMSoftmaxLoss", espnet_name="am_softmax_loss",
          variants={"posterior-score": {"score": "posterior"}, "5-classes": {"num_classes": 5, "bonafide_label": 3}})
class AMSoftmaxLoss(CosineMarginLoss):
    """Cross-entropy over s * (cos(x, c_k) - m * [k == label]), k < num_classes.

    Centre k belongs to class k (label value k); the bona fide class is
    ``bonafide_label``, the others are spoof (or attack types). ``score``:
    "cosine" (default, ESPnet's choice) is the cosine to the bona fide centre;
    "posterior" the log-posterior of the bona fide class, log softmax_k(s cos_k)
    without margin, which AIR-ASVspoof and NII's baselines rank by (for two
    classes a function of cos_bona - cos_spoof alone). Defaults are ESPnet's.
    """

    loss_name = "am_softmax"
    centers_name = "centers"

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
        super().__init__(weight, reduction)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.bonafide_label = check_bonafide_label(bonafide_label, num_classes)
        self.enc_dim = enc_dim
        self.s = s
        self.m = m
        self.num_classes = num_classes
        self.score_kind = score
        self.centers = torch.nn.Parameter(torch.randn(num_classes, enc_dim))

    @property
    def name(self) -> str:
        return "am_softmax_loss"

    def _margins(self) -> tuple[float, float, float]:
        return self.s, self.m, self.m

    def _score_rule(self) -> tuple[int, int]:
        rule = "center_cosine" if self.score_kind == "cosine" else "log_posterior"
        return ops.score_rule_code(rule), self.bonafide_label
