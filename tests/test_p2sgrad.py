"""P2SGrad beyond what tests/test_registry.py checks for every loss.

* NII's definition restated here independently (core_modules/p2sgrad.py of
  project-NN-Pytorch-scripts: weight columns renormalised, cos = x . w / |x|
  clamped to [-1, 1], torch's MSELoss against the one-hot target) for the loss
  and its gradients, and NII's score (the bona fide column of the cosines);
* a few values worked by hand;
* the aligned edge cases (cos = +-1, cosines rounded past 1) in every dtype;
* gradgradcheck and opcheck of the op with this loss, many classes, errors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import spoofloss
from spoofloss import ops
from spoofloss import reference as R

from helpers.devices import runs_cuda_kernels
from helpers.inputs import make_lengths
from helpers.tolerance import assert_matches

pytestmark = pytest.mark.usefixtures("poison")

F64, F32, F16, BF16 = torch.float64, torch.float32, torch.float16, torch.bfloat16


def nii_p2sgrad(x: torch.Tensor, centers: torch.Tensor, target: torch.Tensor):
    """(loss, cos) as NII computes them, restated: x [B, D] pooled embeddings,
    centers [C, D] (NII keeps them as the columns of a [D, C] weight)."""
    # NII: w.renorm(2, 1, 1e-5).mul(1e5), unit columns; torch.renorm divides by
    # |w| + 1e-7, which shrinks NII's cosines by a relative 1e-7 / |w|: the
    # definition is the unit column, taken exactly here.
    w = centers.t() / centers.t().norm(dim=0, keepdim=True)
    cos = (x.mm(w) / x.pow(2).sum(1).pow(0.5).view(-1, 1)).clamp(-1, 1)
    one_hot = torch.zeros_like(cos).scatter_(1, target.view(-1, 1), 1)
    return torch.nn.MSELoss()(cos, one_hot), cos


def module(device, centers, **kwargs):
    loss = spoofloss.P2SGradLoss(enc_dim=centers.shape[1], num_classes=centers.shape[0], **kwargs)
    loss = loss.to(device=device, dtype=centers.dtype)
    with torch.no_grad():
        loss.centers.copy_(centers)
    return loss


@pytest.mark.parametrize("num_classes,bonafide_label", [(2, 1), (2, 0), (6, 4)])
def test_matches_nii_definition(num_classes, bonafide_label, device):
    """reduction "mean" is NII's MSELoss over [B, C]; the gradients of emb and
    of the centres are autograd's through NII's chain; the score is NII's
    out_score[:, bonafide]."""
    batch, frames, dim = 9, 5, 7
    emb = torch.randn(batch, frames, dim, dtype=F64)
    lengths = make_lengths(batch, frames)
    centers = torch.randn(num_classes, dim, dtype=F64)
    label = torch.randint(0, num_classes, (batch,))
    fused = module(device, centers, bonafide_label=bonafide_label)
    e = emb.to(device).requires_grad_()
    loss, score = fused.forward_and_score(label.to(device), e, lengths.to(device))
    got = torch.autograd.grad(loss, [e, fused.centers])

    e64, c64 = emb.clone().requires_grad_(), centers.clone().requires_grad_()
    pooled = torch.stack([e64[b, : lengths[b]].mean(0) for b in range(batch)])
    nii_loss, nii_cos = nii_p2sgrad(pooled, c64, label)
    want = torch.autograd.grad(nii_loss, [e64, c64])
    assert (nii_cos.abs() < 1).all(), "NII's clamp acted: the comparison would not be of the same function"
    assert_matches(loss, nii_loss, dtype=F64, scale=1.0, what="loss")
    assert_matches(score, nii_cos[:, bonafide_label], dtype=F64, scale=1.0, what="score")
    assert_matches(got[0], want[0], dtype=F64, scale=want[0].abs().max().item(), what="d loss / d emb")
    assert_matches(got[1], want[1], dtype=F64, scale=want[1].abs().max().item(), what="d loss / d centres")


def test_hand_checked_values(device):
    """In the plane: centre 0 at 0 degrees, centre 1 at 60, x at 90, so
    cos = (0, cos 30) = (0, 0.8660254). Label 1: ((0 - 0)^2 + (0.8660254 - 1)^2) / 2
    = 0.0179492 / 2 = 0.0089746; label 0: ((0 - 1)^2 + 0.75) / 2 = 0.875."""
    centers = torch.tensor([[1.0, 0.0], [math.cos(math.pi / 3), math.sin(math.pi / 3)]], dtype=F64) * 1.7
    emb = torch.tensor([[0.0, 0.3], [0.0, 0.3]], dtype=F64)
    loss = module(device, centers, reduction="none")(torch.tensor([1, 0], device=device), emb.to(device))
    assert loss[0].item() == pytest.approx(0.0089746, abs=1e-7)
    assert loss[1].item() == pytest.approx(0.875, abs=1e-15)
    by_hand = torch.tensor([(math.sqrt(3) / 2 - 1) ** 2 / 2, (1 + 0.75) / 2], dtype=F64)
    assert_matches(loss, by_hand, dtype=F64, scale=1.0, what="loss")


def aligned_case(dtype, batch=32, dim=16, exact=True):
    """emb [B, D] of ``dtype`` parallel (utterances of class 1) or antiparallel
    (class 0) to centre 1; centre 0 random. exact: powers-of-two radii, so the
    cosines are +-1 in exact arithmetic; else random radii (rounding then puts
    each utterance a few ulps off, and the kernels' cosine past 1 for some)."""
    direction = torch.randn(dim, dtype=F64)
    direction = (direction / direction.norm()).to(dtype).to(F64)
    radii = 2.0 ** torch.randint(-2, 3, (batch, 1)).to(F64) if exact else torch.rand(batch, 1, dtype=F64) * 4 + 0.25
    label = torch.arange(batch) % 2
    sign = torch.where(label == 1, 1.0, -1.0).to(F64)[:, None]
    emb = (sign * radii * direction).to(dtype)
    centers = torch.stack([torch.randn(dim, dtype=F64), direction * 1.5]).to(F32)
    return emb, centers, label


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "rounded"])
@pytest.mark.parametrize("dtype", [F32, F64, F16, BF16], ids=["float32", "float64", "float16", "bfloat16"])
def test_aligned_edges_are_finite_and_match_reference(dtype, exact, device):
    emb, centers, label = aligned_case(dtype, exact=exact)
    fused = module(device, centers.to(F64 if dtype == F64 else F32), reduction="none")
    e = emb.to(device).requires_grad_()
    loss, score = fused.forward_and_score(label.to(device), e)
    g_emb, g_centers = torch.autograd.grad(loss.sum(), [e, fused.centers])
    for name, t in (("loss", loss), ("score", score), ("d emb", g_emb), ("d centres", g_centers)):
        assert torch.isfinite(t).all(), f"non-finite {name}"
    e64, c64 = emb.to(F64).requires_grad_(), fused.centers.detach().cpu().to(F64).requires_grad_()
    ref = R.p2sgrad_loss(label, e64, c64, reduction="none")
    want = torch.autograd.grad(ref.sum(), [e64, c64])
    tol = F64 if dtype == F64 else F32
    assert_matches(loss, ref, dtype=tol, scale=1.0, what="loss")
    assert_matches(score, R.am_softmax_score(e64, c64, bonafide_label=1), dtype=tol, scale=1.0, what="score")
    # d loss / d x = sum_k g_k (c^_k - cos_k x^) / |x| with |g_k| <= 4 / C: terms of size 4 / |x|
    # (gradients in their own dtype's tolerance: emb's comes back in float16 / bfloat16)
    assert_matches(g_emb, want[0], scale=4.0 / emb.to(F64).norm(dim=1, keepdim=True), what="d emb")
    assert_matches(g_centers, want[1], scale=4.0 * len(label), what="d centres")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradgradcheck(reduction, device):
    emb = torch.randn(4, 3, 5, dtype=F64, device=device).requires_grad_()
    centers = torch.randn(3, 5, dtype=F64, device=device).requires_grad_()
    label = torch.tensor([0, 1, 2, 1], device=device)
    lengths = torch.tensor([3, 1, 2, 3], device=device)

    def fn(e, c):
        return ops.cosine_margin_loss_and_score(e, c, label, lengths, ops.loss_code("p2sgrad"), 1.0, 0.0, 0.0, 1,
                                                ops.REDUCTIONS[reduction])

    assert torch.autograd.gradgradcheck(fn, (emb, centers), eps=1e-6, atol=1e-6, rtol=1e-5)


def _opcheck(op, args):
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
def test_opcheck(requires_grad, device):
    emb = torch.randn(5, 4, 6, device=device).requires_grad_(requires_grad)
    centers = torch.randn(3, 6, device=device).requires_grad_(requires_grad)
    label = torch.tensor([0, 2, 1, 2, 1], device=device)
    lengths = make_lengths(5, 4, device=device)
    rule = ops.score_rule_code("center_cosine")
    code = ops.loss_code("p2sgrad")
    args = (emb, centers, label, lengths, None, code, 1.0, 0.0, 0.0, 1, rule, 1, ops.REDUCTIONS["none"])
    _opcheck(torch.ops.spoofloss.cosine_margin_loss.default, args)
    loss, score, pooled = torch.ops.spoofloss.cosine_margin_loss.default(*args)
    backward_args = (torch.rand_like(loss), torch.rand_like(score), pooled.detach(), centers.detach(), label, lengths,
                     None, list(emb.shape), emb.dtype, code, 1.0, 0.0, 0.0, 1, rule, 1, ops.REDUCTIONS["none"])
    _opcheck(torch.ops.spoofloss._cosine_margin_loss_backward.default, backward_args)


def test_many_classes_match_reference(device):
    fused = spoofloss.P2SGradLoss(enc_dim=8, num_classes=64, bonafide_label=17, reduction="sum").to(device)
    twin = R.P2SGradLoss(enc_dim=8, num_classes=64, bonafide_label=17, reduction="sum").double()
    twin.load_state_dict(fused.state_dict())
    emb = torch.randn(10, 5, 8)
    lengths = make_lengths(10, 5)
    label = torch.randint(0, 64, (10,))
    e = emb.to(device).requires_grad_()
    loss, score = fused.forward_and_score(label.to(device), e, lengths.to(device))
    got = torch.autograd.grad(loss + score.sum(), [e, fused.centers])
    e64 = emb.double().requires_grad_()
    ref_loss, ref_score = twin(label, e64, lengths), twin.score(e64, lengths)
    want = torch.autograd.grad(ref_loss + ref_score.sum(), [e64, twin.centers])
    assert_matches(loss, ref_loss, dtype=F32, what="loss")
    assert_matches(score, ref_score, dtype=F32, scale=1.0, what="score")
    assert_matches(got[0], want[0], dtype=F32, what="d emb")
    assert_matches(got[1], want[1], dtype=F32, what="d centres")


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        spoofloss.P2SGradLoss(num_classes=1)
    with pytest.raises(ValueError, match="bonafide_label"):
        spoofloss.P2SGradLoss(bonafide_label=2)
    with pytest.raises(ValueError, match="reduction"):
        spoofloss.P2SGradLoss(reduction="avg")


def test_label_outside_the_classes(device):
    fused = spoofloss.P2SGradLoss(enc_dim=4, reduction="none").to(device)
    label = torch.tensor([0, 1, 2], device=device)
    emb = torch.randn(3, 4, device=device)
    if runs_cuda_kernels(device):
        loss = fused(label, emb)
        assert torch.isnan(loss[2]) and torch.isfinite(loss[:2]).all()
    else:
        with pytest.raises(ValueError, match=r"label\[2\] = 2 is not 0 or 1"):
            fused(label, emb)


def test_reduction_mean_is_nii_mean_over_batch_and_classes(device):
    """The per-utterance loss is the mean over the C classes, so "sum" is C
    times smaller than the sum of squared errors and "mean" is NII's number."""
    fused = spoofloss.P2SGradLoss(enc_dim=5, num_classes=3, reduction="none").to(device).double()
    emb = torch.randn(6, 5, dtype=F64)
    label = torch.tensor([0, 1, 2, 0, 1, 2])
    per = fused(label.to(device), emb.to(device))
    cos = R.cosines(emb, fused.centers.detach().cpu())
    squared_errors = (cos - F.one_hot(label, 3).double()).square().sum(dim=1)
    assert_matches(per, squared_errors / 3, dtype=F64, scale=1.0, what="per-utterance loss")
