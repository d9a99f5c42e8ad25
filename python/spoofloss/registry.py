"""Every loss of spoofloss, declared once for the Python side.

A loss module registers itself where it is defined, with the decorator
``register``: its plain-PyTorch twin in ``spoofloss.reference`` (same
constructor, same parameter names), the name an ESPnet config gives it, and the
configurations worth testing. The test suite, the benchmarks, the demo and
``spoofloss.espnet_train`` iterate over ``LOSSES``: a loss added here is in all
of them without editing any. (The C++ side declares the cosine-margin losses
in csrc/cosine_losses.h; spoofloss.ops reads their codes from the library.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

FAMILIES = ("cosine", "logits")


@dataclass(frozen=True)
class LossSpec:
    """How to build, feed and check one loss.

    family: "cosine" (forward(label, emb, lengths), score(emb, lengths), learned
        centres) or "logits" (forward(pred, label), score(pred)).
    reference: the name of its twin class in spoofloss.reference.
    espnet_name: its name in an ESPnet config's ``losses`` list.
    variants: name -> constructor arguments of configurations the tests run
        besides the defaults (e.g. more classes, another score rule).
    make_inputs: for losses whose forward takes more than the family's
        arguments: (module, batch, generator) -> extra forward keyword
        arguments (tensors on the CPU); None for none.
    """

    name: str
    module: type
    family: str
    reference: str
    espnet_name: str
    variants: dict = field(default_factory=dict)
    make_inputs: Optional[Callable] = None

    def reference_class(self) -> type:
        from . import reference

        return getattr(reference, self.reference)

    def build(self, variant: Optional[str] = None, **kwargs):
        """(fused module, reference module with the same parameters), for the
        variant's constructor arguments updated with kwargs (e.g. enc_dim)."""
        args = dict(self.variants[variant]) if variant else {}
        args.update(kwargs)
        if self.family == "logits":
            args.pop("enc_dim", None)
        fused = self.module(**args)
        twin = self.reference_class()(**args)
        twin.load_state_dict(fused.state_dict())
        return fused, twin

    def label_classes(self, module: torch.nn.Module) -> int:
        """How many classes a label of this module may name."""
        return int(getattr(module, "num_classes", 2))


LOSSES: dict[str, LossSpec] = {}


def register(*, name: str, family: str, reference: str, espnet_name: str, variants: Optional[dict] = None,
             make_inputs: Optional[Callable] = None):
    """Class decorator: registers the loss module it decorates under ``name``."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def decorate(cls):
        if name in LOSSES:
            raise ValueError(f"a loss named {name!r} is registered already ({LOSSES[name].module.__name__})")
        LOSSES[name] = LossSpec(name, cls, family, reference, espnet_name, dict(variants or {}), make_inputs)
        return cls

    return decorate


def by_espnet_name() -> dict[str, LossSpec]:
    return {spec.espnet_name: spec for spec in LOSSES.values()}
