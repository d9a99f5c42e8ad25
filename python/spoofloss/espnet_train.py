"""ESPnet's asvspoof training with spoofloss's losses, ESPnet's files untouched.

    python -m spoofloss.espnet_train --config conf/train_asvspoof.yaml ...

takes the arguments of ``python -m espnet2.bin.asvspoof_train``. Before the
task builds its model, the loss names of the task's ``losses`` choices (a
config's ``losses: - name:``) are made to resolve to spoofloss's classes: every
loss of spoofloss.registry under its ESPnet name (``binary_loss``,
``am_softmax_loss``, ``oc_softmax_loss`` with ESPnet's constructors from
spoofloss.espnet; the other registered losses, e.g. ``aam_softmax_loss``, with
their own), and the model built is a
``spoofloss.espnet_model.SpooflossASVSpoofModel``.

This module imports espnet2.tasks.asvspoof, and with it most of ESPnet's
training stack (librosa, torchaudio, the text front-ends, ...).
"""

import argparse
from typing import Optional, Sequence

import espnet2.tasks.asvspoof as asvspoof_task
from espnet2.tasks.asvspoof import ASVSpoofTask

from .espnet import ESPNET_LOSS_CLASSES, register_with_espnet
from .espnet_model import SpooflossASVSpoofModel
from .registry import LOSSES, by_espnet_name


def loss_classes() -> dict:
    """Config name -> class: every registered loss under its ESPnet name, ESPnet's
    own three as spoofloss.espnet's ESPnet-compatible classes."""
    classes = {spec.espnet_name: spec.module for spec in LOSSES.values()}
    classes.update(ESPNET_LOSS_CLASSES)
    return classes


def register_loss_choices() -> None:
    """Make the asvspoof task's loss names resolve to spoofloss's classes.

    Replaces ESPnet's three entries in ``espnet2.tasks.asvspoof.losses_choices``
    for this process (ESPnet's AM- and OC-softmax cannot be constructed in
    espnet 202511, so nothing that worked is lost) and adds every other
    registered loss. The names are the ESPnet names, because
    ESPnetASVSpoofModel picks its loss by them. Safe to call again.
    """
    register_with_espnet()
    asvspoof_task.losses_choices.classes.update(loss_classes())


class SpooflossASVSpoofTask(ASVSpoofTask):
    """ESPnet's ASVSpoofTask, building a SpooflossASVSpoofModel with spoofloss's losses.

    Use it for inference too (``build_model_from_file``): ESPnet's task builds
    a model without the ``losses.*`` parameters and, loading with
    strict=False, would silently leave the trained centres behind.
    """

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> SpooflossASVSpoofModel:
        register_loss_choices()
        model = super().build_model(args)
        # ESPnet's task gives enc_dim (the encoder's output size) only to losses whose
        # name contains "softmax"; a registered loss with centres under another name
        # is built again with it.
        enc_dim = model.encoder.output_size()
        for config in getattr(args, "losses", None) or []:
            spec = by_espnet_name().get(config["name"])
            if spec is not None and spec.family == "cosine" and "softmax" not in config["name"]:
                model.losses[config["name"]] = loss_classes()[config["name"]](enc_dim=enc_dim, **config["conf"])
        return SpooflossASVSpoofModel.from_model(model)


def main(cmd: Optional[Sequence[str]] = None) -> None:
    SpooflossASVSpoofTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
