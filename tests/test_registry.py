"""Every registered loss, through the registry (spoofloss.registry.LOSSES).

A loss added to the registry is tested here without editing this file: for
each loss and each of its registered configurations, the fused module against
its plain-PyTorch twin in float64 (loss under every reduction, score, and the
gradients of both with respect to the input and the learned centres),
gradcheck of forward and score, torch.compile(fullgraph=True) against eager,
and its registration (names, twin, ESPnet name).
"""

from __future__ import annotations

import pytest
import torch

import spoofloss
from spoofloss.registry import LOSSES

from conftest import assert_matches, make_lengths

pytestmark = pytest.mark.usefixtures("poison")

CASES = [pytest.param(name, variant, id=f"{name}-{variant or 'default'}")
         for name, spec in LOSSES.items() for variant in [None, *spec.variants]]
F64 = torch.float64


def labels_for(spec, module, batch: int) -> torch.Tensor:
    """Class indices [B] covering every class (the bona fide one included)."""
    classes = spec.label_classes(module)
    label = torch.randint(0, classes, (batch,))
    label[: min(batch, classes)] = torch.randperm(classes)[:batch]
    return label[torch.randperm(batch)]


def inputs_for(spec, module, batch=6, frames=7, dim=5, dtype=torch.float32, lengths=True, device="cpu"):
    """(forward positional args, score positional args, extra forward kwargs, the differentiable input)."""
    extra = spec.make_inputs(module, batch, None) if spec.make_inputs else {}
    extra = {k: v.to(device) for k, v in extra.items()}
    if spec.family == "logits":
        pred = (3 * torch.randn(batch, dtype=F64)).to(dtype).to(device).requires_grad_()
        label = labels_for(spec, module, batch).to(device)
        return (pred, label), (pred,), extra, pred
    emb = torch.randn(batch, frames, dim, dtype=F64).to(dtype).to(device).requires_grad_()
    lens = make_lengths(batch, frames, device=device) if lengths else None
    label = labels_for(spec, module, batch).to(device)
    return (label, emb, lens), (emb, lens), extra, emb


def as_float64(args):
    return tuple(a.detach().double().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
                 else a for a in args)


def parameters(module):
    return list(module.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16], ids=["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name,variant", CASES)
def test_fused_equals_reference(name, variant, reduction, dtype, device):
    spec = LOSSES[name]
    fused, twin = spec.build(variant, enc_dim=5, reduction=reduction)
    fused, twin = fused.to(device), twin.double()
    forward_args, score_args, extra, x = inputs_for(spec, fused, dtype=dtype, device=device)
    loss = fused(*forward_args, **extra)
    score = fused.score(*score_args)
    up_loss, up_score = torch.rand_like(loss) + 0.5, torch.rand_like(score) + 0.5
    wrt = [x] + parameters(fused)
    g_loss = torch.autograd.grad(loss, wrt, up_loss, retain_graph=True)
    g_score = torch.autograd.grad(score, wrt, up_score)

    ref_forward = as_float64(tuple(a.cpu() if isinstance(a, torch.Tensor) else a for a in forward_args))
    x64 = next(a for a in ref_forward if isinstance(a, torch.Tensor) and a.requires_grad)
    ref_extra = {k: v.cpu() for k, v in extra.items()}
    ref_loss = twin(*ref_forward, **ref_extra)
    ref_score_args = tuple(x64 if a is x else (a.cpu() if isinstance(a, torch.Tensor) else a) for a in score_args)
    ref_score = twin.score(*ref_score_args)
    ref_wrt = [x64] + parameters(twin)
    r_loss = torch.autograd.grad(ref_loss, ref_wrt, up_loss.cpu().double(), retain_graph=True, allow_unused=True)
    r_score = torch.autograd.grad(ref_score, ref_wrt, up_score.cpu().double(), allow_unused=True)

    what = f"{name} {variant or 'default'} {reduction}"
    assert_matches(loss, ref_loss, dtype=F64 if dtype == F64 else torch.float32 if dtype == torch.float32 else dtype,
                   what=f"{what} loss")
    assert_matches(score, ref_score, dtype=dtype if dtype != torch.bfloat16 else dtype, what=f"{what} score")
    for k, (got, want) in enumerate(zip(g_loss, r_loss)):
        assert_matches(got, torch.zeros_like(got, dtype=F64) if want is None else want, what=f"{what} d loss / d input {k}")
    for k, (got, want) in enumerate(zip(g_score, r_score)):
        assert_matches(got, torch.zeros_like(got, dtype=F64) if want is None else want, what=f"{what} d score / d input {k}")


class _Score(torch.nn.Module):
    """The score of a loss module as a module's forward (for functional_call)."""

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, *args):
        return self.loss.score(*args)


@pytest.mark.parametrize("name,variant", CASES)
def test_gradcheck(name, variant, device):
    """Forward and score, with respect to the input and every parameter, float64."""
    spec = LOSSES[name]
    fused, _ = spec.build(variant, enc_dim=4, reduction="none")
    fused = fused.to(device).double()
    forward_args, score_args, extra, x = inputs_for(spec, fused, batch=4, frames=3, dim=4, dtype=F64, device=device)
    for module, args, kwargs, prefix in ((fused, forward_args, extra, ""), (_Score(fused), score_args, {}, "loss.")):
        names = [prefix + n for n, _ in fused.named_parameters()]

        def fn(x_in, *params, module=module, args=args, kwargs=kwargs, names=names):
            call = tuple(x_in if a is x else a for a in args)
            return torch.func.functional_call(module, dict(zip(names, params)), call, kwargs)

        inputs = (x.detach().requires_grad_(),) + tuple(p.detach().clone().requires_grad_() for p in fused.parameters())
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,variant", CASES)
def test_compiled_equals_eager(name, variant, device):
    spec = LOSSES[name]
    fused, _ = spec.build(variant, enc_dim=6)
    fused = fused.to(device)
    forward_args, score_args, extra, x = inputs_for(spec, fused, batch=5, frames=4, dim=6, device=device)

    def step(forward_args, score_args):
        return fused(*forward_args, **extra), fused.score(*score_args)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager = step(forward_args, score_args)
    got = compiled(forward_args, score_args)
    for g, e, what in zip(got, eager, ("loss", "score")):
        assert torch.equal(g, e), f"{name} {variant}: compiled {what} differs from eager"


@pytest.mark.parametrize("name", list(LOSSES))
def test_registration(name):
    spec = LOSSES[name]
    fused, twin = spec.build(None, enc_dim=8)
    assert isinstance(fused, spoofloss.AbsASVSpoofLoss)
    assert fused.name == spec.espnet_name == twin.name
    assert type(fused).__name__ == type(twin).__name__ == spec.reference
    assert fused.state_dict().keys() == twin.state_dict().keys()
    assert getattr(spoofloss, type(fused).__name__) is spec.module, "the module is exported by the package"
    for variant in spec.variants:
        spec.build(variant, enc_dim=8)  # every registered configuration constructs
