"""AM-softmax (additive margin softmax, CosFace) over two learned class centres."""

import torch

from . import ops
from .cosine import CosineMarginLoss


class AMSoftmaxLoss(CosineMarginLoss):
    """Cross-entropy over s * (cos(x, c_k) - m * [k == label]), k in {0, 1}.

    Centre k belongs to class k (label value k); ``score`` is the cosine to the
    bona fide centre, ``centers[bonafide_label]``. Defaults are ESPnet's.
    """

    _epilogue = ops.AM_SOFTMAX
    _centers_name = "centers"

    def __init__(
        self,
        weight: float = 1.0,
        enc_dim: int = 128,
        s: float = 20.0,
        m: float = 0.5,
        bonafide_label: int = 1,
        reduction: str = "mean",
    ):
        super().__init__(weight, bonafide_label, reduction)
        self.enc_dim = enc_dim
        self.s = s
        self.m = m
        self.centers = torch.nn.Parameter(torch.randn(2, enc_dim))

    @property
    def name(self) -> str:
        return "am_softmax_loss"

    def _margins(self) -> tuple[float, float, float]:
        return self.s, self.m, self.m

    def _score_center(self) -> int:
        return self.bonafide_label
