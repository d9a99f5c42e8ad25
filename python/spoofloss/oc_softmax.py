"""One-class softmax (Zhang, Jiang, Duan, IEEE SPL 2021) around one learned centre."""

import torch

from . import ops
from .cosine_margin import OneClassLoss
from .registry import register


@register(name="oc_softmax", family="cosine", reference="OCSoftmaxLoss", espnet_name="oc_softmax_loss",
          variants={"bonafide-0": {"bonafide_label": 0}})
class OCSoftmaxLoss(OneClassLoss):
    """softplus(alpha * (m_real - cos)) for bona fide, softplus(alpha * (cos - m_fake)) for spoof.

    ``score`` is the cosine to the centre. Defaults are ESPnet's.
    """

    loss_name = "oc_softmax"
    centers_name = "center"

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
        super().__init__(weight, enc_dim, m_real, m_fake, alpha, bonafide_label, reduction)
        self.center = torch.nn.Parameter(torch.randn(1, enc_dim))
        torch.nn.init.kaiming_uniform_(self.center, 0.25)

    @property
    def name(self) -> str:
        return "oc_softmax_loss"

    def _score_rule(self) -> tuple[int, int]:
        return ops.score_rule_code("center_cosine"), 0
