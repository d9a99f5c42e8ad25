"""ESPnet-compatible names and signatures (espnet2.asvspoof.loss).

Drop-in replacements for ASVSpoofBinaryLoss, ASVSpoofAMSoftmaxLoss and
ASVSpoofOCSoftmaxLoss: the same constructor arguments, call order, parameter
names and reporter keys, on the fused kernels. ``lengths`` (ESPnet's
encoder_out_lens) may be passed as a keyword; ESPnet's model does not pass it.
"""

from typing import Optional

from torch import Tensor

from .am_softmax import AMSoftmaxLoss
from .binary import BinaryLoss
from .oc_softmax import OCSoftmaxLoss


class ASVSpoofBinaryLoss(BinaryLoss):
    def __init__(self, weight: float = 1.0):
        super().__init__(weight=weight)


class ASVSpoofAMSoftmaxLoss(AMSoftmaxLoss):
    def __init__(self, weight: float = 1.0, enc_dim: int = 128, s: float = 20, m: float = 0.5):
        super().__init__(weight=weight, enc_dim=enc_dim, s=s, m=m)

    def forward(self, label: Tensor, emb: Tensor, lengths: Optional[Tensor] = None, **kwargs) -> Tensor:
        return super().forward(label, emb, lengths)


class ASVSpoofOCSoftmaxLoss(OCSoftmaxLoss):
    def __init__(
        self, weight: float = 1.0, enc_dim: int = 128, m_real: float = 0.5, m_fake: float = 0.2, alpha: float = 20.0
    ):
        super().__init__(weight=weight, enc_dim=enc_dim, m_real=m_real, m_fake=m_fake, alpha=alpha)

    def forward(self, label: Tensor, emb: Tensor, lengths: Optional[Tensor] = None, **kwargs) -> Tensor:
        return super().forward(label, emb, lengths)
