"""AAM-softmax (ArcFace) beyond what tests/test_registry.py checks for every loss.

* the literature's formula, restated here with acos in plain Python / torch
  (the kernels use none), on cosines placed by hand in the plane: both sides of
  the fallback at theta + m = pi, both sides of the easy margin's 0, theta = 0
  and pi exactly;
* the edge cases where the usual copies give NaN: cos = +-1 exactly, a cosine
  rounded past 1 from float16 / bfloat16 inputs, two identical centres, in every
  dtype: finite, matching the float64 reference, gradients bounded;
* gradcheck in float64 at those points (not at the non-differentiable ones:
  the fallback threshold, the sine floor, 0 for the easy margin), gradgradcheck,
  opcheck of the op with both table rows;
* many classes (attack types as classes; 64 centres), a margin schedule,
  argument errors.
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
S, M = 30.0, 0.2  # the module's defaults


# --------------------------------------------------------------------------- #
# the literature's formula, restated independently
# --------------------------------------------------------------------------- #


def arcface_literature(thetas: list[float], y: int, s: float, m: float, easy_margin: bool) -> float:
    """ArcFace's cross-entropy from the angles theta_k (radians, in [0, pi]) to
    each centre, as InsightFace / SpeechBrain write it: the target logit is
    s cos(theta_y + m) while theta_y + m < pi, else s (cos theta_y - m sin(pi - m));
    with easy margin s cos(theta_y + m) while cos theta_y > 0, else s cos theta_y."""
    c_y = math.cos(thetas[y])
    if easy_margin:
        phi = math.cos(thetas[y] + m) if c_y > 0 else c_y
    else:
        phi = math.cos(thetas[y] + m) if thetas[y] + m < math.pi else c_y - math.sin(math.pi - m) * m
    logits = [s * math.cos(t) for t in thetas]
    logits[y] = s * phi
    top = max(logits)
    return top + math.log(sum(math.exp(z - top) for z in logits)) - logits[y]


def plane(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def planar_case(center_angles, x_angles, y, scale_x=1.7):
    """centres [C, 2] and emb [B, 2] in the plane (norms other than 1: only
    directions count), float64, so that theta_bk = |x_angle_b - center_angle_k|
    up to rounding."""
    norms = [0.8, 1.3, 2.0, 0.6][: len(center_angles)]
    centers = torch.tensor([[n * v for v in plane(a)] for n, a in zip(norms, center_angles)], dtype=F64)
    emb = scale_x * torch.tensor([plane(a) for a in x_angles], dtype=F64)
    label = torch.full((len(x_angles),), y, dtype=torch.long)
    return emb, centers, label


def angle_between(a: float, b: float) -> float:
    d = abs(a - b) % (2 * math.pi)
    return min(d, 2 * math.pi - d)


def module(device, centers, **kwargs):
    loss = spoofloss.AAMSoftmaxLoss(enc_dim=centers.shape[1], num_classes=centers.shape[0], **kwargs)
    loss = loss.to(device=device, dtype=centers.dtype)
    with torch.no_grad():
        loss.centers.copy_(centers)
    return loss


# theta_y for the target class (class 0, centre at angle 0), the other centre at 1.1 rad
THRESHOLD = math.pi - M  # theta_y + m = pi
LITERATURE_ANGLES = {
    "theta=pi/3": math.pi / 3,             # hand check: cos(pi/3 + 0.2) = 0.5 cos 0.2 - (sqrt 3 / 2) sin 0.2 = 0.31798
    "theta=1.0": 1.0,
    "theta=0.01": 0.01,                    # above the sine floor (theta > 1e-3): the exact formula
    "below-threshold": THRESHOLD - 1e-3,   # theta + m just under pi: cos(theta + m)
    "above-threshold": THRESHOLD + 1e-3,   # just over: the fallback
    "theta=pi-0.05": math.pi - 0.05,       # deep in the fallback
    "theta=pi": math.pi,                   # cos = -1 exactly: the fallback
    "easy-above-0": math.pi / 2 - 1e-3,
    "easy-below-0": math.pi / 2 + 1e-3,
}


@pytest.mark.parametrize("easy_margin", [False, True], ids=["conventional", "easy"])
@pytest.mark.parametrize("case", list(LITERATURE_ANGLES))
def test_matches_literature_formula(case, easy_margin, device):
    theta = LITERATURE_ANGLES[case]
    other = 1.1
    # x at +theta and at -theta: the other centre then lies at two different angles
    emb, centers, label = planar_case([0.0, other], [theta, -theta], y=0)
    fused = module(device, centers, easy_margin=easy_margin, reduction="none")
    got = fused(label.to(device), emb.to(device))
    want = torch.tensor([arcface_literature([theta, angle_between(a, other)], 0, S, M, easy_margin)
                         for a in (theta, -theta)], dtype=F64)
    # the cosines carry ~1e-16 of rounding, times the logit scale s
    assert_matches(got, want, dtype=F64, scale=S, what=f"{case} loss")
    assert torch.isfinite(got).all()


def test_hand_checked_value(device):
    """One value worked by hand: theta_y = pi/3 to the target centre, the other
    centre orthogonal to x; s = 30, m = 0.2. phi = cos(pi/3 + 0.2) =
    0.5 * 0.980067 - 0.866025 * 0.198669 = 0.317981, so the loss is
    log(1 + exp(30 * (0 - 0.317981))) = log(1 + exp(-9.5394)) = 7.20e-5."""
    emb, centers, label = planar_case([0.0, math.pi / 3 + math.pi / 2], [math.pi / 3], y=0)
    got = module(device, centers, reduction="none")(label.to(device), emb.to(device))
    assert abs(got.item() - 7.20e-5) < 0.01e-5
    assert abs(got.item() - arcface_literature([math.pi / 3, math.pi / 2], 0, S, M, False)) < 1e-15


def torch_literature_loss(emb, centers, label, s, m, easy_margin):
    """The literature formula as a differentiable torch chain through acos
    (float64, away from theta = 0 and pi where acos' derivative is infinite)."""
    cos = F.normalize(emb, dim=-1) @ F.normalize(centers, dim=-1).t()
    theta = torch.acos(cos.gather(1, label[:, None]).squeeze(1))
    c_y = torch.cos(theta)
    if easy_margin:
        phi = torch.where(c_y > 0, torch.cos(theta + m), c_y)
    else:
        phi = torch.where(theta + m < math.pi, torch.cos(theta + m), c_y - math.sin(math.pi - m) * m)
    logits = (s * cos).scatter(1, label[:, None], (s * phi)[:, None])
    return F.cross_entropy(logits, label, reduction="sum")


@pytest.mark.parametrize("easy_margin", [False, True], ids=["conventional", "easy"])
def test_gradient_matches_literature(easy_margin, device):
    """d loss / d emb and d loss / d centres against autograd through acos, at
    random points (5 classes, theta far from 0 and pi)."""
    emb = torch.randn(12, 6, dtype=F64)
    centers = torch.randn(5, 6, dtype=F64)
    label = torch.arange(12) % 5
    fused = module(device, centers, easy_margin=easy_margin, reduction="sum")
    e = emb.to(device).requires_grad_()
    got = torch.autograd.grad(fused(label.to(device), e), [e, fused.centers])
    e64, c64 = emb.clone().requires_grad_(), centers.clone().requires_grad_()
    want = torch.autograd.grad(torch_literature_loss(e64, c64, label, S, M, easy_margin), [e64, c64])
    assert_matches(got[0], want[0], dtype=F64, scale=S, what="d loss / d emb")
    assert_matches(got[1], want[1], dtype=F64, scale=S * 12, what="d loss / d centres")


def test_sine_floor_is_the_documented_deviation():
    """At theta = 0 exactly the floor gives phi = cos m - sqrt(1e-6) sin m, not
    cos m: the documented change, sin m * 1e-3 = 2.0e-4 at m = 0.2."""
    c = torch.ones(1, dtype=F64)
    phi = R.angular_margin_logit(c, torch.full((1,), M, dtype=F64))
    assert phi.item() == pytest.approx(math.cos(M) - math.sqrt(1e-6) * math.sin(M), rel=1e-15)
    assert 0 < math.cos(M) - phi.item() < 2.0e-4


# --------------------------------------------------------------------------- #
# edge cases that give NaN elsewhere
# --------------------------------------------------------------------------- #


def aligned_case(dtype, kind, batch=24, dim=16, exact=True):
    """emb [B, D] of ``dtype`` and float32 centres [2, D] whose target cosines
    (class 0) are exactly +-1 in exact arithmetic: the direction is rounded to
    ``dtype`` first and scaled by powers of two, so emb and the centre stay
    exactly parallel after rounding. "parallel": x_b = r_b d; "antiparallel":
    x_b = -r_b d; "both": both centres along d (the other class's probability
    then stays large, so the target's derivative matters). exact=False: radii
    drawn at random instead, so that rounding leaves each x_b a different few
    ulps off the centre's direction."""
    direction = torch.randn(dim, dtype=F64)
    direction = (direction / direction.norm()).to(dtype).to(F64)
    radii = 2.0 ** torch.randint(-2, 3, (batch, 1)).to(F64) if exact else torch.rand(batch, 1, dtype=F64) * 4 + 0.25
    sign = -1.0 if kind == "antiparallel" else 1.0
    emb = (sign * radii * direction).to(dtype)
    assert not exact or torch.equal(emb.to(F64), sign * radii * direction), "emb is not exactly parallel"
    other = torch.randn(dim, dtype=F64)
    centers = torch.stack([direction * 1.5, direction * 0.75 if kind == "both" else other]).to(F32)
    label = torch.zeros(batch, dtype=torch.long)
    return emb, centers, label


def reference_at_kernel_cosine(label, emb, centers, kernel_cos_y, easy_margin):
    """The float64 reference per utterance, with the target cosine replaced by
    the kernels' own (their score, bona fide label 0 = the target class here).
    Near cos = 1 the loss is ill-conditioned in the cosine (d phi / d cos ~
    sin m / sin theta, up to 630 at the sine floor), so a float32 cosine that
    differs from the float64 one in its last bit moves the loss by ~1e-3: the
    epilogue is checked at the cosine it was given, the cosine itself against
    the reference by the score."""
    cos = R.cosines(emb.to(F64), centers.to(F64))
    cos[:, 0] = kernel_cos_y.detach().cpu().to(F64)
    return R.aam_softmax_from_cosines(cos, label, S, M, M, 0, easy_margin)


@pytest.mark.parametrize("easy_margin", [False, True], ids=["conventional", "easy"])
@pytest.mark.parametrize("kind", ["parallel", "antiparallel", "both"])
@pytest.mark.parametrize("dtype", [F32, F64, F16, BF16], ids=["float32", "float64", "float16", "bfloat16"])
def test_cos_plus_minus_one_is_finite_and_matches_reference(dtype, kind, easy_margin, device):
    emb, centers, label = aligned_case(dtype, kind)
    fused = module(device, centers.to(F64 if dtype == F64 else F32), easy_margin=easy_margin, reduction="none",
                   bonafide_label=0)
    e = emb.to(device).requires_grad_()
    loss, score = fused.forward_and_score(label.to(device), e)
    g_emb, g_centers = torch.autograd.grad(loss.sum(), [e, fused.centers])
    for name, t in (("loss", loss), ("score", score), ("d emb", g_emb), ("d centres", g_centers)):
        assert torch.isfinite(t).all(), f"{kind}: non-finite {name}"

    e64, c64 = emb.to(F64).requires_grad_(), fused.centers.detach().cpu().to(F64).requires_grad_()
    ref = R.aam_softmax_loss(label, e64, c64, s=S, m=M, easy_margin=easy_margin, reduction="none", bonafide_label=0)
    ref_score = R.am_softmax_score(e64, c64, bonafide_label=0)
    assert_matches(score, ref_score, dtype=dtype if dtype == F64 else F32, scale=1.0, what=f"{kind} score")
    if dtype == F64:
        # the same function exactly, gradients included (cos is +-1 to 1e-16,
        # deep inside the sine floor, far from any branch point)
        assert_matches(loss, ref, dtype=F64, scale=S, what=f"{kind} loss")
        want = torch.autograd.grad(ref.sum(), [e64, c64])
        assert_matches(g_emb, want[0], dtype=F64, scale=S / emb.norm(dim=1, keepdim=True).to(F64), what="d emb")
        assert_matches(g_centers, want[1], dtype=F64, scale=S * len(label), what="d centres")
        return
    want_loss = reference_at_kernel_cosine(label, emb, fused.centers, score, easy_margin)
    assert_matches(loss, want_loss, dtype=F32, scale=S, what=f"{kind} loss")
    # Rounded cosines land on either side of the sine floor (1 - 2^-24, the
    # float32 below 1, keeps the exact formula), where the derivative in cos
    # jumps; what holds on either side is the size of the gradient: |d loss /
    # d x| <= s (|phi'(c)| sin theta + sum_k p_k sin theta_k) / |x| <= 3 s / |x|.
    bound = 3 * S / emb.to(F64).norm(dim=1)
    assert (g_emb.detach().cpu().to(F64).norm(dim=1) <= bound).all(), "gradient larger than the bound"


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
def test_naive_copy_is_nan_fused_is_not(dtype, device):
    """Inputs on which the usual copy (sqrt(1 - cos^2) in the input's dtype, as
    WeSpeaker's ArcMarginProduct computes under autocast) gives NaN, in its
    value (a cosine rounded past 1) or its gradient (the derivative of sqrt at
    0): the fused loss and its gradient stay finite, and match the reference."""
    emb, centers, label = aligned_case(dtype, "both", batch=64)
    naive_emb = emb.clone().requires_grad_()
    cos = F.linear(F.normalize(naive_emb), F.normalize(centers.to(dtype)))
    naive_phi = cos * math.cos(M) - torch.sqrt(1.0 - cos * cos) * math.sin(M)
    logits = S * torch.cat([naive_phi[:, :1], cos[:, 1:]], dim=1)
    naive_loss = F.cross_entropy(logits.float(), label)
    naive_loss.backward()
    assert torch.isnan(naive_loss) or torch.isnan(naive_emb.grad).any(), \
        "the inputs no longer break the naive copy"
    fused = module(device, centers, reduction="none", bonafide_label=0)
    e = emb.to(device).requires_grad_()
    loss, score = fused.forward_and_score(label.to(device), e)
    (grad,) = torch.autograd.grad(loss.sum(), [e])
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_matches(loss, reference_at_kernel_cosine(label, emb, centers, score, False), dtype=F32, scale=S,
                   what="loss")


@pytest.mark.parametrize("dtype", [F16, F32], ids=["float16", "float32"])
def test_kernel_cosine_at_or_past_one(dtype, device):
    """emb parallel to its centre up to rounding: the kernels' float32 cosine
    (the score, bona fide label = the target class) comes out at or past 1 for
    some utterances, the case a sqrt(1 - cos^2) without a floor turns into NaN."""
    emb, centers, label = aligned_case(dtype, "both", batch=64, exact=False)
    fused = module(device, centers, reduction="sum", bonafide_label=0)
    e = emb.to(device).requires_grad_()
    loss, score = fused.forward_and_score(label.to(device), e)
    assert (score >= 1).any(), "no kernel cosine reached 1: the test misses its edge"
    (grad,) = torch.autograd.grad(loss, [e])
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


# --------------------------------------------------------------------------- #
# gradcheck / gradgradcheck / opcheck
# --------------------------------------------------------------------------- #

GRADCHECK_ANGLES = {
    "theta=0": 0.0,                        # cos = 1 exactly, inside the sine floor (smooth there)
    "theta=1e-5": 1e-5,                    # inside the floor
    "theta=0.01": 0.01,                    # outside it
    "below-threshold": THRESHOLD - 1e-3,
    "above-threshold": THRESHOLD + 1e-3,
    "theta=pi": math.pi,                   # cos = -1 exactly
    "easy-above-0": math.pi / 2 - 1e-3,
    "easy-below-0": math.pi / 2 + 1e-3,
}


@pytest.mark.parametrize("easy_margin", [False, True], ids=["conventional", "easy"])
@pytest.mark.parametrize("case", list(GRADCHECK_ANGLES))
def test_gradcheck_at_edges(case, easy_margin, device):
    theta = GRADCHECK_ANGLES[case]
    emb, centers, label = planar_case([0.0, 1.1, 2.5], [theta, -theta], y=0)
    # a third dimension, so perturbations leave the plane too
    emb = torch.cat([emb, torch.zeros(2, 1, dtype=F64)], dim=1).to(device).requires_grad_()
    centers = torch.cat([centers, torch.zeros(3, 1, dtype=F64)], dim=1).to(device).requires_grad_()
    code = ops.loss_code("aam_softmax_easy_margin" if easy_margin else "aam_softmax")
    label = label.to(device)

    def fn(e, c):
        return ops.cosine_margin_loss(e, c, label, None, code, S, M, M, 1, ops.REDUCTIONS["none"])

    assert torch.autograd.gradcheck(fn, (emb, centers), eps=1e-7, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["aam_softmax", "aam_softmax_easy_margin"])
def test_gradgradcheck(name, device):
    emb = torch.randn(4, 3, 5, dtype=F64, device=device).requires_grad_()
    centers = torch.randn(3, 5, dtype=F64, device=device).requires_grad_()
    label = torch.tensor([0, 1, 2, 1], device=device)
    lengths = torch.tensor([3, 1, 2, 3], device=device)
    code = ops.loss_code(name)

    def fn(e, c):
        loss, score = ops.cosine_margin_loss_and_score(e, c, label, lengths, code, 5.0, 0.3, 0.25, 1,
                                                       ops.REDUCTIONS["sum"])
        return loss, score

    assert torch.autograd.gradgradcheck(fn, (emb, centers), eps=1e-6, atol=1e-6, rtol=1e-5)


def _opcheck(op, args):
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("name", ["aam_softmax", "aam_softmax_easy_margin"])
def test_opcheck(name, requires_grad, device):
    emb = torch.randn(5, 4, 6, device=device).requires_grad_(requires_grad)
    centers = torch.randn(4, 6, device=device).requires_grad_(requires_grad)
    label = torch.tensor([0, 3, 1, 2, 1], device=device)
    lengths = make_lengths(5, 4, device=device)
    posterior = ops.score_rule_code("log_posterior")
    args = (emb, centers, label, lengths, None, ops.loss_code(name), S, M, 0.1, 1, posterior, 1, ops.REDUCTIONS["mean"])
    _opcheck(torch.ops.spoofloss.cosine_margin_loss.default, args)
    loss, score, pooled = torch.ops.spoofloss.cosine_margin_loss.default(*args)
    backward_args = (torch.rand_like(loss), torch.rand_like(score), pooled.detach(), centers.detach(), label, lengths,
                     None, list(emb.shape), emb.dtype, ops.loss_code(name), S, M, 0.1, 1, posterior, 1,
                     ops.REDUCTIONS["mean"])
    _opcheck(torch.ops.spoofloss._cosine_margin_loss_backward.default, backward_args)


# --------------------------------------------------------------------------- #
# many classes, schedules, arguments
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("easy_margin", [False, True], ids=["conventional", "easy"])
@pytest.mark.parametrize("num_classes,bonafide_label", [(7, 0), (64, 41)])
def test_many_classes_match_reference(num_classes, bonafide_label, easy_margin, device):
    """Attack types as classes (bona fide one of them), up to 64 centres:
    loss, score (the bona fide cosine) and both gradients against the twin."""
    fused = spoofloss.AAMSoftmaxLoss(enc_dim=8, num_classes=num_classes, bonafide_label=bonafide_label,
                                     easy_margin=easy_margin, reduction="mean").to(device)
    twin = R.AAMSoftmaxLoss(enc_dim=8, num_classes=num_classes, bonafide_label=bonafide_label,
                            easy_margin=easy_margin, reduction="mean").double()
    twin.load_state_dict(fused.state_dict())
    emb = torch.randn(10, 5, 8)
    lengths = make_lengths(10, 5)
    label = torch.randint(0, num_classes, (10,))
    label[:2] = bonafide_label
    e = emb.to(device).requires_grad_()
    loss, score = fused.forward_and_score(label.to(device), e, lengths.to(device))
    got = torch.autograd.grad(loss + score.sum(), [e, fused.centers])
    e64 = emb.double().requires_grad_()
    ref_loss, ref_score = twin(label, e64, lengths), twin.score(e64, lengths)
    want = torch.autograd.grad(ref_loss + ref_score.sum(), [e64, twin.centers])
    assert_matches(loss, ref_loss, dtype=F32, scale=S, what="loss")
    assert_matches(score, ref_score, dtype=F32, scale=1.0, what="score")
    assert_matches(got[0], want[0], dtype=F32, what="d emb")
    assert_matches(got[1], want[1], dtype=F32, what="d centres")


def test_margin_schedule_and_easy_margin_are_read_at_every_call(device):
    fused = spoofloss.AAMSoftmaxLoss(enc_dim=6, num_classes=3, reduction="none").to(device).double()
    emb = torch.randn(8, 6, dtype=F64)
    label = torch.arange(8) % 3
    centers = fused.centers.detach().cpu()
    for m, easy in ((0.0, False), (0.1, False), (0.35, True), (0.2, False)):
        fused.m, fused.easy_margin = m, easy
        got = fused(label.to(device), emb.to(device))
        want = R.aam_softmax_loss(label, emb, centers, m=m, easy_margin=easy, reduction="none")
        assert_matches(got, want, dtype=F64, scale=S, what=f"m={m} easy={easy}")
    # m = 0 is the plain normalised softmax cross-entropy with scale s
    fused.m, fused.easy_margin = 0.0, False
    cos = R.cosines(emb, centers)
    assert_matches(fused(label.to(device), emb.to(device)), F.cross_entropy(S * cos, label, reduction="none"),
                   dtype=F64, scale=S, what="m = 0")


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        spoofloss.AAMSoftmaxLoss(num_classes=1)
    with pytest.raises(ValueError, match="bonafide_label"):
        spoofloss.AAMSoftmaxLoss(num_classes=3, bonafide_label=3)
    with pytest.raises(ValueError, match="score"):
        spoofloss.AAMSoftmaxLoss(score="logit")
    with pytest.raises(ValueError, match="easy_margin"):
        spoofloss.AAMSoftmaxLoss(easy_margin="yes")
    with pytest.raises(ValueError, match="reduction"):
        spoofloss.AAMSoftmaxLoss(reduction="avg")


def test_label_outside_the_classes(device):
    fused = spoofloss.AAMSoftmaxLoss(enc_dim=4, num_classes=3, reduction="none").to(device)
    label = torch.tensor([0, 3, 1], device=device)
    emb = torch.randn(3, 4, device=device)
    if runs_cuda_kernels(device):
        loss = fused(label, emb)
        assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    else:
        with pytest.raises(ValueError, match=r"label\[1\] = 3.* class index in \[0, 3\)"):
            fused(label, emb)
