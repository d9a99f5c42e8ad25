"""The registered losses (spoofloss.registry.LOSSES) as test cases.

Nothing here names a loss: a test parametrised with ``configurations()`` runs
every registered loss (and, where it asks, every registered variant), built by
``build`` as a fused module with its float64 twin from spoofloss.reference,
and called through ``LossCall``, which knows the two call forms of the
families:

* "cosine": forward(label, emb, lengths, **extra), score(emb, lengths), the
  centres a parameter named by the module's ``centers_name``;
* "logits": forward(pred, label, **extra), score(pred).

``extra`` holds the further forward arguments a loss takes (spec.make_inputs,
e.g. a centre index per utterance); a score or forward_and_score receives
those of them its signature names.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Optional

import pytest
import torch

from spoofloss.registry import LOSSES, LossSpec

from .inputs import cpu, f64, label_as, make_emb, make_labels, make_lengths, randn

FAMILIES = ("cosine", "logits")


def names(family: Optional[str] = None) -> list[str]:
    """The registered loss names (of one family)."""
    return [name for name, spec in LOSSES.items() if family in (None, spec.family)]


def configurations(family: Optional[str] = None, variants: bool = True) -> list:
    """pytest params (name, variant) of every registered loss of ``family``:
    its default configuration (variant None) and, with ``variants``, each of
    its registered variants."""
    params = []
    for name in names(family):
        for variant in [None, *LOSSES[name].variants] if variants else [None]:
            params.append(pytest.param(name, variant, id=name if variant is None else f"{name}-{variant}"))
    return params


def build(name: str, variant: Optional[str] = None, *, enc_dim: Optional[int] = None, device="cpu",
          parameter_dtype: torch.dtype = torch.float32, **kwargs):
    """(fused module on ``device`` with parameters of ``parameter_dtype``, its
    float64 twin from spoofloss.reference holding the same parameter values),
    for the variant's constructor arguments updated with kwargs."""
    spec = LOSSES[name]
    if enc_dim is not None and spec.family == "cosine":
        kwargs["enc_dim"] = enc_dim
    fused, twin = spec.build(variant, **kwargs)
    fused = fused.to(device=device, dtype=parameter_dtype)
    twin = twin.double()
    twin.load_state_dict(fused.state_dict())
    return fused, twin


def twin_of(module: torch.nn.Module) -> torch.nn.Module:
    """The float64 twin of a live fused module (one built elsewhere, e.g. by
    ESPnet's task): the twin class built with the module's hyper-parameters
    (its constructor arguments, read back from the attributes of the same
    names), holding the module's parameter values."""
    spec = spec_of(module)
    twin_class = spec.reference_class()
    arguments = {}
    for name in inspect.signature(twin_class.__init__).parameters:
        value = getattr(module, name, None)
        if name != "self" and value is not None and not callable(value):
            arguments[name] = value
    if spec.family == "cosine":
        arguments["enc_dim"] = centres_of(module).shape[1]
    twin = twin_class(**arguments).double()
    twin.load_state_dict(module.state_dict())
    return twin


def centres_of(module: torch.nn.Module) -> torch.Tensor:
    """The centre parameter of a cosine-family module (fused or twin: same names)."""
    return getattr(module, module.centers_name) if hasattr(module, "centers_name") else \
        getattr(module, _twin_centres_name(module))


def _twin_centres_name(module) -> str:
    fused = next(spec.module for spec in LOSSES.values() if spec.reference == type(module).__name__)
    return fused.centers_name


def spec_of(module: torch.nn.Module) -> LossSpec:
    """The registry entry of a fused module (or of a subclass of one, e.g. spoofloss.espnet's)."""
    for spec in LOSSES.values():
        if isinstance(module, spec.module):
            return spec
    raise LookupError(f"{type(module).__name__} is not a registered loss")


def accepted(method, kwargs: dict) -> dict:
    """The entries of ``kwargs`` that ``method``'s signature names."""
    parameters = inspect.signature(method).parameters
    return {k: v for k, v in kwargs.items() if k in parameters}


@dataclass
class LossCall:
    """The arguments of one call of a loss module (forward and score)."""

    family: str
    x: torch.Tensor  # emb [B, T, D] / [B, D] (cosine) or pred (logits): the differentiable input
    label: torch.Tensor
    lengths: Optional[torch.Tensor] = None
    extra: dict = field(default_factory=dict)  # further forward keyword arguments

    @property
    def input_name(self) -> str:
        return "emb" if self.family == "cosine" else "pred"

    def forward(self, module):
        if self.family == "cosine":
            return module(self.label, self.x, self.lengths, **self.extra)
        return module(self.x, self.label, **self.extra)

    def score(self, module):
        extra = accepted(module.score, self.extra)
        if self.family == "cosine":
            return module.score(self.x, self.lengths, **extra)
        return module.score(self.x, **extra)

    def forward_and_score(self, module):
        """(loss, score) from the cosine modules' one-pass forward_and_score."""
        return module.forward_and_score(self.label, self.x, self.lengths,
                                        **accepted(module.forward_and_score, self.extra))

    def with_input(self, x: torch.Tensor) -> "LossCall":
        return replace(self, x=x)

    def in_float64(self) -> "LossCall":
        """The same call on the CPU with x as an exact float64 upcast (a leaf
        requiring grad): what the reference runs on."""
        return LossCall(self.family, f64(self.x), cpu(self.label), cpu(self.lengths),
                        {k: cpu(v) if isinstance(v, torch.Tensor) else v for k, v in self.extra.items()})


def logits_per_utterance(name: str, variant: Optional[str] = None) -> int:
    """How many logits a registered logit loss reads per utterance in this
    configuration (its ``num_logits`` argument; 1 when it has none)."""
    kwargs = LOSSES[name].variants[variant] if variant is not None else {}
    default = inspect.signature(LOSSES[name].module.__init__).parameters.get("num_logits")
    return int(kwargs.get("num_logits", default.default if default is not None else 1))


def make_call(module: torch.nn.Module, batch: int, frames: Optional[int] = None, dim: Optional[int] = None, *,
              dtype: torch.dtype = torch.float32, device="cpu", layout: str = "contiguous", lengths="int64",
              label_shape: str = "B", label_dtype: torch.dtype = torch.int64, pred_shape=None,
              labels: Optional[torch.Tensor] = None) -> LossCall:
    """Random inputs for ``module`` (a registered loss, fused).

    cosine: emb [B, T, D] (frames None: [B, D]) of ``dtype`` in ``layout``
    (helpers.inputs.make_emb), ``lengths`` "int64" / "int32" / None, labels
    covering every class the module knows; logits: pred of ``pred_shape``
    (default [B]) with logits of size ~3, 0/1 labels with its element count.
    ``labels`` (class indices) replaces the drawn ones."""
    spec = spec_of(module)
    extra = spec.make_inputs(module, batch, None) if spec.make_inputs else {}
    extra = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in extra.items()}
    if spec.family == "logits":
        # a module that reads several logits per utterance says how many (num_logits): pred [B, num_logits],
        # one label per utterance
        num_logits = int(getattr(module, "num_logits", 1))
        shape = pred_shape or ((batch,) if num_logits == 1 else (batch, num_logits))
        label_shape_of_pred = shape if num_logits == 1 else shape[:-1]
        pred = (3 * randn(*shape, dtype=torch.float64)).to(dtype).to(device).requires_grad_()
        if labels is None:
            count = 1
            for size in label_shape_of_pred:
                count *= size
            labels = make_labels(count, spec.label_classes(module)).reshape(label_shape_of_pred)
        return LossCall("logits", pred, label_as(labels, label_shape, label_dtype, device), None, extra)
    emb = make_emb(batch, frames, dim, dtype, device, layout)
    lens = None
    if lengths is not None and frames is not None:
        lens = make_lengths(batch, frames, dtype=getattr(torch, lengths), device=device)
    if labels is None:
        labels = make_labels(batch, spec.label_classes(module))
    return LossCall("cosine", emb, label_as(labels, label_shape, label_dtype, device), lens, extra)
