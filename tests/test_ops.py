"""The custom ops themselves: gradcheck, opcheck and op-level semantics.

* ``torch.autograd.gradcheck`` (float64, small shapes) of every public op:
  cosine_margin_loss (AM = epilogue 0 and OC = epilogue 1, each reduction, with
  and without lengths, rank-2 emb), cosine_score, binary_cross_entropy.
* ``torch.library.opcheck`` (schema, autograd registration, fake tensors,
  AOT dispatch) of every public op, with inputs that require grad (so the
  backward ops run through the autograd registration) and inputs that do not.
* Op-level arguments the modules do not reach: distinct AM margins, a
  non-default scale, cosine_score's centre index, saturated logits in float64,
  and zero-norm embeddings / centres (F.normalize's eps clamp).
"""

from __future__ import annotations

import pytest
import torch

from spoofloss import ops
from spoofloss import reference as R

from conftest import (
    assert_matches,
    cpu,
    dloss_dcos,
    expected_out_dtype,
    f64,
    make_labels,
    make_lengths,
    natural_scales,
    randn,
)

pytestmark = pytest.mark.usefixtures("poison")

AM, OC = ops.loss_code("am_softmax"), ops.loss_code("oc_softmax")
CENTER_COSINE = ops.SCORE_RULES["center_cosine"]
NONE, MEAN, SUM = 0, 1, 2
RED_NAMES = {NONE: "none", MEAN: "mean", SUM: "sum"}
F64 = torch.float64


def margin_args(epilogue, *, bonafide_label=1, margin_bonafide=None, margin_spoof=None, scale=20.0):
    """(scale, margin_bonafide, margin_spoof, bonafide_label) with loss defaults."""
    if margin_bonafide is None:
        margin_bonafide = 0.5
    if margin_spoof is None:
        margin_spoof = 0.5 if epilogue == AM else 0.2
    return scale, margin_bonafide, margin_spoof, bonafide_label


def reference_margin(emb, centers, label, lengths, epilogue, scale, mb, ms, bonafide_label, reduction):
    """Reference of ops.cosine_margin_loss, built from the public reference
    functions. AM: the margin of an utterance is margin_bonafide when its label
    is bonafide_label, else margin_spoof (equal margins = plain AM-softmax)."""
    red = RED_NAMES[reduction]
    if epilogue == OC:
        return R.oc_softmax_loss(label, emb, centers, lengths, m_real=mb, m_fake=ms, alpha=scale,
                                 bonafide_label=bonafide_label, reduction=red)
    loss_b = R.am_softmax_loss(label, emb, centers, lengths, s=scale, m=mb, reduction="none")
    loss_s = R.am_softmax_loss(label, emb, centers, lengths, s=scale, m=ms, reduction="none")
    loss = torch.where(label.reshape(-1) == bonafide_label, loss_b, loss_s)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[red]


def small_inputs(device, epilogue=AM, batch=5, frames=6, dim=7, rank=3, with_lengths=True, grad=True):
    shape = (batch, frames, dim) if rank == 3 else (batch, dim)
    emb = randn(*shape, dtype=F64, device=device).requires_grad_(grad)
    centers = randn(2 if epilogue == AM else 1, dim, dtype=F64, device=device).requires_grad_(grad)
    label = make_labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device) if (with_lengths and rank == 3) else None
    return emb, centers, label, lengths


# --------------------------------------------------------------------------- #
# gradcheck
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("with_lengths", [False, True], ids=["nolen", "len"])
@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=["none", "mean", "sum"])
@pytest.mark.parametrize("epilogue", [AM, OC], ids=["am", "oc"])
def test_gradcheck_cosine_margin_loss(epilogue, reduction, with_lengths, device):
    emb, centers, label, lengths = small_inputs(device, epilogue, with_lengths=with_lengths)
    # distinct margins and bonafide_label 0 exercise every branch of the epilogue
    args = margin_args(epilogue, bonafide_label=0, margin_bonafide=0.4, margin_spoof=0.1, scale=3.0)

    def fn(e, c):
        return ops.cosine_margin_loss(e, c, label, lengths, epilogue, *args, reduction)

    assert torch.autograd.gradcheck(fn, (emb, centers), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("epilogue", [AM, OC], ids=["am", "oc"])
def test_gradcheck_cosine_margin_loss_rank2(epilogue, device):
    emb, centers, label, _ = small_inputs(device, epilogue, rank=2)
    args = margin_args(epilogue, scale=3.0)
    fn = lambda e, c: ops.cosine_margin_loss(e, c, label, None, epilogue, *args, NONE)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (emb, centers), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["nolen", "len"])
@pytest.mark.parametrize("num_centers,center_index", [(2, 0), (2, 1), (1, 0)])
def test_gradcheck_cosine_score(num_centers, center_index, with_lengths, device):
    emb, _, _, lengths = small_inputs(device, with_lengths=with_lengths)
    centers = randn(num_centers, emb.shape[-1], dtype=F64, device=device).requires_grad_()
    fn = lambda e, c: ops.cosine_score(e, c, lengths, center_index)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (emb, centers), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=["none", "mean", "sum"])
def test_gradcheck_binary_cross_entropy(reduction, bonafide_label, device):
    pred = (3 * randn(4, 3, dtype=F64, device=device)).requires_grad_()
    label = torch.rand(4, 3, dtype=F64).to(device)  # soft targets
    label[0, 0], label[0, 1] = 0.0, 1.0
    fn = lambda p: ops.binary_cross_entropy(p, label, bonafide_label, reduction)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (pred,), eps=1e-6, atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------- #
# opcheck
# --------------------------------------------------------------------------- #


def loss_op_args(emb, centers, label, lengths, epilogue, margins, reduction):
    """The positional arguments of torch.ops.spoofloss.cosine_margin_loss with
    the default score (cosine to the bona fide centre for AM, the centre for OC)."""
    scale, margin_bonafide, margin_spoof, bonafide_label = margins
    score_center = bonafide_label if epilogue == AM else 0
    return (emb, centers, label, lengths, None, epilogue, scale, margin_bonafide, margin_spoof, bonafide_label,
            CENTER_COSINE, score_center, reduction)


def _opcheck(op, args):
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("epilogue,with_lengths,reduction", [
    (AM, True, NONE), (AM, False, MEAN), (OC, True, SUM), (OC, False, NONE),
], ids=["am-len-none", "am-nolen-mean", "oc-len-sum", "oc-nolen-none"])
def test_opcheck_cosine_margin_loss(epilogue, with_lengths, reduction, requires_grad, device):
    emb, centers, label, lengths = small_inputs(device, epilogue, with_lengths=with_lengths, grad=requires_grad)
    args = loss_op_args(emb, centers, label, lengths, epilogue, margin_args(epilogue), reduction)
    _opcheck(torch.ops.spoofloss.cosine_margin_loss.default, args)


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("with_lengths", [True, False], ids=["len", "nolen"])
def test_opcheck_cosine_score(with_lengths, requires_grad, device):
    emb, centers, _, lengths = small_inputs(device, AM, with_lengths=with_lengths, grad=requires_grad)
    _opcheck(torch.ops.spoofloss.cosine_score.default, (emb, centers, lengths, None, CENTER_COSINE, 1, 1.0))


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("reduction", [NONE, MEAN], ids=["none", "mean"])
def test_opcheck_binary_cross_entropy(reduction, requires_grad, device):
    pred = randn(6, 2, dtype=torch.float32, device=device).requires_grad_(requires_grad)
    label = make_labels(12).reshape(6, 2).to(device)
    _opcheck(torch.ops.spoofloss.binary_cross_entropy.default, (pred, label, 1, reduction))


@pytest.mark.parametrize("case", ["am-len-none", "am-nolen-mean", "oc-len-sum", "am-len-mean-both", "score-len",
                                  "score-rank2"])
def test_opcheck_cosine_backward_op(case, device):
    """The backward op directly, with the arguments csrc/autograd.cpp passes it
    (schema in csrc/ops.cpp): pooled from the forward, emb's sizes and dtype;
    the score op's backward has no loss (-1), no label and only grad_score;
    "both" carries the loss's and its score's gradients in one call."""
    kind = case.split("-")[0]
    epilogue = OC if kind == "oc" else AM
    emb, centers, label, lengths = small_inputs(
        device, epilogue, rank=2 if case.endswith("rank2") else 3, with_lengths="nolen" not in case, grad=False)
    if kind == "score":
        score, pooled = torch.ops.spoofloss.cosine_score.default(emb, centers, lengths, None, CENTER_COSINE, 1, 1.0)
        args = (None, torch.rand_like(score), pooled, centers, None, lengths, None, list(emb.shape), emb.dtype,
                ops.NO_LOSS, 1.0, 0.0, 0.0, 0, CENTER_COSINE, 1, NONE)
    else:
        reduction = {"none": NONE, "mean": MEAN, "sum": SUM}[case.split("-")[2]]
        margins = margin_args(epilogue)
        loss, score, pooled = torch.ops.spoofloss.cosine_margin_loss.default(
            *loss_op_args(emb, centers, label, lengths, epilogue, margins, reduction))
        grad_score = torch.rand_like(score) if case.endswith("both") else None
        args = (torch.rand_like(loss), grad_score, pooled, centers, label, lengths, None, list(emb.shape), emb.dtype,
                epilogue, *margins, CENTER_COSINE, margins[3] if epilogue == AM else 0, reduction)
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
def test_backward_ops_return_input_dtypes(emb_dtype, centers_dtype, device):
    """The backward ops themselves return gradients in the dtypes of emb / the
    centres / pred (autograd would silently cast a wrong dtype back, so this is
    only visible on the ops), and opcheck compares them with the fake kernels."""
    batch, frames, dim = 6, 5, 12
    emb = randn(batch, frames, dim, dtype=emb_dtype, device=device)
    centers = randn(2, dim, dtype=centers_dtype, device=device)
    label = make_labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device)
    margins = margin_args(AM)
    loss, _, pooled = torch.ops.spoofloss.cosine_margin_loss.default(
        *loss_op_args(emb, centers, label, lengths, AM, margins, NONE))
    args = (torch.rand_like(loss), None, pooled, centers, label, lengths, None, list(emb.shape), emb_dtype, AM,
            *margins, CENTER_COSINE, margins[3], NONE)
    grad_emb, grad_centers = torch.ops.spoofloss._cosine_margin_loss_backward.default(*args)
    assert grad_emb.dtype == emb_dtype and grad_emb.shape == emb.shape
    assert grad_centers.dtype == centers_dtype and grad_centers.shape == centers.shape
    _opcheck(torch.ops.spoofloss._cosine_margin_loss_backward.default, args)
    pred = randn(batch, dtype=emb_dtype, device=device)
    grad_pred = torch.ops.spoofloss._binary_cross_entropy_backward.default(
        torch.rand(batch, device=device), pred, label, 1, NONE)
    assert grad_pred.dtype == emb_dtype and grad_pred.shape == pred.shape


def test_ops_registered():
    for name in ("cosine_margin_loss", "cosine_score", "binary_cross_entropy",
                 "_cosine_margin_loss_backward", "_binary_cross_entropy_backward"):
        assert hasattr(torch.ops.spoofloss, name), f"torch.ops.spoofloss.{name} is not registered"


# --------------------------------------------------------------------------- #
# op-level semantics vs the reference
# --------------------------------------------------------------------------- #


def check_margin_op(emb, centers, label, lengths, epilogue, args, reduction):
    """Fused op vs reference: loss and both gradients, the gradients with atol
    scaled per utterance / centre by the size of their terms (conftest's
    natural_scales): clamped norms make one utterance's gradient ~1/eps larger
    than its neighbours', and aligned embeddings cancel terms to ~0."""
    out = ops.cosine_margin_loss(emb, centers, label, lengths, epilogue, *args, reduction)
    assert out.dtype == expected_out_dtype(emb.dtype)
    up = torch.rand_like(out) + 0.5
    g_emb, g_c = torch.autograd.grad(out, [emb, centers], up)
    e64, c64 = f64(emb), f64(centers)
    ref = reference_margin(e64, c64, cpu(label), cpu(lengths), epilogue, *args, reduction)
    r_emb, r_c = torch.autograd.grad(ref, [e64, c64], cpu(up).double())
    assert_matches(out, ref, what="loss", scale=max(args[0], ref.abs().max().item()))
    scale, mb, ms, bonafide_label = args
    g_cos = dloss_dcos("am" if epilogue == AM else "oc", R._cosines(e64.detach(), c64.detach(), cpu(lengths)),
                       cpu(label), cpu(up), RED_NAMES[reduction], bonafide_label, scale, mb, ms)
    emb_scale, c_scale = natural_scales(g_cos, e64, c64, cpu(lengths))
    assert_matches(g_emb, r_emb, what="d loss / d emb", scale=emb_scale)
    assert_matches(g_c, r_c, what="d loss / d centres", scale=c_scale)


@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=["none", "mean", "sum"])
@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("epilogue", [AM, OC], ids=["am", "oc"])
def test_cosine_margin_loss_op_arguments(epilogue, bonafide_label, reduction, device):
    """Non-default scale and distinct margins reach the right utterances."""
    emb, centers, label, lengths = small_inputs(device, epilogue, batch=24, frames=30, dim=48)
    args = margin_args(epilogue, bonafide_label=bonafide_label, margin_bonafide=0.35, margin_spoof=0.05, scale=12.5)
    check_margin_op(emb, centers, label, lengths, epilogue, args, reduction)


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
    ref = R._cosines(e64, c64, cpu(lengths))[:, center_index]
    r_emb, r_c = torch.autograd.grad(ref, [e64, c64], cpu(up).double())
    assert_matches(out, ref, what="score", scale=1.0)
    emb_scale, c_scale = natural_scales(dloss_dcos("score", R._cosines(e64.detach(), c64.detach(), cpu(lengths)),
                                                   center_index, cpu(up), "none"), e64, c64, cpu(lengths))
    assert_matches(g_emb, r_emb, what="d score / d emb", scale=emb_scale)
    assert_matches(g_c, r_c, what="d score / d centres", scale=c_scale)
    # the other centre gets exactly no gradient
    if num_centers == 2:
        assert bool((g_c[1 - center_index] == 0).all()), g_c


@pytest.mark.parametrize("epilogue", [AM, OC], ids=["am", "oc"])
def test_saturated_logits_float64(epilogue, device):
    """Embeddings (anti-)aligned with the centres: cosines near +-1, so the
    softplus arguments reach +-40 and beyond. The float64 result must be exact
    there (no softplus threshold, no exp overflow, no log(0))."""
    batch, dim = 16, 32
    centers = randn(2 if epilogue == AM else 1, dim, dtype=F64)
    label = make_labels(batch)
    # utterance b points (almost) at centre k_b, with k_b chosen to give both the
    # right and the wrong answer for both classes
    k = torch.arange(batch) % centers.shape[0]
    sign = torch.where(torch.arange(batch) % 4 < 2, 1.0, -1.0).double()
    emb = (sign[:, None] * centers[k] * 5 + 1e-3 * torch.randn(batch, dim, dtype=F64))
    emb = emb.to(device).requires_grad_()
    centers = centers.to(device).requires_grad_()
    for scale in (20.0, 64.0):
        args = margin_args(epilogue, scale=scale)
        check_margin_op(emb, centers, label.to(device), None, epilogue, args, NONE)


@pytest.mark.parametrize("epilogue", [AM, OC], ids=["am", "oc"])
def test_zero_norm_is_clamped(epilogue, device):
    """An all-zero utterance (and a zero centre) behave as F.normalize(eps=1e-12):
    cos = 0, a finite loss, and the reference's gradients."""
    batch, frames, dim = 6, 5, 8
    data = randn(batch, frames, dim, dtype=F64)
    data[1] = 0.0
    data[2] = 1e-14 * data[2]  # norm below eps: clamped, not normalised
    emb = data.to(device).requires_grad_()
    centers = randn(2 if epilogue == AM else 1, dim, dtype=F64, device=device)
    label = make_labels(batch).to(device)
    args = margin_args(epilogue)
    check_margin_op(emb, centers.requires_grad_(), label, None, epilogue, args, NONE)
    if epilogue == AM:
        zero_centre = centers.detach().clone()
        zero_centre[0] = 0.0
        check_margin_op(emb, zero_centre.requires_grad_(), label, None, epilogue, args, SUM)


@pytest.mark.parametrize("reduction", [NONE, MEAN, SUM], ids=["none", "mean", "sum"])
@pytest.mark.parametrize("bonafide_label", [0, 1])
def test_binary_cross_entropy_op(bonafide_label, reduction, device):
    pred = (4 * randn(7, 9, dtype=torch.float32, device=device)).requires_grad_()
    label = torch.rand(7, 9).to(device)
    out = ops.binary_cross_entropy(pred, label, bonafide_label, reduction)
    assert out.dtype == torch.float32 and out.shape == ((63,) if reduction == NONE else ())
    up = torch.rand_like(out) + 0.5
    (g,) = torch.autograd.grad(out, [pred], up)
    p64 = f64(pred)
    ref = R.binary_loss(p64, cpu(label).double(), bonafide_label=bonafide_label, reduction=RED_NAMES[reduction])
    (r,) = torch.autograd.grad(ref, [p64], cpu(up).double())
    assert_matches(out, ref, what="bce", scale=max(4.0, ref.abs().max().item()))
    assert_matches(g, r, what="d bce / d pred", scale=up.max().item())
