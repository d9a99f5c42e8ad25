"""ESPnet's ASVSpoof model, made to train spoofloss's losses as intended.

This module imports espnet (espnet2.asvspoof.espnet_model, which needs
typeguard); ``import spoofloss`` never imports it.

ESPnetASVSpoofModel (espnet 202511) keeps ``losses`` in a plain dict, so the
AM/OC centres are not parameters of the model: the optimiser never sees them,
model.to() does not move them and checkpoints do not hold them. Its forward
never passes encoder_out_lens to the loss, so padded frames enter the time
mean, and with oc_softmax_loss it scores with ``losses["am_softmax_loss"]``,
a KeyError unless an AM-softmax loss is configured as well.
``SpooflossASVSpoofModel`` changes those three things and nothing else.
"""

from typing import Dict, Optional, Tuple

import torch
from espnet2.asvspoof.espnet_model import ESPnetASVSpoofModel
from espnet2.torch_utils.device_funcs import force_gatherable

from .cosine_margin import CosineMarginLoss
from .espnet import register_losses, register_with_espnet
from .registry import LOSSES, by_espnet_name

# ESPnet's model trains one loss, the first of its three that is configured; so does
# this one, and after those the first configured of the other registered losses.
ESPNET_PRECEDENCE = ("oc_softmax_loss", "am_softmax_loss", "binary_loss")


def loss_precedence() -> tuple:
    """The names of the losses this model can train, in its order of preference."""
    return ESPNET_PRECEDENCE + tuple(
        spec.espnet_name for spec in LOSSES.values() if spec.espnet_name not in ESPNET_PRECEDENCE)


class SpooflossASVSpoofModel(ESPnetASVSpoofModel):
    """ESPnetASVSpoofModel that registers its losses and passes lengths.

    Same constructor arguments and forward signature and outputs as ESPnet's
    (``loss, stats {"loss", "acc"}, weight``), with these differences:

    * ``losses`` is a ModuleDict (``spoofloss.espnet.register_losses``): the
      centres are parameters of the model, stepped by its optimiser, moved by
      ``.to()`` and saved as ``losses.<name>.center(s)``.
    * AM/OC-softmax get ``encoder_out_lens``: the time mean covers each
      utterance's valid frames only.
    * The score behind the ``acc`` stat comes from the loss being trained, in
      the same fused pass as the loss; the decoder runs only for a loss on
      logits (binary_loss), the only ones that read its output (ESPnet's model
      discards it otherwise).
    """

    def __init__(self, frontend, specaug, normalize, encoder, preencoder, decoder, losses):
        # ESPnet's typeguard check of `losses` needs the virtual-subclass registration
        register_with_espnet()
        if not any(name in losses for name in loss_precedence()):
            raise ValueError(f"losses must hold one of {loss_precedence()}; got {sorted(losses)}")
        super().__init__(
            frontend=frontend, specaug=specaug, normalize=normalize, encoder=encoder, preencoder=preencoder,
            decoder=decoder, losses=losses,
        )
        register_losses(self)

    @classmethod
    def from_model(cls, model: ESPnetASVSpoofModel) -> "SpooflossASVSpoofModel":
        """This model built from the parts (shared, not copied) of an ESPnetASVSpoofModel."""
        return cls(
            frontend=model.frontend, specaug=model.specaug, normalize=model.normalize, encoder=model.encoder,
            preencoder=model.preencoder, decoder=model.decoder, losses=dict(model.losses),
        )

    @property
    def trained_loss_name(self) -> str:
        """The key of the loss that forward trains (ESPnet's order of preference)."""
        return next(name for name in loss_precedence() if name in self.losses)

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: Optional[torch.Tensor] = None,
        label: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """speech [B, samples] (or [B, T, F] features without a frontend), label [B] or [B, 1]."""
        if label is None or speech.shape[0] != label.shape[0]:
            raise ValueError(f"label must have one entry per utterance: speech {tuple(speech.shape)}, "
                             f"label {None if label is None else tuple(label.shape)}")
        batch_size = speech.shape[0]
        encoder_out, encoder_out_lens = self.encode(speech, speech_lengths)

        name = self.trained_loss_name
        loss_fn = self.losses[name]
        if by_espnet_name()[name].family == "logits":
            pred = self.decoder(encoder_out, encoder_out_lens)
            loss = loss_fn(pred, label)
        elif isinstance(loss_fn, CosineMarginLoss):
            loss, pred = loss_fn.forward_and_score(label, encoder_out, encoder_out_lens)
        else:
            # some other AbsASVSpoofLoss under an AM/OC name: ESPnet's calls, scored by that same loss
            loss = loss_fn(label, encoder_out)
            pred = loss_fn.score(encoder_out)
        loss = loss * loss_fn.weight
        # ESPnet's accuracy stat, unchanged: score above 0.5 counts as bona fide (label 1)
        acc = torch.sum((pred.detach().reshape(-1) > 0.5) == (label.reshape(-1) > 0.5)) / batch_size

        stats = dict(loss=loss.detach(), acc=acc.detach())
        loss, stats, weight = force_gatherable((loss, stats, batch_size), loss.device)
        return loss, stats, weight
