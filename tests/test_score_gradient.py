"""The score output of torch.ops.spoofloss.cosine_margin_loss is differentiable
(issue 10, item 2).

It used to carry a grad_fn and get a zero gradient: csrc/autograd.cpp called
mark_non_differentiable twice and the second call replaced the first. Now its
gradient is the cosine score's (the same as cosine_score's), alone or added to
the loss's, in eager mode and in compiled graphs; ``pooled`` stays
non-differentiable; and a backward that does not use the score pays for no
second backward pass.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers.inputs import cpu, f64, make_lengths, randn
from helpers.losses import build, centres_of, configurations, make_call
from helpers.op_args import MEAN, NONE, CosineOp, cosine_ops, loss_op, reference_loss, reference_score
from helpers.steps import cosine_gradient, natural_scales
from helpers.tolerance import assert_identical, assert_matches

pytestmark = pytest.mark.usefixtures("poison")


def op_inputs(op: CosineOp, device, batch=7, frames=9, dim=11, rank=3, with_lengths=True, dtype=torch.float32):
    shape = (batch, frames, dim) if rank == 3 else (batch, dim)
    emb = randn(*shape, dtype=dtype, device=device).requires_grad_()
    centers = randn(op.num_centers, dim, device=device).requires_grad_()
    label = op.labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device) if (with_lengths and rank == 3) else None
    return emb, centers, label, lengths, op.extra_inputs(batch, device)["center_index"]


@pytest.mark.parametrize("use", ["score", "loss+score"])
@pytest.mark.parametrize("form", ["lengths", "all-frames", "rank2"])
@pytest.mark.parametrize("op", cosine_ops())
def test_loss_op_score_gradient(op, form, use, device):
    emb, centers, label, lengths, center_index = op_inputs(op, device, rank=2 if form == "rank2" else 3,
                                                           with_lengths=form == "lengths")
    loss, score, pooled = loss_op(emb, centers, label, lengths, op, MEAN, center_index)
    assert score.requires_grad and not pooled.requires_grad
    up_score = torch.rand_like(score) + 0.5
    up_loss = torch.rand_like(loss) + 0.5
    outputs, upstream = ([score], [up_score]) if use == "score" else ([loss, score], [up_loss, up_score])
    g_emb, g_centers = torch.autograd.grad(outputs, [emb, centers], upstream)

    e64, c64, lab, lens, index = f64(emb), f64(centers), cpu(label), cpu(lengths), cpu(center_index)
    ref_loss = lambda: reference_loss(op, lab, e64, c64, lens, MEAN, index)  # noqa: E731
    ref_score = lambda: reference_score(op, e64, c64, lens, index)  # noqa: E731
    ref_outputs = [ref_score()] if use == "score" else [ref_loss(), ref_score()]
    r_emb, r_centers = torch.autograd.grad(ref_outputs, [e64, c64], [cpu(u).double() for u in upstream])
    # atol per element from the size of the terms (helpers.steps.natural_scales), both parts
    g_cos = cosine_gradient(ref_score, cpu(up_score).double()).abs()
    if use == "loss+score":
        g_cos = g_cos + cosine_gradient(ref_loss, cpu(up_loss).double()).abs()
    emb_scale, centre_scale = natural_scales(g_cos, e64, c64, lens)
    assert_matches(g_emb, r_emb, what="d / d emb", scale=emb_scale)
    assert_matches(g_centers, r_centers, what="d / d centres", scale=centre_scale)


@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_loss_op_score_gradient_equals_score_ops(op, device):
    """Bit for bit: the loss op's score gradient is cosine_score's with the same
    score rule, both from the same backward on the same pooled."""
    emb, centers, label, lengths, center_index = op_inputs(op, device)
    _, score, _ = loss_op(emb, centers, label, lengths, op, NONE, center_index)
    own, _ = torch.ops.spoofloss.cosine_score(emb, centers, lengths, center_index, op.score_rule, op.score_center,
                                              op.scale)
    up = torch.rand_like(score) + 0.5
    for got, want in zip(torch.autograd.grad(score, [emb, centers], up), torch.autograd.grad(own, [emb, centers], up)):
        assert_identical(got, want, "loss op's score gradient vs cosine_score's")


@pytest.mark.parametrize("name,variant", configurations("cosine"))
def test_forward_and_score_is_differentiable(name, variant, device):
    """CosineMarginLoss.forward_and_score no longer detaches: its score has the
    gradient of ``score``."""
    module, _ = build(name, variant, enc_dim=11, device=device)
    call = make_call(module, 7, 9, 11, device=device)
    _, score = call.forward_and_score(module)
    up = torch.rand_like(score) + 0.5
    centers = centres_of(module)
    got = torch.autograd.grad(score, [call.x, centers], up)
    want = torch.autograd.grad(call.score(module), [call.x, centers], up)
    for g, w in zip(got, want):
        assert_identical(g, w, "forward_and_score's score gradient vs score's")


class BackwardOpCounter(TorchDispatchMode):
    """Counts the spoofloss backward ops (fused and composite) that run under it."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "backward" in str(func):
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_unused_score_costs_no_backward_pass(op, device):
    emb, centers, label, lengths, center_index = op_inputs(op, device)
    loss, score, _ = loss_op(emb, centers, label, lengths, op, MEAN, center_index)
    with BackwardOpCounter() as counter:
        loss.backward()
    assert counter.calls == ["spoofloss._cosine_margin_loss_backward.default"], counter.calls
    loss, score, _ = loss_op(emb, centers, label, lengths, op, MEAN, center_index)
    with BackwardOpCounter() as counter:
        score.sum().backward()
    assert counter.calls == ["spoofloss._cosine_margin_loss_backward.default"], counter.calls


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("op", cosine_ops())
def test_compiled_score_gradient(op, device):
    """torch.compile(fullgraph=True) of a step returning the loss op's loss and
    score: AOTAutograd's backward gives the score its gradient, identical to eager."""
    emb, centers, label, lengths, center_index = op_inputs(op, device)

    def step(emb, centers, label, lengths):
        loss, score, _ = loss_op(emb, centers, label, lengths, op, MEAN, center_index)
        return loss, score

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (compiled, step):
        loss, score = fn(emb, centers, label, lengths)
        up_loss, up_score = torch.full_like(loss, 0.75), torch.linspace(0.5, 1.5, score.numel(), device=device)
        grads = [torch.autograd.grad([score], [emb, centers], [up_score], retain_graph=True),
                 torch.autograd.grad([loss, score], [emb, centers], [up_loss, up_score])]
        results.append(grads)
    (c_score, c_both), (e_score, e_both) = results
    for got, want in zip(c_score + c_both, e_score + e_both, strict=True):
        assert_identical(got, want, "compiled vs eager score gradient")
    assert results[0][0][0].abs().sum() > 0
