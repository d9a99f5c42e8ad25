"""Fused loss modules against the float64 plain-PyTorch reference.

Every test builds fresh random inputs (seeded per test), runs the fused module
forward and backward under the NaN-poisoning fixture, recomputes everything in
float64 with ``spoofloss.reference`` from the very values the fused code saw
(low-precision inputs are rounded first), and compares every element of: the
loss, d loss / d emb, d loss / d centres, the score and the score's gradients.
Output dtypes, gradient dtypes and exact zeros in padded frames are asserted
separately.
"""

from __future__ import annotations

import pytest
import torch

import spoofloss
from spoofloss import reference as R

from conftest import (
    assert_matches,
    cpu,
    dloss_dcos,
    expected_out_dtype,
    f64,
    label_as,
    make_labels,
    make_lengths,
    natural_scales,
    randn,
)

pytestmark = pytest.mark.usefixtures("poison")

KINDS = ["am", "oc"]
REDUCTIONS = ["none", "mean", "sum"]
SCALE = 20.0  # default s (AM) and alpha (OC)

F64, F32, BF16, F16 = torch.float64, torch.float32, torch.bfloat16, torch.float16


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def make_module(kind, enc_dim, device, centers_dtype=F32, bonafide_label=1, reduction="mean"):
    cls = spoofloss.AMSoftmaxLoss if kind == "am" else spoofloss.OCSoftmaxLoss
    module = cls(enc_dim=enc_dim, bonafide_label=bonafide_label, reduction=reduction)
    return module.to(device=device, dtype=centers_dtype)


def centers_of(module):
    return module.centers if isinstance(module, spoofloss.AMSoftmaxLoss) else module.center


def reference_loss(kind, label, emb, centers, lengths, bonafide_label, reduction):
    if kind == "am":
        return R.am_softmax_loss(label, emb, centers, lengths, s=20.0, m=0.5, reduction=reduction)
    return R.oc_softmax_loss(
        label, emb, centers, lengths, m_real=0.5, m_fake=0.2, alpha=20.0,
        bonafide_label=bonafide_label, reduction=reduction,
    )


def reference_score(kind, emb, centers, lengths, bonafide_label):
    if kind == "am":
        return R.am_softmax_score(emb, centers, lengths, bonafide_label=bonafide_label)
    return R.oc_softmax_score(emb, centers, lengths)


def upstream_for(out):
    """A random (non-unit) upstream gradient, so a kernel that ignores it fails."""
    if out.dim() == 0:
        return torch.tensor(0.75, dtype=out.dtype, device=out.device)
    return randn(*out.shape, dtype=out.dtype, device=out.device)


def assert_padding_zero(grad_emb, lengths, what):
    """Frames t >= lengths[b] must get exactly zero gradient (NaN fails too)."""
    frames = torch.arange(grad_emb.shape[1], device=grad_emb.device)
    padded = frames.unsqueeze(0) >= lengths.to(grad_emb.device).long().unsqueeze(1)
    values = grad_emb[padded]
    bad = (values != 0).nonzero()
    assert bad.numel() == 0, (
        f"{what}: {bad.shape[0]} padded gradient elements are not exactly 0, e.g. {values[bad[:3, 0]].tolist()}"
    )


def check_margin(kind, module, label, label01, emb, lengths, reduction, bonafide_label=1, check_score=True):
    """Forward + backward of the fused module and of the score vs the reference."""
    centers = centers_of(module)
    batch = emb.shape[0]
    # reference inputs: exactly the (rounded) values the fused module sees
    e64, c64, len_cpu, lab_cpu = f64(emb), f64(centers), cpu(lengths), cpu(label01)
    cos64 = R._cosines(e64.detach(), c64.detach(), len_cpu)

    # ---- loss
    out = module(label, emb, lengths)
    assert out.dtype == expected_out_dtype(emb.dtype), f"loss dtype {out.dtype} for emb {emb.dtype}"
    assert out.device == emb.device
    assert out.shape == ((batch,) if reduction == "none" else ()), f"loss shape {tuple(out.shape)}"
    up = upstream_for(out)
    g_emb, g_c = torch.autograd.grad(out, [emb, centers], up)
    assert g_emb.dtype == emb.dtype and g_c.dtype == centers.dtype, (g_emb.dtype, g_c.dtype)
    assert g_emb.shape == emb.shape and g_c.shape == centers.shape

    ref = reference_loss(kind, lab_cpu, e64, c64, len_cpu, bonafide_label, reduction)
    r_emb, r_c = torch.autograd.grad(ref, [e64, c64], cpu(up).double())
    g_cos = dloss_dcos(kind, cos64, lab_cpu, cpu(up), reduction, bonafide_label)
    emb_scale, c_scale = natural_scales(g_cos, e64, c64, len_cpu)
    assert_matches(out, ref, what="loss", scale=max(SCALE, ref.detach().abs().max().item()))
    assert_matches(g_emb, r_emb, what="d loss / d emb", scale=emb_scale)
    assert_matches(g_c, r_c, what="d loss / d centres", scale=c_scale)
    if lengths is not None and emb.dim() == 3:
        assert_padding_zero(g_emb, lengths, "d loss / d emb")

    if not check_score:
        return
    # ---- score
    score = module.score(emb, lengths)
    assert score.dtype == expected_out_dtype(emb.dtype), f"score dtype {score.dtype} for emb {emb.dtype}"
    assert score.shape == (batch,), f"score shape {tuple(score.shape)}"
    up = upstream_for(score)
    s_emb, s_c = torch.autograd.grad(score, [emb, centers], up)
    assert s_emb.dtype == emb.dtype and s_c.dtype == centers.dtype
    ref = reference_score(kind, e64, c64, len_cpu, bonafide_label)
    r_emb, r_c = torch.autograd.grad(ref, [e64, c64], cpu(up).double())
    center_index = bonafide_label if kind == "am" else 0
    g_cos = dloss_dcos("score", cos64, center_index, cpu(up), "none")
    emb_scale, c_scale = natural_scales(g_cos, e64, c64, len_cpu)
    assert_matches(score, ref, what="score", scale=1.0)  # a cosine: its terms are O(1)
    assert_matches(s_emb, r_emb, what="d score / d emb", scale=emb_scale)
    assert_matches(s_c, r_c, what="d score / d centres", scale=c_scale)
    if lengths is not None and emb.dim() == 3:
        assert_padding_zero(s_emb, lengths, "d score / d emb")


def build_emb(batch, frames, dim, dtype, device, layout="contiguous"):
    """emb [B, T, D] (or [B, D] when frames is None) requiring grad, in a layout:
    contiguous, "transposed" (a [T, B, D] tensor transposed), "dslice" (every
    other feature of a [B, T, 2D] tensor) or "expanded" (stride 0 over time)."""
    if frames is None:
        return randn(batch, dim, dtype=dtype, device=device).requires_grad_()
    if layout == "contiguous":
        return randn(batch, frames, dim, dtype=dtype, device=device).requires_grad_()
    if layout == "transposed":
        base = randn(frames, batch, dim, dtype=dtype, device=device).requires_grad_()
        emb = base.transpose(0, 1)
    elif layout == "dslice":
        base = randn(batch, frames, 2 * dim, dtype=dtype, device=device).requires_grad_()
        emb = base[..., 1::2]
    elif layout == "expanded":
        base = randn(batch, 1, dim, dtype=dtype, device=device).requires_grad_()
        emb = base.expand(batch, frames, dim)
    else:
        raise AssertionError(layout)
    assert not emb.is_contiguous()
    return emb


# --------------------------------------------------------------------------- #
# AM-softmax / OC-softmax modules
# --------------------------------------------------------------------------- #

# Every reduction with and without lengths on one realistic shape, and a few
# combinations on two more (long utterances / wide embeddings, large batch):
# enough coverage without spending minutes on float64 references.
REALISTIC = [((64, 200, 128), red, with_len) for red in REDUCTIONS for with_len in (False, True)] + [
    ((32, 800, 64), "none", True),
    ((32, 800, 64), "mean", False),
    ((128, 50, 256), "sum", True),
    ((128, 50, 256), "none", False),
]


@pytest.mark.parametrize(
    "shape,reduction,with_lengths",
    REALISTIC,
    ids=["B{}T{}D{}-{}-{}".format(*s, r, "len" if w else "nolen") for s, r, w in REALISTIC],
)
@pytest.mark.parametrize("kind", KINDS)
def test_margin_realistic_float32(kind, shape, reduction, with_lengths, device):
    batch, frames, dim = shape
    module = make_module(kind, dim, device, reduction=reduction)
    emb = build_emb(batch, frames, dim, F32, device)
    lengths = make_lengths(batch, frames, device=device) if with_lengths else None
    labels = make_labels(batch)
    check_margin(kind, module, label_as(labels, device=device), labels, emb, lengths, reduction)


DTYPE_CASES = [(F64, F64), (F64, F32), (BF16, F32), (BF16, BF16), (F16, F32), (F16, F16)]


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize(
    "emb_dtype,centers_dtype", DTYPE_CASES,
    ids=[f"emb-{str(a)[6:]}-centres-{str(b)[6:]}" for a, b in DTYPE_CASES],
)
@pytest.mark.parametrize("kind", KINDS)
def test_margin_dtypes(kind, emb_dtype, centers_dtype, reduction, device):
    """float64 within 1e-10; bf16/fp16 (inputs rounded first, reference from the
    rounded values) within the low-precision rtol for gradients and float32's
    for the float32 loss; the centres may keep their own dtype (AMP)."""
    batch, frames, dim = 32, 50, 72
    module = make_module(kind, dim, device, centers_dtype=centers_dtype, reduction=reduction)
    emb = build_emb(batch, frames, dim, emb_dtype, device)
    lengths = make_lengths(batch, frames, dtype=torch.int32, device=device)
    labels = make_labels(batch)
    check_margin(kind, module, label_as(labels, device=device), labels, emb, lengths, reduction)


# (B, T, D, layout, with lengths); T None -> emb [B, D]
ODD = {
    "B1": (1, 37, 64, "contiguous", True),
    "B1-T1": (1, 1, 16, "contiguous", True),
    "T1": (9, 1, 32, "contiguous", True),
    "D1": (8, 20, 1, "contiguous", True),
    "D1-nolen": (8, 20, 1, "contiguous", False),
    "D129": (16, 33, 129, "contiguous", True),
    "B129-D257": (129, 3, 257, "contiguous", True),
    "T1001": (3, 1001, 33, "contiguous", True),
    "rank2": (16, None, 72, "contiguous", False),
    "rank2-B1": (1, None, 64, "contiguous", False),
    "transposed": (12, 40, 64, "transposed", True),
    "transposed-nolen": (12, 40, 64, "transposed", False),
    "dslice": (10, 30, 48, "dslice", True),
    "expanded": (6, 25, 40, "expanded", True),
}


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("case", list(ODD))
@pytest.mark.parametrize("kind", KINDS)
def test_margin_odd_shapes(kind, case, reduction, device):
    batch, frames, dim, layout, with_lengths = ODD[case]
    module = make_module(kind, dim, device, reduction=reduction)
    emb = build_emb(batch, frames, dim, F32, device, layout)
    lengths = make_lengths(batch, frames, device=device) if with_lengths else None
    labels = make_labels(batch)
    check_margin(kind, module, label_as(labels, device=device), labels, emb, lengths, reduction)


LABEL_DTYPES = [torch.int64, torch.int32, torch.bool, torch.float32, torch.float64]


@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("label_shape", ["B", "B1"])
@pytest.mark.parametrize("kind", KINDS)
def test_margin_label_forms(kind, label_shape, label_dtype, bonafide_label, device):
    """Labels [B] / [B, 1] of integer, bool and float dtypes; bonafide_label 0/1
    (OC: which label is bona fide; AM: which centre the score uses)."""
    batch, frames, dim = 16, 25, 40
    module = make_module(kind, dim, device, centers_dtype=F64, bonafide_label=bonafide_label, reduction="none")
    emb = build_emb(batch, frames, dim, F64, device)
    lengths = make_lengths(batch, frames, device=device)
    labels = make_labels(batch)
    label = label_as(labels, label_shape, label_dtype, device)
    check_margin(kind, module, label, labels, emb, lengths, "none", bonafide_label=bonafide_label)


@pytest.mark.parametrize("kind", KINDS)
def test_bonafide_label_flips_oc_classes(kind, device):
    """The same data with labels flipped and bonafide_label 0 gives the same OC
    loss; for AM the loss ignores bonafide_label and the score switches centre."""
    batch, frames, dim = 24, 30, 48
    emb = build_emb(batch, frames, dim, F64, device)
    labels = make_labels(batch).to(device)
    m1 = make_module(kind, dim, device, centers_dtype=F64, bonafide_label=1, reduction="none")
    m0 = make_module(kind, dim, device, centers_dtype=F64, bonafide_label=0, reduction="none")
    m0.load_state_dict(m1.state_dict())
    if kind == "oc":
        assert_matches(m0(1 - labels, emb), m1(labels, emb), what="OC loss, flipped convention")
        assert_matches(m0.score(emb), m1.score(emb), what="OC score, flipped convention")
        assert not torch.allclose(m0(labels, emb), m1(labels, emb)), "bonafide_label has no effect on OC"
    else:
        assert_matches(m0(labels, emb), m1(labels, emb), what="AM loss does not depend on bonafide_label")
        s0, s1 = m0.score(emb), m1.score(emb)
        assert_matches(s0, R.am_softmax_score(f64(emb), f64(m1.centers), bonafide_label=0), what="AM score, label 0")
        assert not torch.allclose(s0, s1), "AM score ignores bonafide_label"


@pytest.mark.parametrize("kind", KINDS)
def test_padded_frames_are_not_read(kind, device):
    """Padded frames filled with NaN (and huge values) change nothing: the mean is
    over emb[b, :L_b] only, and their gradient is exactly zero."""
    batch, frames, dim = 12, 50, 64
    lengths = make_lengths(batch, frames, device=device)
    data = randn(batch, frames, dim, dtype=F32)
    padded = torch.arange(frames).unsqueeze(0) >= cpu(lengths).unsqueeze(1)
    data[padded] = float("nan")
    data[padded.roll(1, dims=0) & padded] = 3e38
    emb = data.to(device).requires_grad_()
    module = make_module(kind, dim, device, reduction="none")
    labels = make_labels(batch)
    check_margin(kind, module, label_as(labels, device=device), labels, emb, lengths, "none")


def test_weight_is_not_applied_by_forward(device):
    """ESPnet multiplies by .weight itself: forward must not apply it."""
    emb = build_emb(8, 10, 16, F64, device)
    labels = make_labels(8).to(device)
    for cls in (spoofloss.AMSoftmaxLoss, spoofloss.OCSoftmaxLoss):
        a = cls(weight=1.0, enc_dim=16).to(device, F64)
        b = cls(weight=3.5, enc_dim=16).to(device, F64)
        b.load_state_dict(a.state_dict())
        assert b.weight == 3.5
        assert_matches(b(labels, emb), a(labels, emb), what=f"{cls.__name__} with weight 3.5")
    pred = randn(8, dtype=F64, device=device)
    assert_matches(spoofloss.BinaryLoss(weight=3.5)(pred, labels), spoofloss.BinaryLoss()(pred, labels), what="binary")


# --------------------------------------------------------------------------- #
# BinaryLoss
# --------------------------------------------------------------------------- #


def check_binary(pred, label, label_ref, bonafide_label, reduction):
    module = spoofloss.BinaryLoss(bonafide_label=bonafide_label, reduction=reduction)
    out = module(pred, label)
    n = pred.numel()
    assert out.dtype == expected_out_dtype(pred.dtype)
    assert out.shape == ((n,) if reduction == "none" else ())
    up = upstream_for(out)
    (g,) = torch.autograd.grad(out, [pred], up)
    assert g.dtype == pred.dtype and g.shape == pred.shape
    p64 = f64(pred)
    ref = R.binary_loss(p64, cpu(label_ref), bonafide_label=bonafide_label, reduction=reduction)
    (r,) = torch.autograd.grad(ref, [p64], cpu(up).double())
    scale = max(ref.detach().abs().max().item(), p64.detach().abs().max().item())
    assert_matches(out, ref, what="binary loss", scale=scale)
    # d/dx = sigmoid(x) - t: terms of size ~1 (times the upstream gradient) cancel
    g_scale = up.abs().max().item() / (n if reduction == "mean" else 1)
    assert_matches(g, r, what="d binary loss / d pred", scale=max(g_scale, r.abs().max().item()))
    assert module.score(pred) is pred or torch.equal(module.score(pred), pred)


PRED_SHAPES = {"B": (64,), "B1": (64, 1), "B2": (32, 2), "3d": (4, 5, 6), "N1": (1,), "odd": (1023,)}


@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pred_shape", list(PRED_SHAPES))
def test_binary_matches_reference(pred_shape, reduction, bonafide_label, device):
    shape = PRED_SHAPES[pred_shape]
    pred = (3 * randn(*shape, dtype=F64)).float().to(device).requires_grad_()
    n = pred.numel()
    labels = make_labels(n).reshape(shape)
    check_binary(pred, labels.to(device), labels, bonafide_label, reduction)


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("dtype", [F64, F32, BF16, F16], ids=lambda d: str(d)[6:])
def test_binary_dtypes(dtype, reduction, device):
    pred = (3 * randn(257, dtype=F64)).to(dtype).to(device).requires_grad_()
    labels = make_labels(257)
    check_binary(pred, labels.to(device), labels, 1, reduction)


@pytest.mark.parametrize(
    "label_kind", ["int64", "int32", "bool", "float32", "soft", "flat", "B1"],
)
def test_binary_label_forms(label_kind, device):
    """Any integer/bool/float label; soft targets in [0, 1]; any shape with the
    same number of elements as pred."""
    pred = (3 * randn(48, 1, dtype=F64)).to(device).requires_grad_()
    labels = make_labels(48).reshape(48, 1)
    if label_kind == "soft":
        ref = torch.rand(48, 1, dtype=F64)
        ref[0], ref[1] = 0.0, 1.0
        label = ref.float().to(device)
        ref = ref.float()
    elif label_kind == "flat":
        ref = labels
        label = labels.reshape(48).to(device)
    elif label_kind == "B1":
        pred = (3 * randn(48, dtype=F64)).to(device).requires_grad_()
        ref = labels
        label = labels.to(device)
    else:
        ref = labels
        label = labels.to(getattr(torch, label_kind)).to(device)
    for bonafide_label in (0, 1):
        check_binary(pred, label, ref, bonafide_label, "none")


def test_binary_extreme_logits_are_exact(device):
    """softplus(x) - t x without a sigmoid clamp: a logit of 50 with label 0
    costs 50 (BCELoss would saturate at 100 for 1e4), gradients stay exact."""
    logits = torch.tensor([50.0, -50.0, 1e4, -1e4, 0.0, 30.0, -30.0, 88.0, 50.0, -50.0])
    labels = torch.tensor([0, 1, 0, 1, 1, 1, 0, 0, 1, 0])
    pred = logits.to(device).requires_grad_()
    out = spoofloss.BinaryLoss(reduction="none")(pred, labels.to(device))
    x = logits.double()
    expected = torch.logaddexp(x, torch.zeros_like(x)) - labels.double() * x
    assert_matches(out, expected, what="extreme logits", scale=1.0)
    assert out[0].item() == pytest.approx(50.0, rel=1e-7)
    assert out[2].item() == pytest.approx(1e4, rel=1e-7)
    (g,) = torch.autograd.grad(out.sum(), [pred])
    assert_matches(g, torch.sigmoid(x) - labels.double(), what="extreme logits gradient", scale=1.0)
    # and through the float64 path
    out64 = spoofloss.BinaryLoss(reduction="none")(x.to(device), labels.to(device))
    assert_matches(out64, expected, what="extreme logits, float64", scale=1.0)
