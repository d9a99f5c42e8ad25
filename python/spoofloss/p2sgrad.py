"""P2SGrad (Zhang et al., CVPR 2019) as NII's ASVspoof baselines train it."""

import torch

from . import ops
from .base import check_bonafide_label
from .cosine_margin import CosineMarginLoss
from .registry import register


@register(name="p2sgrad", family="cosine", reference="P2SGradLoss", espnet_name="p2sgrad_loss",
          variants={"5-classes": {"num_classes": 5, "bonafide_label": 2}, "bonafide-0": {"bonafide_label": 0}})
class P2SGradLoss(CosineMarginLoss):
    """Mean squared error between the cosines to the class centres and the
    one-hot target: (1 / C) sum_k (cos(x, c_k) - [k == label])^2 per utterance.

    The definition of NII's project-NN-Pytorch-scripts (core_modules/p2sgrad.py,
    the loss of the ASVspoof 2021 LFCC-LCNN baseline): torch's MSELoss over the
    [B, C] cosines, which averages over the batch and the classes, so the
    default reduction "mean" equals NII's loss. Centres are compared by
    direction only (normalised, as NII renormalises its weight columns); NII
    also clamps the cosines to [-1, 1], which only acts on rounding and is not
    done here. ``score`` is the cosine to the bona fide centre, NII's
    ``out_score[:, 1]`` with its bona fide label 1. The centres start uniform in
    [-1, 1] per element, like NII's.
    """

    loss_name = "p2sgrad"
    centers_name = "centers"

    def __init__(
        self,
        weight: float = 1.0,
        enc_dim: int = 128,
        bonafide_label: int = 1,
        reduction: str = "mean",
        num_classes: int = 2,
    ):
        super().__init__(weight, reduction)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.bonafide_label = check_bonafide_label(bonafide_label, num_classes)
        self.enc_dim = enc_dim
        self.num_classes = num_classes
        self.centers = torch.nn.Parameter(torch.empty(num_classes, enc_dim).uniform_(-1.0, 1.0))

    @property
    def name(self) -> str:
        return "p2sgrad_loss"

    def _margins(self) -> tuple[float, float, float]:
        return 1.0, 0.0, 0.0  # no scale, no margin

    def _score_rule(self) -> tuple[int, int]:
        return ops.score_rule_code("center_cosine"), self.bonafide_label
