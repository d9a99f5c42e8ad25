"""The custom ops themselves: gradcheck, opcheck and op-level semantics.

The loss-specific arguments of cosine_margin_loss (its row of the library's
table, scale, margins, score rule) come from every registered cosine loss and
configuration (helpers.op_args.CosineOp), so a loss added to the registry is
checked here too.

* ``torch.autograd.gradcheck`` (float64, small shapes) of every public op:
  cosine_margin_loss (each registered loss, each reduction, with and without
  lengths, rank-2 emb), cosine_score, binary_cross_entropy.
* ``torch.library.opcheck`` (schema, autograd registration, fake tensors,
  AOT dispatch) of every public op, with inputs that require grad (so the
  backward ops run through the autograd registration) and inputs that do not.
* Op-level arguments the modules do not reach: distinct margins, a
  non-default scale, cosine_score's centre index, saturated logits in float64,
  and zero-norm embeddings / centres (F.normalize's eps clamp).
"""

from __future__ import annotations

import pytest
import torch

from spoofloss import ops
from spoofloss import reference as R

from helpers.inputs import cpu, f64, make_labels, make_lengths, randn
from helpers.op_args import (
    CENTER_COSINE, MEAN, NONE, SUM, CosineOp, cosine_ops, first_cosine_op, gradcheck_fast_mode, reference_loss,
)
from helpers.steps import cosine_gradient, natural_scales
from helpers.tolerance import assert_matches, expected_out_dtype

pytestmark = pytest.mark.usefixtures("poison")

F64 = torch.float64
REDUCTION_IDS = ["none", "mean", "sum"]


def small_inputs(device, op: CosineOp, batch=5, frames=6, dim=7, rank=3, with_lengths=True, grad=True):
    shape = (batch, frames, dim) if rank == 3 else (batch, dim)
    emb = randn(*shape, dtype=F64, device=device).requires_grad_(grad)
    centers = randn(op.num_centers, dim, dtype=F64, device=device).requires_grad_(grad)
    label = op.labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device) if (with_lengths and rank == 3) else None
    return emb, centers, label, lengths, op.extra_inputs(batch, device)["center_index"]


def margin_loss(emb, centers, label, lengths, op: CosineOp, reduction, center_index=None):
    return ops.cosine_margin_loss(emb, centers, label, lengths, op.code, *op.margins(), reduction,
                                  score_rule=op.score_rule, score_center=op.score_center, center_index=center_index)


# --------------------------------------------------------------------------- #
# gradcheck
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("with_lengths", [False, True], ids=["nolen", "len"])
@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=REDUCTION_IDS)
@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_gradcheck_cosine_margin_loss(op, reduction, with_lengths, device):
    # distinct margins and a small scale exercise every branch of the epilogue
    op = op.non_default()
    emb, centers, label, lengths, center_index = small_inputs(device, op, with_lengths=with_lengths)

    def fn(e, c):
        return margin_loss(e, c, label, lengths, op, reduction, center_index)

    assert torch.autograd.gradcheck(fn, (emb, centers), eps=1e-6, atol=1e-7, rtol=1e-5,
                                    fast_mode=gradcheck_fast_mode(op.num_centers))


@pytest.mark.parametrize("op", [p for p in cosine_ops() if p.values[0].variant is not None])
def test_gradcheck_cosine_margin_loss_variants(op, device):
    """Each registered variant once (mean, lengths): the reductions and forms
    above are the same code for every configuration of a loss."""
    op = op.non_default()
    emb, centers, label, lengths, center_index = small_inputs(device, op)

    def fn(e, c):
        return margin_loss(e, c, label, lengths, op, MEAN, center_index)

    assert torch.autograd.gradcheck(fn, (emb, centers), eps=1e-6, atol=1e-7, rtol=1e-5,
                                    fast_mode=gradcheck_fast_mode(op.num_centers))


@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_gradcheck_cosine_margin_loss_rank2(op, device):
    op = op.non_default()
    emb, centers, label, _, center_index = small_inputs(device, op, rank=2)
    fn = lambda e, c: margin_loss(e, c, label, None, op, NONE, center_index)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (emb, centers), eps=1e-6, atol=1e-7, rtol=1e-5,
                                    fast_mode=gradcheck_fast_mode(op.num_centers))


@pytest.mark.parametrize("with_lengths", [False, True], ids=["nolen", "len"])
@pytest.mark.parametrize("num_centers,center_index", [(2, 0), (2, 1), (1, 0)])
def test_gradcheck_cosine_score(num_centers, center_index, with_lengths, device):
    emb, _, _, lengths, _ = small_inputs(device, first_cosine_op(), with_lengths=with_lengths)
    centers = randn(num_centers, emb.shape[-1], dtype=F64, device=device).requires_grad_()
    fn = lambda e, c: ops.cosine_score(e, c, lengths, center_index)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (emb, centers), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=REDUCTION_IDS)
def test_gradcheck_binary_cross_entropy(reduction, bonafide_label, device):
    pred = (3 * randn(4, 3, dtype=F64, device=device)).requires_grad_()
    label = torch.rand(4, 3, dtype=F64).to(device)  # soft targets
    label[0, 0], label[0, 1] = 0.0, 1.0
    fn = lambda p: ops.binary_cross_entropy(p, label, bonafide_label, reduction)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (pred,), eps=1e-6, atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------- #
# opcheck
# --------------------------------------------------------------------------- #


def loss_op_args(emb, centers, label, lengths, op: CosineOp, reduction, center_index=None):
    """The positional arguments of torch.ops.spoofloss.cosine_margin_loss for ``op``."""
    return (emb, centers, label, lengths, center_index, op.code, *op.margins(), op.score_rule, op.score_center,
            reduction)


def _opcheck(op, args):
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result


OPCHECK_FORMS = [(True, NONE), (False, MEAN), (True, SUM)]


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("with_lengths,reduction", OPCHECK_FORMS, ids=["len-none", "nolen-mean", "len-sum"])
@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_opcheck_cosine_margin_loss(op, with_lengths, reduction, requires_grad, device):
    emb, centers, label, lengths, center_index = small_inputs(device, op, with_lengths=with_lengths,
                                                              grad=requires_grad)
    args = loss_op_args(emb, centers, label, lengths, op, reduction, center_index)
    _opcheck(torch.ops.spoofloss.cosine_margin_loss.default, args)


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("with_lengths", [True, False], ids=["len", "nolen"])
def test_opcheck_cosine_score(with_lengths, requires_grad, device):
    emb, _, _, lengths, _ = small_inputs(device, first_cosine_op(), with_lengths=with_lengths, grad=requires_grad)
    centers = randn(2, emb.shape[-1], dtype=F64, device=device).requires_grad_(requires_grad)
    _opcheck(torch.ops.spoofloss.cosine_score.default, (emb, centers, lengths, None, CENTER_COSINE, 1, 1.0))


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("reduction", [NONE, MEAN], ids=["none", "mean"])
def test_opcheck_binary_cross_entropy(reduction, requires_grad, device):
    pred = randn(6, 2, dtype=torch.float32, device=device).requires_grad_(requires_grad)
    label = make_labels(12).reshape(6, 2).to(device)
    _opcheck(torch.ops.spoofloss.binary_cross_entropy.default, (pred, label, 1, reduction))


def backward_op_args(op: CosineOp, emb, centers, label, lengths, center_index, reduction, with_score: bool):
    """The arguments csrc/autograd.cpp passes the cosine backward op (schema in
    csrc/ops.cpp): pooled from the forward, emb's sizes and dtype; with_score
    carries the loss's and its score's gradients in one call."""
    loss, score, pooled = torch.ops.spoofloss.cosine_margin_loss.default(
        *loss_op_args(emb, centers, label, lengths, op, reduction, center_index))
    grad_score = torch.rand_like(score) if with_score else None
    return (torch.rand_like(loss), grad_score, pooled, centers, label, lengths, center_index, list(emb.shape),
            emb.dtype, op.code, *op.margins(), op.score_rule, op.score_center, reduction)


@pytest.mark.parametrize("case", ["len-none", "nolen-mean", "len-sum", "len-mean-both"])
@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_opcheck_cosine_backward_op(op, case, device):
    reduction = {"none": NONE, "mean": MEAN, "sum": SUM}[case.split("-")[1]]
    emb, centers, label, lengths, center_index = small_inputs(device, op, with_lengths=case.startswith("len"),
                                                              grad=False)
    args = backward_op_args(op, emb, centers, label, lengths, center_index, reduction, case.endswith("both"))
    _opcheck(torch.ops.spoofloss._cosine_margin_loss_backward.default, args)


@pytest.mark.parametrize("case", ["score-len", "score-rank2"])
def test_opcheck_score_backward_op(case, device):
    """The score op's backward: no loss (-1), no label and only grad_score."""
    emb, _, _, lengths, _ = small_inputs(device, first_cosine_op(), rank=2 if case.endswith("rank2") else 3,
                                         grad=False)
    centers = randn(2, emb.shape[-1], dtype=F64, device=device)
    score, pooled = torch.ops.spoofloss.cosine_score.default(emb, centers, lengths, None, CENTER_COSINE, 1, 1.0)
    args = (None, torch.rand_like(score), pooled, centers, None, lengths, None, list(emb.shape), emb.dtype,
            ops.NO_LOSS, 1.0, 0.0, 0.0, 0, CENTER_COSINE, 1, NONE)
    _opcheck(torch.ops.spoofloss._cosine_margin_loss_backward.default, args)


@pytest.mark.parametrize("reduction", [NONE, MEAN], ids=["none", "mean"])
def test_opcheck_binary_backward_op(reduction, device):
    pred = randn(6, 2, dtype=torch.float32, device=device)
    label = make_labels(12).reshape(6, 2).to(device)
    grad = torch.rand(12 if reduction == NONE else (), device=device)
    _opcheck(torch.ops.spoofloss._binary_cross_entropy_backward.default, (grad, pred, label, 1, reduction))


@pytest.mark.parametrize("emb_dtype,centers_dtype", [
    (torch.bfloat16, torch.float32), (torch.float16, torch.float16), (torch.float32, torch.float32), (F64, torch.float32),
], ids=["bf16-f32", "f16-f16", "f32-f32", "f64-f32"])
@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_backward_ops_return_input_dtypes(op, emb_dtype, centers_dtype, device):
    """The backward ops themselves return gradients in the dtypes of emb / the
    centres / pred (autograd would silently cast a wrong dtype back, so this is
    only visible on the ops), and opcheck compares them with the fake kernels."""
    batch, frames, dim = 6, 5, 12
    emb = randn(batch, frames, dim, dtype=emb_dtype, device=device)
    centers = randn(op.num_centers, dim, dtype=centers_dtype, device=device)
    label = op.labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device)
    center_index = op.extra_inputs(batch, device)["center_index"]
    args = backward_op_args(op, emb, centers, label, lengths, center_index, NONE, False)
    grad_emb, grad_centers = torch.ops.spoofloss._cosine_margin_loss_backward.default(*args)
    assert grad_emb.dtype == emb_dtype and grad_emb.shape == emb.shape
    assert grad_centers.dtype == centers_dtype and grad_centers.shape == centers.shape
    _opcheck(torch.ops.spoofloss._cosine_margin_loss_backward.default, args)
    pred = randn(batch, dtype=emb_dtype, device=device)
    grad_pred = torch.ops.spoofloss._binary_cross_entropy_backward.default(
        torch.rand(batch, device=device), pred, make_labels(batch).to(device), 1, NONE)
    assert grad_pred.dtype == emb_dtype and grad_pred.shape == pred.shape


def test_ops_registered():
    for name in ("cosine_margin_loss", "cosine_score", "binary_cross_entropy",
                 "_cosine_margin_loss_backward", "_binary_cross_entropy_backward"):
        assert hasattr(torch.ops.spoofloss, name), f"torch.ops.spoofloss.{name} is not registered"


# --------------------------------------------------------------------------- #
# op-level semantics vs the reference
# --------------------------------------------------------------------------- #


def check_margin_op(emb, centers, label, lengths, op: CosineOp, reduction, center_index=None):
    """Fused op vs reference: loss and both gradients, with atol scaled per
    element by the size of its terms (helpers.steps): clamped norms make one
    utterance's gradient ~1/eps larger than its neighbours', and aligned
    embeddings cancel terms to ~0."""
    out = margin_loss(emb, centers, label, lengths, op, reduction, center_index)
    assert out.dtype == expected_out_dtype(emb.dtype)
    up = torch.rand_like(out) + 0.5
    g_emb, g_c = torch.autograd.grad(out, [emb, centers], up)
    e64, c64, lab, lens, index = f64(emb), f64(centers), cpu(label), cpu(lengths), cpu(center_index)
    ref = lambda: reference_loss(op, lab, e64, c64, lens, reduction, index)  # noqa: E731
    expected = ref()
    r_emb, r_c = torch.autograd.grad(expected, [e64, c64], cpu(up).double())
    loss_scale = cosine_gradient(ref).abs()
    loss_scale = loss_scale.sum(dim=1) if expected.dim() == 1 else loss_scale.sum().item()
    assert_matches(out, expected, what="loss", scale=loss_scale)
    emb_scale, c_scale = natural_scales(cosine_gradient(ref, cpu(up).double()), e64, c64, lens)
    assert_matches(g_emb, r_emb, what="d loss / d emb", scale=emb_scale)
    assert_matches(g_c, r_c, what="d loss / d centres", scale=c_scale)


@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=REDUCTION_IDS)
@pytest.mark.parametrize("op", cosine_ops())
def test_cosine_margin_loss_op_arguments(op, reduction, device):
    """Non-default scale and distinct margins reach the right utterances."""
    op = op.non_default()
    emb, centers, label, lengths, center_index = small_inputs(device, op, batch=24, frames=30, dim=48)
    check_margin_op(emb, centers, label, lengths, op, reduction, center_index)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("num_centers,center_index", [(2, 0), (2, 1), (1, 0)])
def test_cosine_score_op(num_centers, center_index, dtype, device):
    batch, frames, dim = 20, 15, 33
    emb = randn(batch, frames, dim, dtype=dtype, device=device).requires_grad_()
    centers = randn(num_centers, dim, dtype=dtype, device=device).requires_grad_()
    lengths = make_lengths(batch, frames, device=device)
    out = ops.cosine_score(emb, centers, lengths, center_index)
    assert out.dtype == expected_out_dtype(dtype) and out.shape == (batch,)
    up = torch.rand_like(out) + 0.5
    g_emb, g_c = torch.autograd.grad(out, [emb, centers], up)
    e64, c64 = f64(emb), f64(centers)
    ref = lambda: R.cosine_score("center_cosine", e64, c64, cpu(lengths), score_center=center_index)  # noqa: E731
    expected = ref()
    r_emb, r_c = torch.autograd.grad(expected, [e64, c64], cpu(up).double())
    assert_matches(out, expected, what="score", scale=cosine_gradient(ref).abs().sum(dim=1))
    emb_scale, c_scale = natural_scales(cosine_gradient(ref, cpu(up).double()), e64, c64, cpu(lengths))
    assert_matches(g_emb, r_emb, what="d score / d emb", scale=emb_scale)
    assert_matches(g_c, r_c, what="d score / d centres", scale=c_scale)
    # the other centre gets exactly no gradient
    if num_centers == 2:
        assert bool((g_c[1 - center_index] == 0).all()), g_c


@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_saturated_logits_float64(op, device):
    """Embeddings (anti-)aligned with the centres: cosines near +-1, so the
    softplus arguments reach +-40 and beyond. The float64 result must be exact
    there (no softplus threshold, no exp overflow, no log(0))."""
    batch, dim = 16, 32
    centers = randn(op.num_centers, dim, dtype=F64)
    label = op.labels(batch)
    # utterance b points (almost) at centre k_b, with k_b chosen to give both the
    # right and the wrong answer for both classes
    k = torch.arange(batch) % centers.shape[0]
    sign = torch.where(torch.arange(batch) % 4 < 2, 1.0, -1.0).double()
    emb = (sign[:, None] * centers[k] * 5 + 1e-3 * torch.randn(batch, dim, dtype=F64))
    emb = emb.to(device).requires_grad_()
    centers = centers.to(device).requires_grad_()
    center_index = op.extra_inputs(batch, device)["center_index"]
    for scale in (20.0, 64.0):
        check_margin_op(emb, centers, label.to(device), None, op.replace(scale=scale), NONE, center_index)


@pytest.mark.parametrize("op", cosine_ops(variants=False))
def test_zero_norm_is_clamped(op, device):
    """An all-zero utterance (and a zero centre) behave as F.normalize(eps=1e-12):
    cos = 0, a finite loss, and the reference's gradients."""
    batch, frames, dim = 6, 5, 8
    data = randn(batch, frames, dim, dtype=F64)
    data[1] = 0.0
    data[2] = 1e-14 * data[2]  # norm below eps: clamped, not normalised
    emb = data.to(device).requires_grad_()
    centers = randn(op.num_centers, dim, dtype=F64, device=device)
    label = op.labels(batch).to(device)
    center_index = op.extra_inputs(batch, device)["center_index"]
    check_margin_op(emb, centers.requires_grad_(), label, None, op, NONE, center_index)
    if op.num_centers > 1:
        zero_centre = centers.detach().clone()
        zero_centre[0] = 0.0
        check_margin_op(emb, zero_centre.requires_grad_(), label, None, op, SUM, center_index)


@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=REDUCTION_IDS)
@pytest.mark.parametrize("bonafide_label", [0, 1])
def test_binary_cross_entropy_op(bonafide_label, reduction, device):
    pred = (4 * randn(7, 9, dtype=torch.float32, device=device)).requires_grad_()
    label = torch.rand(7, 9).to(device)
    out = ops.binary_cross_entropy(pred, label, bonafide_label, reduction)
    assert out.dtype == torch.float32 and out.shape == ((63,) if reduction == NONE else ())
    up = torch.rand_like(out) + 0.5
    (g,) = torch.autograd.grad(out, [pred], up)
    p64 = f64(pred)
    red = {NONE: "none", MEAN: "mean", SUM: "sum"}[reduction]
    ref = R.binary_loss(p64, cpu(label).double(), bonafide_label=bonafide_label, reduction=red)
    (r,) = torch.autograd.grad(ref, [p64], cpu(up).double())
    assert_matches(out, ref, what="bce", scale=max(4.0, ref.abs().max().item()))
    assert_matches(g, r, what="d bce / d pred", scale=up.max().item())
