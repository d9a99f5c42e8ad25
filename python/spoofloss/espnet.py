"""ESPnet-compatible names and signatures (espnet2.asvspoof.loss).

Drop-in replacements for ASVSpoofBinaryLoss, ASVSpoofAMSoftmaxLoss and
ASVSpoofOCSoftmaxLoss: the same constructor arguments, call order, parameter
names and reporter keys, on the fused kernels. ``lengths`` (ESPnet's
encoder_out_lens) may be passed as a keyword; ESPnet's model does not pass it.

This module never requires ESPnet. Where espnet is installed, importing it makes
every spoofloss loss an instance of ESPnet's AbsASVSpoofLoss (see
``register_with_espnet``), so ESPnetASVSpoofModel's type check accepts them.
``register_losses`` makes a built ESPnetASVSpoofModel own its losses' centres.
spoofloss.espnet_model and spoofloss.espnet_train (which do import espnet) hold
a model that passes lengths and scores with the configured loss, and the
training entry point that puts spoofloss's losses in the task's choices.
"""

from collections.abc import Mapping
from typing import Optional

import torch
from torch import Tensor

from .am_softmax import AMSoftmaxLoss
from .base import AbsASVSpoofLoss
from .binary_cross_entropy import BinaryLoss
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


# The classes by the names ESPnet's asvspoof task and model know them by.
ESPNET_LOSS_CLASSES = {
    "binary_loss": ASVSpoofBinaryLoss,
    "am_softmax_loss": ASVSpoofAMSoftmaxLoss,
    "oc_softmax_loss": ASVSpoofOCSoftmaxLoss,
}


def register_with_espnet() -> bool:
    """Make spoofloss's losses pass ``isinstance(loss, espnet2's AbsASVSpoofLoss)``.

    ESPnetASVSpoofModel type-checks its ``losses`` as Dict[str, AbsASVSpoofLoss]
    with typeguard, which asks isinstance. ESPnet's AbsASVSpoofLoss is an ABC,
    so registering spoofloss's base class as a virtual subclass satisfies that
    check for every spoofloss loss without spoofloss inheriting from, or
    depending on, ESPnet: nothing of ESPnet's class is inherited, and the check
    is the only thing ESPnet asks of a loss's type. Returns False, changing
    nothing, where espnet is not importable. Runs when this module is imported;
    safe to call again.
    """
    try:
        # a small module (torch and abc only); the rest of espnet2 stays unimported
        from espnet2.asvspoof.loss.abs_loss import AbsASVSpoofLoss as EspnetAbsASVSpoofLoss
    except ImportError:
        return False
    EspnetAbsASVSpoofLoss.register(AbsASVSpoofLoss)
    return True


REGISTERED_WITH_ESPNET = register_with_espnet()


def register_losses(model: torch.nn.Module) -> torch.nn.ModuleDict:
    """Make ``model.losses`` (ESPnetASVSpoofModel's plain dict) a ModuleDict.

    ESPnetASVSpoofModel stores its losses in a plain dict, which nn.Module does
    not look into: the centres of AM- and OC-softmax are then missing from
    model.parameters() (so no optimiser steps them), from model.to(...) and
    from the state dict. After this call they are submodules under the same
    attribute and keys (state-dict keys ``losses.<name>.<param>``), and the
    model's forward finds them as before. Call it before model.to(...) and
    before building the optimiser. Returns the ModuleDict; a model whose losses
    already are one is left as it is.
    """
    losses = getattr(model, "losses", None)
    if isinstance(losses, torch.nn.ModuleDict):
        return losses
    if not isinstance(losses, Mapping):
        raise TypeError(f"register_losses: model.losses must be a dict of loss modules, got {type(losses).__name__}")
    registered = torch.nn.ModuleDict(losses)
    # nn.Module.__setattr__ drops the plain dict from the instance __dict__ and
    # registers the ModuleDict in its place, so `model.losses` names it.
    model.losses = registered
    return registered
