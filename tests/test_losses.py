"""Every registered loss module against its float64 twin from spoofloss.reference.

Each test builds a registered loss (spoofloss.registry.LOSSES; a loss added
there is tested here without editing this file) with fresh random inputs
(seeded per test), runs the fused module forward and backward under the
NaN-poisoning fixture, recomputes everything in float64 with the twin from the
very values the fused code saw (low-precision inputs are rounded first), and
compares every element of the loss, the score and the gradient of each with
respect to the input and every parameter (helpers.steps, with the tolerance
policy of helpers.tolerance). Output dtypes, gradient dtypes and exact zeros
in padded frames are asserted alongside.

Tests about one loss's own formula live in test_<loss>.py.
"""

from __future__ import annotations

import pytest
import torch

from spoofloss.registry import LOSSES

from helpers.inputs import cpu, make_labels
from helpers.losses import build, configurations, make_call
from helpers.steps import check_step
from helpers.tolerance import assert_matches

pytestmark = pytest.mark.usefixtures("poison")

REDUCTIONS = ["none", "mean", "sum"]
F64, F32, BF16, F16 = torch.float64, torch.float32, torch.bfloat16, torch.float16

COSINE = configurations("cosine", variants=False)
COSINE_VARIANTS = configurations("cosine")
LOGITS = configurations("logits", variants=False)
EVERY_LOSS = configurations(variants=False)
EVERY_VARIANT = configurations()


# --------------------------------------------------------------------------- #
# every configuration, every reduction
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", [F32, F64, BF16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,variant", EVERY_VARIANT)
def test_every_configuration(name, variant, reduction, dtype, device):
    """Each registered configuration on a small batch (lengths given for the cosine losses)."""
    fused, twin = build(name, variant, enc_dim=24, device=device, reduction=reduction)
    call = make_call(fused, 20, 15, 24, dtype=dtype, device=device)
    check_step(fused, twin, call, f"{name} {variant} {reduction} {dtype}")


# --------------------------------------------------------------------------- #
# cosine losses: shapes, dtypes, layouts, label forms
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
@pytest.mark.parametrize("name,variant", COSINE)
def test_cosine_realistic_float32(name, variant, shape, reduction, with_lengths, device):
    batch, frames, dim = shape
    fused, twin = build(name, variant, enc_dim=dim, device=device, reduction=reduction)
    call = make_call(fused, batch, frames, dim, device=device, lengths="int64" if with_lengths else None)
    check_step(fused, twin, call, f"{name} {shape} {reduction}")


DTYPE_CASES = [(F64, F64), (F64, F32), (BF16, F32), (BF16, BF16), (F16, F32), (F16, F16)]


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize(
    "emb_dtype,centers_dtype", DTYPE_CASES,
    ids=[f"emb-{str(a)[6:]}-centres-{str(b)[6:]}" for a, b in DTYPE_CASES],
)
@pytest.mark.parametrize("name,variant", COSINE)
def test_cosine_dtypes(name, variant, emb_dtype, centers_dtype, reduction, device):
    """float64 within 1e-10; bf16/fp16 (inputs rounded first, reference from the
    rounded values) within the low-precision rtol for gradients and float32's
    for the float32 loss; the centres may keep their own dtype (AMP)."""
    batch, frames, dim = 32, 50, 72
    fused, twin = build(name, variant, enc_dim=dim, device=device, parameter_dtype=centers_dtype,
                        reduction=reduction)
    call = make_call(fused, batch, frames, dim, dtype=emb_dtype, device=device, lengths="int32")
    check_step(fused, twin, call, f"{name} emb {emb_dtype} centres {centers_dtype}")


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
@pytest.mark.parametrize("name,variant", COSINE)
def test_cosine_odd_shapes(name, variant, case, reduction, device):
    batch, frames, dim, layout, with_lengths = ODD[case]
    fused, twin = build(name, variant, enc_dim=dim, device=device, reduction=reduction)
    call = make_call(fused, batch, frames, dim, device=device, layout=layout,
                     lengths="int64" if with_lengths else None)
    check_step(fused, twin, call, f"{name} {case} {reduction}")


LABEL_DTYPES = [torch.int64, torch.int32, torch.bool, torch.float32, torch.float64]


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("label_shape", ["B", "B1"])
@pytest.mark.parametrize("name,variant", EVERY_VARIANT)
def test_label_forms(name, variant, label_shape, label_dtype, device):
    """Labels [B] / [B, 1] of integer, bool (two classes) and float dtypes, for
    every configuration (bonafide_label 0 and more classes included), float64."""
    fused, twin = build(name, variant, enc_dim=40, device=device, parameter_dtype=F64, reduction="none")
    if label_dtype == torch.bool and LOSSES[name].label_classes(fused) > 2:
        pytest.skip("a bool label holds two classes only")
    call = make_call(fused, 16, 25, 40, dtype=F64, device=device, label_shape=label_shape, label_dtype=label_dtype)
    check_step(fused, twin, call, f"{name} {variant} label {label_shape} {label_dtype}")


@pytest.mark.parametrize("name,variant", COSINE)
def test_padded_frames_are_not_read(name, variant, device):
    """Padded frames filled with NaN (and huge values) change nothing: the mean is
    over emb[b, :L_b] only, and their gradient is exactly zero."""
    batch, frames, dim = 12, 50, 64
    fused, twin = build(name, variant, enc_dim=dim, device=device, reduction="none")
    call = make_call(fused, batch, frames, dim, device=device)
    data = cpu(call.x).clone()
    padded = torch.arange(frames).unsqueeze(0) >= cpu(call.lengths).unsqueeze(1)
    data[padded] = float("nan")
    data[padded.roll(1, dims=0) & padded] = 3e38
    check_step(fused, twin, call.with_input(data.to(device).requires_grad_()), f"{name} NaN padding")


@pytest.mark.parametrize("name,variant", COSINE)
def test_forward_and_score_is_forward_and_score(name, variant, device):
    """One pass for both: the same loss, score and gradients, bit for bit, as
    forward and score called apart (each checked against the twin above)."""
    fused, _ = build(name, variant, enc_dim=32, device=device)
    call = make_call(fused, 16, 30, 32, device=device)
    loss, score = call.forward_and_score(fused)
    assert score.requires_grad
    apart = (call.forward(fused), call.score(fused))
    for got, want, what in zip((loss, score), apart, ("loss", "score")):
        assert torch.equal(got, want), f"{name}: forward_and_score's {what} differs from {what} called alone"
        leaves = [call.x] + list(fused.parameters())
        for g, w in zip(torch.autograd.grad(got, leaves, torch.ones_like(got), retain_graph=True),
                        torch.autograd.grad(want, leaves, torch.ones_like(want), retain_graph=True)):
            assert torch.equal(g, w), f"{name}: forward_and_score's {what} gradient differs"


# --------------------------------------------------------------------------- #
# logit losses
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [F64, F32, BF16, F16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("pred_shape", ["B", "B1"])
@pytest.mark.parametrize("name,variant", LOGITS)
def test_logits_dtypes_and_shapes(name, variant, pred_shape, dtype, reduction, device):
    batch = 257
    fused, twin = build(name, variant, device=device, reduction=reduction)
    call = make_call(fused, batch, dtype=dtype, device=device, pred_shape=(batch,) if pred_shape == "B" else (batch, 1))
    check_step(fused, twin, call, f"{name} pred {pred_shape} {dtype} {reduction}")


# --------------------------------------------------------------------------- #
# every loss
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name,variant", EVERY_LOSS)
def test_weight_is_not_applied_by_forward(name, variant, device):
    """ESPnet multiplies by .weight itself: forward must not apply it."""
    plain, _ = build(name, variant, enc_dim=16, device=device, parameter_dtype=F64)
    weighted, _ = build(name, variant, enc_dim=16, device=device, parameter_dtype=F64, weight=3.5)
    weighted.load_state_dict(plain.state_dict())
    assert weighted.weight == 3.5
    call = make_call(plain, 8, 10, 16, dtype=F64, device=device)
    assert_matches(call.forward(weighted), call.forward(plain), what=f"{name} with weight 3.5")


def test_labels_cover_every_class():
    """The helper the tests draw labels with puts every class in a batch that can hold them."""
    for classes in (2, 5):
        for batch in (classes, 3 * classes):
            assert set(make_labels(batch, classes).tolist()) == set(range(classes))
