"""ESPnet's asvspoof training with spoofloss's losses, ESPnet's files untouched.

    python -m spoofloss.espnet_train --config conf/train_asvspoof.yaml ...

takes the arguments of ``python -m espnet2.bin.asvspoof_train``. Before the
task builds its model, the loss names of the task's ``losses`` choices
(binary_loss, am_softmax_loss, oc_softmax_loss; a config's ``losses: - name:``)
are made to resolve to spoofloss's classes, and the model built is a
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


def register_loss_choices() -> None:
    """Make the asvspoof task's loss names resolve to spoofloss's classes.

    Replaces ESPnet's three entries in ``espnet2.tasks.asvspoof.losses_choices``
    for this process (ESPnet's AM- and OC-softmax cannot be constructed in
    espnet 202511, so nothing that worked is lost). The names stay ESPnet's,
    because ESPnetASVSpoofModel picks its loss by them. Safe to call again.
    """
    register_with_espnet()
    asvspoof_task.losses_choices.classes.update(ESPNET_LOSS_CLASSES)


class SpooflossASVSpoofTask(ASVSpoofTask):
    """ESPnet's ASVSpoofTask, building a SpooflossASVSpoofModel with spoofloss's losses.

    Use it for inference too (``build_model_from_file``): ESPnet's task builds
    a model without the ``losses.*`` parameters and, loading with
    strict=False, would silently leave the trained centres behind.
    """

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> SpooflossASVSpoofModel:
        register_loss_choices()
        return SpooflossASVSpoofModel.from_model(super().build_model(args))


def main(cmd: Optional[Sequence[str]] = None) -> None:
    SpooflossASVSpoofTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
