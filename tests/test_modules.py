"""Module-level API of every registered loss and of its twin in
spoofloss.reference: the same constructor, name, weight, parameters and their
dtypes, device moves and casts, and the abstract base class. (Their values are
compared in test_losses.py; each loss's own defaults in test_<loss>.py.)"""

from __future__ import annotations

import inspect

import pytest
import torch

import spoofloss
from spoofloss.registry import LOSSES

from helpers.losses import build, centres_of, configurations, make_call, names

pytestmark = pytest.mark.usefixtures("poison")


def _defaults(cls):
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items() if n != "self"}


@pytest.mark.parametrize("name", names())
def test_module_and_twin_share_the_constructor(name):
    spec = LOSSES[name]
    fused, twin = spec.module, spec.reference_class()
    assert list(_defaults(fused).items()) == list(_defaults(twin).items()), "constructor arguments (order, defaults)"
    assert "weight" in _defaults(fused) and "reduction" in _defaults(fused)


@pytest.mark.parametrize("name,variant", configurations())
def test_names_weight_and_parameters(name, variant):
    spec = LOSSES[name]
    fused, twin = spec.build(variant)
    assert isinstance(fused, spoofloss.AbsASVSpoofLoss) and isinstance(twin, torch.nn.Module)
    assert fused.name == twin.name == spec.espnet_name
    assert fused.weight == twin.weight == 1.0
    assert spec.build(variant, weight=0.25)[0].weight == 0.25
    shapes = {k: tuple(v.shape) for k, v in fused.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    for param in fused.parameters():
        assert isinstance(param, torch.nn.Parameter) and param.requires_grad and param.dtype == torch.float32
    if spec.family == "cosine":
        assert centres_of(fused).dim() == 2 and centres_of(fused).shape[0] >= 1


@pytest.mark.parametrize("name", names("cosine"))
def test_enc_dim(name):
    for module in LOSSES[name].build(None, enc_dim=40):
        assert centres_of(module).shape[1] == 40


def test_abstract_base():
    base = spoofloss.AbsASVSpoofLoss
    assert issubclass(base, torch.nn.Module)
    with pytest.raises(TypeError):
        base()

    class NoScore(base):
        @property
        def name(self):
            return "x"

        def forward(self, a, b):
            return a

    class NoName(base):
        def forward(self, a, b):
            return a

        def score(self, a):
            return a

    class Complete(base):
        def __init__(self):
            super().__init__()
            self.weight = 2.0

        @property
        def name(self):
            return "complete"

        def forward(self, a, b):
            return a

        def score(self, a):
            return a

    with pytest.raises(TypeError):
        NoScore()
    try:
        incomplete = NoName()
    except TypeError:
        pass  # name is abstract: instantiation refused
    else:
        with pytest.raises(NotImplementedError):
            incomplete.name  # noqa: B018
    done = Complete()
    assert done.name == "complete" and done.weight == 2.0


@pytest.mark.parametrize("name,variant", configurations(variants=False))
def test_module_moves_and_casts(name, variant, device):
    loss, _ = build(name, variant, enc_dim=16, device=device)
    for param in loss.parameters():
        assert param.device.type == device
    loss = loss.double()
    for param in loss.parameters():
        assert param.dtype == torch.float64
    out = make_call(loss, 4, 5, 16, dtype=torch.float64, device=device).forward(loss)
    assert out.dtype == torch.float64 and out.device.type == device
