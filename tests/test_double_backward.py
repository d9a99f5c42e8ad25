"""Double backward and gradient penalties through the ops (issue 10, item 3),
and soft labels that require a gradient (item 4).

``torch.autograd.grad(loss, W, create_graph=True)`` followed by a backward of
that gradient used to leave W.grad None (AM, OC, binary) or fail with
"appears to not have been used in the graph". Now a backward that records a
graph computes the first-order gradients from differentiable torch ops (the
*_backward_composite ops, spoofloss.reference's math); the first-order path
still runs the fused backward ops alone, and emb is not kept alive for it.

Checked against the float64 reference differentiated twice by autograd, with
an encoder weight W before the loss (so the second backward must reach emb's
producer) and the centres, and by gradgradcheck in float64.
"""

from __future__ import annotations

import pytest
import torch

from spoofloss import ops
from spoofloss import reference as R

from helpers.inputs import make_labels, make_lengths, randn
from helpers.losses import build, centres_of, configurations
from helpers.op_args import (
    MEAN, NONE, RED_NAMES, SCORE, SUM, CosineOp, cosine_ops, first_cosine_op, gradcheck_fast_mode, reference_loss,
    reference_score,
)
from helpers.tolerance import assert_matches
from test_score_gradient import BackwardOpCounter

F64 = torch.float64


def cosine_case(op, form, reduction, dtype=F64, batch=5, frames=6, feat=4, dim=7):
    """An encoder weight W [feat, D] making emb = x @ W from fixed features x.
    op: a CosineOp, or SCORE (the score op, two centres)."""
    x = randn(batch, frames, feat, dtype=dtype) if form != "rank2" else randn(batch, feat, dtype=dtype)
    W = randn(feat, dim, dtype=dtype).requires_grad_()
    centers = randn(2 if op == SCORE else op.num_centers, dim, dtype=dtype).requires_grad_()
    label = make_labels(batch) if op == SCORE else op.labels(batch)
    lengths = make_lengths(batch, frames) if form == "lengths" else None
    center_index = None if op == SCORE else op.extra_inputs(batch)["center_index"]
    return x, W, centers, label, lengths, center_index


def fused_outputs(op, x, W, centers, label, lengths, center_index, reduction, with_score):
    emb = x @ W
    if op == SCORE:
        return [ops.cosine_score(emb, centers, lengths, 1)]
    loss, score = ops.cosine_margin_loss_and_score(
        emb, centers, label, lengths, op.code, *op.margins(), reduction, op.score_rule, op.score_center, center_index)
    return [loss, score] if with_score else [loss]


def reference_outputs(op, x, W, centers, label, lengths, center_index, reduction, with_score):
    emb = x.double() @ W
    if op == SCORE:
        return [R.cosine_score("center_cosine", emb, centers, lengths, score_center=1)]
    loss = reference_loss(op, label, emb, centers, lengths, reduction, center_index)
    score = reference_score(op, emb, centers, lengths, center_index)
    return [loss, score] if with_score else [loss]


def second_order(outputs, W, centers, seed):
    """Gradients of a penalty on the first-order gradients (W's and the centres'),
    with respect to W and the centres."""
    gen = torch.Generator().manual_seed(seed)
    upstream = [torch.rand(o.shape, generator=gen, dtype=F64).to(o.dtype) + 0.5 for o in outputs]
    g_W, g_c = torch.autograd.grad(outputs, [W, centers], upstream, create_graph=True)
    v_W = torch.rand(g_W.shape, generator=gen, dtype=F64).to(g_W.dtype) - 0.5
    v_c = torch.rand(g_c.shape, generator=gen, dtype=F64).to(g_c.dtype) - 0.5
    penalty = (g_W * v_W).sum() + (g_c * v_c).sum() + (g_c ** 2).sum()
    return (g_W, g_c) + torch.autograd.grad(penalty, [W, centers])


NAMES = ("d / d W", "d / d centres", "d2 / d W", "d2 / d centres (via W's and the centres' gradients)")


@pytest.mark.parametrize("with_score", [False, True], ids=["loss", "loss+score"])
@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=["none", "mean", "sum"])
@pytest.mark.parametrize("form", ["lengths", "all-frames", "rank2"])
@pytest.mark.parametrize("op", cosine_ops() + [pytest.param(SCORE, id="score")])
def test_second_derivatives_match_reference(op, form, reduction, with_score):
    if op == SCORE and (reduction != NONE or with_score):
        pytest.skip("the score op has no reduction and no second output")
    op = op if op == SCORE else op.non_default()  # distinct margins, a small scale: no saturation
    x, W, centers, label, lengths, center_index = cosine_case(op, form, reduction)
    seed = 17 * (0 if op == SCORE else op.code) + reduction
    args = (x, W, centers, label, lengths, center_index, reduction, with_score)
    got = second_order(fused_outputs(op, *args), W, centers, seed)
    want = second_order(reference_outputs(op, *args), W, centers, seed)
    assert W.grad is None and centers.grad is None
    for name, g, w in zip(NAMES, got, want, strict=True):
        assert bool(w.abs().max() > 0), f"{name}: the reference is zero, the test would prove nothing"
        assert_matches(g, w, what=name)


@pytest.mark.parametrize("name,variant", configurations("cosine", variants=False))
def test_module_double_backward_fills_w_grad(name, variant):
    """The issue's reproduction: after create_graph=True, a backward of W's
    gradient fills W.grad (it used to stay None)."""
    module, ref_module = build(name, variant, enc_dim=7, parameter_dtype=F64)
    x, W, _, label, lengths, _ = cosine_case(CosineOp.of(name, variant), "lengths", MEAN)
    (g_W,) = torch.autograd.grad(module(label, x @ W, lengths), W, create_graph=True)
    g_W.pow(2).sum().backward()
    assert W.grad is not None and bool(W.grad.abs().max() > 0)
    W_ref = W.detach().clone().requires_grad_()
    (r_W,) = torch.autograd.grad(ref_module(label, x @ W_ref, lengths), W_ref, create_graph=True)
    r_W.pow(2).sum().backward()
    assert_matches(W.grad, W_ref.grad, what="d |dL/dW|^2 / d W")
    assert_matches(centres_of(module).grad, centres_of(ref_module).grad, what="d |dL/dW|^2 / d centres")


@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_float32_double_backward(op):
    """float32 (and a bfloat16 emb) through the composite: dtypes as the
    first-order path gives them, values near the float64 reference."""
    op = op.non_default()
    for emb_dtype in (torch.float32, torch.bfloat16):
        x, W, centers, label, lengths, center_index = cosine_case(op, "lengths", MEAN, dtype=torch.float32)
        centers64 = centers.detach().double().requires_grad_()
        W64 = W.detach().double().requires_grad_()
        emb = (x @ W).to(emb_dtype)
        loss = ops.cosine_margin_loss(emb, centers, label, lengths, op.code, *op.margins(), MEAN,
                                      op.score_rule, op.score_center, center_index)
        g_emb, g_c = torch.autograd.grad(loss, [emb, centers], create_graph=True)
        assert g_emb.dtype == emb_dtype and g_c.dtype == torch.float32
        (second,) = torch.autograd.grad(g_c.pow(2).sum() + g_emb.float().pow(2).sum(), [W])
        if emb_dtype != torch.float32:
            continue  # bfloat16: dtype check only (its rounding is not differentiable in the reference)
        emb64 = (x.double() @ W64).to(emb_dtype).double()
        ref = reference_loss(op, label, emb64, centers64, lengths, MEAN, center_index)
        r_emb, r_c = torch.autograd.grad(ref, [emb64, centers64], create_graph=True)
        (r_second,) = torch.autograd.grad(r_c.pow(2).sum() + r_emb.pow(2).sum(), [W64])
        assert_matches(second, r_second, dtype=torch.float32, what="float32 second derivative")


# --------------------------------------------------------------------------- #
# binary cross-entropy: second derivatives and soft labels that require a gradient
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("label_grad", [False, True], ids=["hard-label", "soft-label-grad"])
@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=["none", "mean", "sum"])
@pytest.mark.parametrize("bonafide_label", [0, 1])
def test_binary_second_derivatives(bonafide_label, reduction, label_grad):
    feat, batch = 4, 9
    x = randn(batch, feat, dtype=F64)
    W = randn(feat, 1, dtype=F64).requires_grad_()
    label = torch.rand(batch, 1, dtype=F64).requires_grad_() if label_grad else make_labels(batch).reshape(batch, 1)
    results = []
    for fn in (lambda p: ops.binary_cross_entropy(p, label, bonafide_label, reduction),
               lambda p: R.binary_loss(p, label, bonafide_label=bonafide_label, reduction=RED_NAMES[reduction])):
        out = fn(x @ W)
        up = torch.linspace(0.5, 1.5, out.numel(), dtype=F64).reshape(out.shape)
        inputs = [W, label] if label_grad else [W]
        first = torch.autograd.grad(out, inputs, up, create_graph=True)
        penalty = sum((g * torch.linspace(-1, 1, g.numel(), dtype=F64).reshape(g.shape)).sum() + g.pow(2).sum()
                      for g in first)
        results.append(first + torch.autograd.grad(penalty, inputs))
    for i, (g, w) in enumerate(zip(*results, strict=True)):
        assert bool(w.abs().max() > 0)
        assert_matches(g, w, what=f"binary gradient #{i}")


@pytest.mark.parametrize("pred_grad", [True, False], ids=["pred-grad", "pred-frozen"])
@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=["none", "mean", "sum"])
@pytest.mark.parametrize("bonafide_label", [0, 1])
def test_soft_label_gradient(bonafide_label, reduction, pred_grad, device):
    """label.grad is torch's: -pred * upstream (/ N for the mean), +pred with
    bonafide_label 0 (target 1 - label), in label's shape and dtype."""
    pred = (4 * randn(6, 2, device=device)).requires_grad_(pred_grad)
    label = torch.rand(6, 2).to(device).requires_grad_()
    out = ops.binary_cross_entropy(pred, label, bonafide_label, reduction)
    up = torch.rand_like(out) + 0.5
    got = torch.autograd.grad(out, [pred, label] if pred_grad else [label], up)
    p64, l64 = pred.detach().cpu().double().requires_grad_(pred_grad), label.detach().cpu().double().requires_grad_()
    ref = R.binary_loss(p64, l64, bonafide_label=bonafide_label, reduction=RED_NAMES[reduction])
    want = torch.autograd.grad(ref, [p64, l64] if pred_grad else [l64], up.cpu().double())
    assert got[-1].dtype == label.dtype and got[-1].shape == label.shape
    assert bool(want[-1].abs().max() > 0)
    for g, w in zip(got, want, strict=True):
        assert_matches(g, w, what="d bce / d (pred, label)", scale=4 * up.max().item())


@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=["none", "mean", "sum"])
@pytest.mark.parametrize("bonafide_label", [0, 1])
def test_gradcheck_binary_with_soft_label(bonafide_label, reduction, device):
    pred = (3 * randn(4, 3, dtype=F64, device=device)).requires_grad_()
    label = (0.05 + 0.9 * torch.rand(4, 3, dtype=F64)).to(device).requires_grad_()
    fn = lambda p, t: ops.binary_cross_entropy(p, t, bonafide_label, reduction)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (pred, label), eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradgradcheck(fn, (pred, label), eps=1e-6, atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------- #
# gradgradcheck of every op in float64
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("form", ["lengths", "all-frames", "rank2"])
@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=["none", "mean", "sum"])
@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_gradgradcheck_cosine_margin_loss(op, reduction, form, device):
    """Default configurations (gradgradcheck costs seconds each; every variant's
    second derivatives are compared with the reference above)."""
    op = op.non_default()
    shape = (4, 5, 6) if form != "rank2" else (4, 6)
    emb = randn(*shape, dtype=F64, device=device).requires_grad_()
    centers = randn(op.num_centers, 6, dtype=F64, device=device).requires_grad_()
    label = op.labels(4).to(device)
    lengths = make_lengths(4, 5, device=device) if form == "lengths" else None
    center_index = op.extra_inputs(4, device)["center_index"]

    def fn(e, c):  # loss and score, so both outputs' second derivatives are checked
        return ops.cosine_margin_loss_and_score(e, c, label, lengths, op.code, *op.margins(), reduction,
                                                op.score_rule, op.score_center, center_index)

    assert torch.autograd.gradgradcheck(fn, (emb, centers), eps=1e-6, atol=1e-6, rtol=1e-5,
                                        fast_mode=gradcheck_fast_mode(op.num_centers))


@pytest.mark.parametrize("center_index", [0, 1])
def test_gradgradcheck_cosine_score(center_index, device):
    emb = randn(4, 5, 6, dtype=F64, device=device).requires_grad_()
    centers = randn(2, 6, dtype=F64, device=device).requires_grad_()
    lengths = make_lengths(4, 5, device=device)
    fn = lambda e, c: ops.cosine_score(e, c, lengths, center_index)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (emb, centers), eps=1e-6, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- #
# the first-order path is unchanged
# --------------------------------------------------------------------------- #


def test_first_order_path_runs_only_the_fused_backward():
    op = first_cosine_op()
    emb = randn(5, 6, 7).requires_grad_()
    centers = randn(op.num_centers, 7).requires_grad_()
    pred = randn(5).requires_grad_()
    label = make_labels(5)
    loss = ops.cosine_margin_loss(emb, centers, label, None, op.code, *op.margins(), MEAN)
    loss = loss + ops.binary_cross_entropy(pred, label, 1, MEAN)
    with BackwardOpCounter() as counter:
        loss.backward()
    assert sorted(counter.calls) == ["spoofloss._binary_cross_entropy_backward.default",
                                     "spoofloss._cosine_margin_loss_backward.default"], counter.calls


def test_emb_is_not_saved():
    """The forward saves pooled, not emb: an emb that nothing else holds is not
    kept alive until the backward (no memory cost for double backward support)."""
    op = first_cosine_op()
    emb = randn(5, 6, 7).requires_grad_()
    centers = randn(op.num_centers, 7).requires_grad_()
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = ops.cosine_margin_loss(emb, centers, op.labels(5), None, op.code, *op.margins(), MEAN)
        ops.cosine_score(emb, centers, None, 0)
    assert saved, "the hooks saw nothing: the test would prove nothing"
    assert all(t.data_ptr() != emb.data_ptr() for t in saved), [tuple(t.shape) for t in saved]
    loss.backward()
