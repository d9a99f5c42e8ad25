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

import spoofloss
from spoofloss import reference as R

from conftest import (
    assert_identical,
    assert_matches,
    cpu,
    dloss_dcos,
    f64,
    make_labels,
    make_lengths,
    natural_scales,
    randn,
)
from hardening_helpers import AM, MEAN, NONE, OC, RED_NAMES, loss_op, score_op

pytestmark = pytest.mark.usefixtures("poison")


def op_inputs(epilogue, device, batch=7, frames=9, dim=11, rank=3, with_lengths=True, dtype=torch.float32):
    shape = (batch, frames, dim) if rank == 3 else (batch, dim)
    emb = randn(*shape, dtype=dtype, device=device).requires_grad_()
    centers = randn(2 if epilogue == AM else 1, dim, device=device).requires_grad_()
    label = make_labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device) if (with_lengths and rank == 3) else None
    return emb, centers, label, lengths


def margins(epilogue):
    return (20.0, 0.5, 0.5) if epilogue == AM else (20.0, 0.5, 0.2)


def reference_outputs(epilogue, e64, c64, label, lengths, bonafide_label, reduction):
    red = RED_NAMES[reduction]
    if epilogue == AM:
        loss = R.am_softmax_loss(label, e64, c64, lengths, s=20.0, m=0.5, reduction=red)
        score = R.am_softmax_score(e64, c64, lengths, bonafide_label=bonafide_label)
    else:
        loss = R.oc_softmax_loss(label, e64, c64, lengths, bonafide_label=bonafide_label, reduction=red)
        score = R.oc_softmax_score(e64, c64, lengths)
    return loss, score


@pytest.mark.parametrize("use", ["score", "loss+score"])
@pytest.mark.parametrize("form", ["lengths", "all-frames", "rank2"])
@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("epilogue", [AM, OC], ids=["am", "oc"])
def test_loss_op_score_gradient(epilogue, bonafide_label, form, use, device):
    emb, centers, label, lengths = op_inputs(epilogue, device, rank=2 if form == "rank2" else 3,
                                             with_lengths=form == "lengths")
    loss, score, pooled = loss_op(
        emb, centers, label, lengths, epilogue, *margins(epilogue), bonafide_label, MEAN)
    assert score.requires_grad and not pooled.requires_grad
    up_score = torch.rand_like(score) + 0.5
    up_loss = torch.rand_like(loss) + 0.5
    outputs, upstream = ([score], [up_score]) if use == "score" else ([loss, score], [up_loss, up_score])
    g_emb, g_centers = torch.autograd.grad(outputs, [emb, centers], upstream)

    e64, c64, lab, lens = f64(emb), f64(centers), cpu(label), cpu(lengths)
    ref_loss, ref_score = reference_outputs(epilogue, e64, c64, lab, lens, bonafide_label, MEAN)
    ref_outputs = [ref_score] if use == "score" else [ref_loss, ref_score]
    r_emb, r_centers = torch.autograd.grad(ref_outputs, [e64, c64], [cpu(u).double() for u in upstream])
    # atol per element from the size of the terms (conftest.natural_scales), both parts
    cos = R._cosines(e64.detach(), c64.detach(), lens)
    center_index = bonafide_label if epilogue == AM else 0
    g_cos = dloss_dcos("score", cos, center_index, cpu(up_score), "none")
    if use == "loss+score":
        g_cos = g_cos.abs() + dloss_dcos("am" if epilogue == AM else "oc", cos, lab, cpu(up_loss), "mean",
                                         bonafide_label, 20.0, 0.5, 0.5 if epilogue == AM else 0.2).abs()
    emb_scale, centre_scale = natural_scales(g_cos, e64, c64, lens)
    assert_matches(g_emb, r_emb, what="d / d emb", scale=emb_scale)
    assert_matches(g_centers, r_centers, what="d / d centres", scale=centre_scale)


@pytest.mark.parametrize("epilogue", [AM, OC], ids=["am", "oc"])
def test_loss_op_score_gradient_equals_score_ops(epilogue, device):
    """Bit for bit: the loss op's score gradient is cosine_score's, both from
    the same kCosine backward on the same pooled."""
    emb, centers, label, lengths = op_inputs(epilogue, device)
    _, score, _ = loss_op(emb, centers, label, lengths, epilogue, *margins(epilogue),
                                                         1, NONE)
    own, _ = score_op(emb, centers, lengths, 1 if epilogue == AM else 0)
    up = torch.rand_like(score) + 0.5
    for got, want in zip(torch.autograd.grad(score, [emb, centers], up), torch.autograd.grad(own, [emb, centers], up)):
        assert_identical(got, want, "loss op's score gradient vs cosine_score's")


@pytest.mark.parametrize("kind", ["am", "oc"])
def test_forward_and_score_is_differentiable(kind, device):
    """CosineMarginLoss.forward_and_score no longer detaches: its score has the
    gradient of ``score``."""
    module = (spoofloss.AMSoftmaxLoss if kind == "am" else spoofloss.OCSoftmaxLoss)(enc_dim=11).to(device)
    emb, _, label, lengths = op_inputs(AM, device)
    _, score = module.forward_and_score(label, emb, lengths)
    up = torch.rand_like(score) + 0.5
    centers = module.centers if kind == "am" else module.center
    got = torch.autograd.grad(score, [emb, centers], up)
    want = torch.autograd.grad(module.score(emb, lengths), [emb, centers], up)
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


@pytest.mark.parametrize("epilogue", [AM, OC], ids=["am", "oc"])
def test_unused_score_costs_no_backward_pass(epilogue, device):
    emb, centers, label, lengths = op_inputs(epilogue, device)
    loss, score, _ = loss_op(
        emb, centers, label, lengths, epilogue, *margins(epilogue), 1, MEAN)
    with BackwardOpCounter() as counter:
        loss.backward()
    assert counter.calls == ["spoofloss._cosine_margin_loss_backward.default"], counter.calls
    loss, score, _ = loss_op(
        emb, centers, label, lengths, epilogue, *margins(epilogue), 1, MEAN)
    with BackwardOpCounter() as counter:
        score.sum().backward()
    assert counter.calls == ["spoofloss._cosine_margin_loss_backward.default"], counter.calls


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("epilogue", [AM, OC], ids=["am", "oc"])
def test_compiled_score_gradient(epilogue, device):
    """torch.compile(fullgraph=True) of a step returning the loss op's loss and
    score: AOTAutograd's backward gives the score its gradient, identical to eager."""
    emb, centers, label, lengths = op_inputs(epilogue, device)

    def step(emb, centers, label, lengths):
        loss, score, _ = loss_op(
            emb, centers, label, lengths, epilogue, *margins(epilogue), 0, MEAN)
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
