"""AAM-softmax (additive angular margin, ArcFace) over learned class centres."""

from .cosine_margin import ClassCentreLoss
from .registry import register


@register(name="aam_softmax", family="cosine", reference="AAMSoftmaxLoss", espnet_name="aam_softmax_loss",
          variants={"easy-margin": {"easy_margin": True},
                    "5-classes": {"num_classes": 5, "bonafide_label": 3},
                    "posterior-score": {"score": "posterior"},
                    "bonafide-0": {"bonafide_label": 0}})
class AAMSoftmaxLoss(ClassCentreLoss):
    """Cross-entropy over s * phi(cos(x, c_y)) for the target class y and
    s * cos(x, c_k) for the others, k < num_classes.

    phi(cos theta) = cos(theta + m) where theta + m < pi, else the conventional
    fallback cos theta - m sin m (ArcFace, Deng et al., CVPR 2019; the form of
    SpeechBrain's AdditiveAngularMargin and InsightFace). With ``easy_margin``,
    phi = cos(theta + m) where cos theta > 0, else cos theta. Computed without
    acos and without NaN at cos = +-1 (or a cosine rounded past 1): sin theta is
    sqrt(max(1 - cos^2, 1e-6)), which moves nothing for theta above 1e-3 rad
    (README, "AAM-softmax").

    Centre k belongs to class k (label value k); the bona fide class is
    ``bonafide_label``, the others are spoof (or attack types). ``score``:
    "cosine" (default) is the cosine to the bona fide centre; "posterior" the
    log-posterior of the bona fide class, log softmax_k(s cos_k) without margin.

    Defaults s = 30, m = 0.2 are those of SpeechBrain's ECAPA-TDNN recipe
    (recipes/VoxCeleb/SpeakerRec/hparams/train_ecapa_tdnn.yaml); WeSpeaker's
    ArcMarginProduct uses m = 0.2 with s = 32. ``s``, ``m`` and ``easy_margin``
    are read at every call, so a margin schedule (WeSpeaker ramps m from 0)
    only assigns ``loss.m``.
    """

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
        if not isinstance(easy_margin, bool):
            raise ValueError(f"easy_margin must be True or False, got {easy_margin!r}")
        super().__init__(weight, enc_dim, s, m, bonafide_label, reduction, num_classes, score)
        self.easy_margin = easy_margin

    @property
    def name(self) -> str:
        return "aam_softmax_loss"

    @property
    def loss_name(self) -> str:
        # two rows of the library's table, one epilogue (csrc/cosine_losses.h)
        return "aam_softmax_easy_margin" if self.easy_margin else "aam_softmax"
