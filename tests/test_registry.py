"""The registry itself (spoofloss.registry.LOSSES): each registered loss is
exported, named and built as it says, and its module is differentiable as
gradcheck sees it, for every registered configuration.

Every other test that iterates the registry compares the loss with its twin:
test_losses.py (values and gradients, float64 reference), test_modules.py
(API), test_compile.py, test_autocast.py, test_cuda_graphs.py, test_ddp.py,
test_properties.py, test_accuracy.py, test_espnet_model.py; the benchmarks,
the demo and spoofloss.espnet_train iterate it too.
"""

from __future__ import annotations

import pytest
import torch

import spoofloss
from spoofloss.registry import FAMILIES, LOSSES, by_espnet_name

from helpers.losses import LossCall, build, centres_of, configurations, make_call
from helpers.op_args import gradcheck_fast_mode

F64 = torch.float64


@pytest.mark.parametrize("name", list(LOSSES))
def test_registration(name):
    spec = LOSSES[name]
    assert spec.name == name and spec.family in FAMILIES
    fused, twin = spec.build(None, enc_dim=8)
    assert isinstance(fused, spoofloss.AbsASVSpoofLoss)
    assert fused.name == spec.espnet_name == twin.name
    assert type(fused).__name__ == type(twin).__name__ == spec.reference
    assert fused.state_dict().keys() == twin.state_dict().keys()
    assert getattr(spoofloss, type(fused).__name__) is spec.module, "the module is exported by the package"
    assert by_espnet_name()[spec.espnet_name] is spec
    for variant in spec.variants:
        spec.build(variant, enc_dim=8)  # every registered configuration constructs


class _Score(torch.nn.Module):
    """The score of a loss module as a module's forward (for functional_call)."""

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, *args, **kwargs):
        return self.loss.score(*args, **kwargs)


@pytest.mark.parametrize("name,variant", configurations())
def test_gradcheck(name, variant, device):
    """Forward and score, with respect to the input and every parameter, float64."""
    fused, _ = build(name, variant, enc_dim=4, device=device, parameter_dtype=F64, reduction="none")
    call = make_call(fused, 4, 3, 4, dtype=F64, device=device)
    for module, prefix, run in ((fused, "", LossCall.forward), (_Score(fused), "loss.", LossCall.score)):
        param_names = [prefix + n for n, _ in fused.named_parameters()]

        def fn(x, *params, module=module, run=run, param_names=param_names):
            holder = _Functional(module, dict(zip(param_names, params)))
            return run(call.with_input(x), holder)

        inputs = (call.x.detach().requires_grad_(),) + tuple(
            p.detach().clone().requires_grad_() for p in fused.parameters())
        centres = centres_of(fused).shape[0] if LOSSES[name].family == "cosine" else 0
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, fast_mode=gradcheck_fast_mode(centres))


class _Functional:
    """``module`` called with the given parameters (torch.func.functional_call),
    with the score method of a loss module."""

    def __init__(self, module, params):
        self.module, self.params = module, params

    def __call__(self, *args, **kwargs):
        return torch.func.functional_call(self.module, self.params, args, kwargs)

    def score(self, *args, **kwargs):
        return torch.func.functional_call(self.module, self.params, args, kwargs)
