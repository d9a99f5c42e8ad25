"""The tolerance policy (helpers.tolerance, helpers.steps) can fail: deliberately
broken versions of every registered loss are caught by the very comparison the
suite runs (helpers.steps.check_step), while the real modules pass it.

The atol scales are derived from the float64 reference by autograd, per
element (d output / d cos for the cosine losses, confidently wrong logits for
the logit losses), not set per loss. Derived per element, they are tightest
where an output is small: inputs trained until every utterance is well
classified, where a loss of 1e-8 must keep its digits. So each break runs on
such inputs and on random ones. One of them, a loss computed against a term of
size 20 in float32 (a cancellation that loses every digit below 2e-6),
passes the policy this suite had before (atol from the scale 20 for every
utterance) and is caught by the derived one; the test shows both.
"""

from __future__ import annotations

import functools

import pytest
import torch

from helpers.inputs import cpu
from helpers.losses import LossCall, build, configurations, make_call
from helpers.steps import check_step, expected_step
from helpers.tolerance import assert_matches

pytestmark = pytest.mark.usefixtures("poison")

F64 = torch.float64


def well_classified(twin, call: LossCall, steps: int = 150, most_steps: int = 1000) -> LossCall:
    """``call`` with its input moved by Adam on the twin's loss until the
    utterances are well classified (small losses, small derivatives): ``steps``
    steps, and more (up to ``most_steps``) while an utterance's loss is still
    above 0.05 (SAMO pushes a spoof utterance from one centre at a time)."""
    ref = call.in_float64()
    x = ref.x.detach().clone().requires_grad_()
    optimiser = torch.optim.Adam([x], lr=0.05)
    for step in range(most_steps):
        optimiser.zero_grad()
        losses = ref.with_input(x).forward(twin)
        if step >= steps and losses.detach().abs().max() < 0.05:
            break
        losses.sum().backward()
        optimiser.step()
    moved = x.detach().to(call.x.dtype).to(call.x.device)
    return call.with_input(moved.requires_grad_())


class _Defect(torch.autograd.Function):
    """Identity forward; a broken backward."""

    @staticmethod
    def forward(ctx, out, kind):
        ctx.kind = kind
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        if ctx.kind == "ignored upstream":
            return torch.ones_like(grad), None
        if ctx.kind == "unwritten element":
            grad = grad.clone()
            grad.view(-1)[0] = float("nan")
            return grad, None
        return grad.to(torch.bfloat16).to(grad.dtype), None  # "gradient rounded to bfloat16"


def defective_backward(kind: str):
    """The output through _Defect of ``kind`` (positional: Function.apply takes
    no keyword arguments before torch 2.13)."""
    return lambda out: _Defect.apply(out, kind)


def cancelled(out):
    """The loss computed against a term of size 20 in float32: digits below ~2e-6 lost."""
    return ((out.float() + 20.0) - 20.0).to(out.dtype)


def one_part_in_1e4(out):
    """The largest element off by a relative 1e-4 (the smallest ones of a well
    trained P2SGrad, ~1e-7, are below what float32 cosines resolve)."""
    out = out.clone()
    out.view(-1)[out.detach().abs().argmax()] *= 1 + 1e-4
    return out


BREAKS = {
    "loss cancelled against 20": ("forward", cancelled),
    "loss off by 1e-4 in one element": ("forward", one_part_in_1e4),
    "score off by 1e-4 in one element": ("score", one_part_in_1e4),
    "ignored upstream": ("forward", defective_backward("ignored upstream")),
    "unwritten element": ("forward", defective_backward("unwritten element")),
    "gradient rounded to bfloat16": ("forward", defective_backward("gradient rounded")),
}


def broken(module, method: str, defect):
    """``module`` with ``method`` (forward or score) passing its output through ``defect``."""
    original = getattr(module, method)

    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        return defect(original(*args, **kwargs))

    setattr(module, method, wrapped)
    return module


def inputs(name, variant, trained: bool, reduction: str):
    # D = 24 > 20 centres: SAMO's default centres are orthonormal, so that a
    # spoof utterance can lie away from every one of them
    fused, twin = build(name, variant, enc_dim=24, reduction=reduction)
    call = make_call(fused, 12, 9, 24)
    return fused, twin, (well_classified(twin, call) if trained else call)


@pytest.mark.parametrize("trained", [False, True], ids=["random", "well-classified"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("name,variant", configurations(variants=False))
def test_real_module_passes(name, variant, reduction, trained):
    fused, twin, call = inputs(name, variant, trained, reduction)
    check_step(fused, twin, call, f"{name} {reduction}")


@pytest.mark.parametrize("trained", [False, True], ids=["random", "well-classified"])
@pytest.mark.parametrize("defect", list(BREAKS))
@pytest.mark.parametrize("name,variant", configurations(variants=False))
def test_broken_module_fails(name, variant, defect, trained):
    if defect == "loss cancelled against 20" and not trained:
        pytest.skip("random inputs give losses of size 1-20, where that cancellation loses nothing visible")
    fused, twin, call = inputs(name, variant, trained, "none")
    method, change = BREAKS[defect]
    broken(fused, method, change)
    with pytest.raises(AssertionError, match="elements differ"):
        check_step(fused, twin, call, f"{name} with {defect}")


@pytest.mark.parametrize("name,variant", configurations("cosine", variants=False))
def test_cancellation_passes_the_former_scale(name, variant):
    """The former policy gave every loss element of a cosine loss the atol
    scale max(20, |loss|) (AM's s and OC's alpha): the cancelled loss of well
    classified utterances passes it, so it could not see the defect above."""
    fused, twin, call = inputs(name, variant, True, "none")
    loss = cancelled(call.forward(fused))
    up = torch.ones_like(loss)
    expected, _ = expected_step(fused, twin, call, up, torch.ones(call.x.shape[0]))["loss"]
    assert expected.abs().max() < 0.1, "the inputs were not trained to small losses"
    assert_matches(loss, expected, what="cancelled loss, former scale", scale=max(20.0, cpu(expected).abs().max()))
