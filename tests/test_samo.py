"""SAMO's multi-centre one-class softmax (spoofloss.MultiCenterOCSoftmaxLoss).

tests/test_registry.py runs the generic checks (float64 parity under every
reduction and dtype, gradcheck, compile) with a centre index per utterance
(some -1). Here: what is particular to this loss. Which centre an utterance
is pulled to or pushed from (hand-built cosines where the answer is known),
that only that centre gets a gradient, ties, a bad centre index on each
backend, the path without center_index, the score rules, K = 1 (OC-softmax)
and K = 64, the speaker-mean loader against float64, opcheck and double
backward of the ops with this loss's code.
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
from helpers.inputs import cpu, f64, make_labels, make_lengths, randn
from helpers.steps import natural_scales
from helpers.tolerance import assert_matches

pytestmark = pytest.mark.usefixtures("poison")

F64 = torch.float64
SAMO = ops.loss_code("samo")
NEAREST, OWN = ops.score_rule_code("nearest_center"), ops.score_rule_code("utterance_center")
NONE, MEAN, SUM = ops.REDUCTIONS["none"], ops.REDUCTIONS["mean"], ops.REDUCTIONS["sum"]


def softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def module(num_centers=3, enc_dim=5, device="cpu", dtype=torch.float32, **kwargs):
    """A fused SAMO module with random (not one-hot) centres."""
    loss = spoofloss.MultiCenterOCSoftmaxLoss(enc_dim=enc_dim, num_centers=num_centers, **kwargs)
    with torch.no_grad():
        loss.centers.copy_(torch.randn(num_centers, enc_dim, dtype=F64))
    return loss.to(device=device, dtype=dtype)


def center_indices(batch: int, num_centers: int) -> torch.Tensor:
    """Centre indices [B]: every centre where B allows, a third -1."""
    index = torch.randint(0, num_centers, (batch,))
    index[: min(batch, num_centers)] = torch.randperm(num_centers)[:batch]
    index = index[torch.randperm(batch)]
    index[torch.randperm(batch)[: max(1, batch // 3)]] = -1
    return index


def samo_cos_gradient(cos, label, center_index, up, reduction, m, bonafide_label=1):
    """d loss / d cos [B, K] of the reference (upstream included): the tolerance scales."""
    cos = cos.detach().clone().requires_grad_()
    index = None if center_index is None else cpu(center_index).long()
    per = R.samo_from_cosines(cos, cpu(label).long(), index, m.m_real, m.m_fake, m.alpha, bonafide_label)
    out = per if reduction == "none" else (per.mean() if reduction == "mean" else per.sum())
    return torch.autograd.grad(out, cos, cpu(up).double())[0]


def check_step(m, label, emb, lengths, center_index, reduction, what, dtype=F64):
    """Loss, score and the gradients of both (emb and centres) against the float64 reference."""
    m.reduction = reduction
    loss = m(label, emb, lengths, center_index)
    score = m.score(emb, lengths, center_index)
    up_loss, up_score = torch.rand_like(loss) + 0.5, torch.rand_like(score) + 0.5
    g_loss = torch.autograd.grad(loss, [emb, m.centers], up_loss, retain_graph=True)
    g_score = torch.autograd.grad(score, [emb, m.centers], up_score)

    e64, c64, lens = f64(emb), f64(m.centers), cpu(lengths)
    index = cpu(center_index)
    ref_loss = R.samo_loss(cpu(label), e64, c64, lens, index, m_real=m.m_real, m_fake=m.m_fake, alpha=m.alpha,
                           bonafide_label=m.bonafide_label, reduction=reduction)
    ref_score = R.samo_score(e64, c64, lens, index)
    r_loss = torch.autograd.grad(ref_loss, [e64, c64], cpu(up_loss).double(), retain_graph=True)
    r_score = torch.autograd.grad(ref_score, [e64, c64], cpu(up_score).double())
    cos = R.cosines(e64.detach(), c64.detach(), lens)
    loss_scales = natural_scales(samo_cos_gradient(cos, label, index, up_loss, reduction, m, m.bonafide_label),
                                 e64, c64, lens)
    g_score_cos = torch.autograd.grad(R.own_or_nearest_cosine(cos.requires_grad_(), index.long())
                                      if index is not None else cos.requires_grad_().max(dim=1).values,
                                      cos, cpu(up_score).double())[0]
    score_scales = natural_scales(g_score_cos, e64, c64, lens)
    assert_matches(loss, ref_loss, dtype=dtype, what=f"{what} loss", scale=max(m.alpha, ref_loss.abs().max().item()))
    assert_matches(score, ref_score, dtype=dtype, what=f"{what} score", scale=1.0)
    for got, want, scale, name in zip(g_loss + g_score, r_loss + r_score, loss_scales + score_scales,
                                      ("d loss / d emb", "d loss / d centres", "d score / d emb",
                                       "d score / d centres")):
        assert_matches(got, want, dtype=dtype, what=f"{what} {name}", scale=scale)


# --------------------------------------------------------------------------- #
# Against the reference: without a centre index, with one, K = 1 ... 64
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("bonafide_label", [1, 0])
@pytest.mark.parametrize("given", [False, True], ids=["nearest", "given"])
@pytest.mark.parametrize("num_centers", [1, 3, 64])
def test_matches_reference(num_centers, given, bonafide_label, dtype, device):
    batch, frames, dim = 12, 6, 8
    m = module(num_centers, dim, device, dtype=dtype, bonafide_label=bonafide_label)
    emb = randn(batch, frames, dim, dtype=dtype, device=device).requires_grad_()
    lengths = make_lengths(batch, frames, device=device)
    label = make_labels(batch).to(device)
    index = center_indices(batch, num_centers).to(device) if given else None
    for reduction in ("none", "mean", "sum"):
        check_step(m, label, emb, lengths, index, reduction, f"K={num_centers} {reduction}", dtype)


def test_64_centers_each_named(device):
    """C = 64 at a realistic D: every centre named by some bona fide utterance,
    rank-2 emb, float32 (the tolerance of float32 arithmetic)."""
    batch, dim = 96, 128
    m = module(64, dim, device)
    emb = randn(batch, dim, device=device).requires_grad_()
    label = torch.ones(batch, dtype=torch.long)
    label[64:] = 0
    index = torch.cat([torch.randperm(64), torch.full((32,), -1)]).to(device)
    check_step(m, label.to(device), emb, None, index, "none", "K=64", torch.float32)


def test_one_center_is_oc_softmax(device):
    """With one centre every utterance takes cos_0: SAMO is OC-softmax."""
    batch, frames, dim = 9, 5, 7
    samo = module(1, dim, device, m_real=0.6, m_fake=0.1, alpha=15.0, reduction="none")
    oc = spoofloss.OCSoftmaxLoss(enc_dim=dim, m_real=0.6, m_fake=0.1, alpha=15.0, reduction="none").to(device)
    with torch.no_grad():
        oc.center.copy_(samo.centers)
    emb = randn(batch, frames, dim, device=device)
    lengths, label = make_lengths(batch, frames, device=device), make_labels(batch).to(device)
    index = torch.zeros(batch, dtype=torch.long, device=device)
    assert torch.equal(samo(label, emb, lengths), oc(label, emb, lengths))
    assert torch.equal(samo(label, emb, lengths, index), oc(label, emb, lengths))
    assert torch.equal(samo.score(emb, lengths), oc.score(emb, lengths))


# --------------------------------------------------------------------------- #
# Which centre: hand-built cosines
# --------------------------------------------------------------------------- #

# Centres e_0, e_1, e_2 of R^3 and rank-2 embeddings, so cos_k = x_k / |x|.
HAND_EMB = [
    [0.2, 0.9, 0.4],   # nearest: 1
    [0.7, 0.1, -0.3],  # nearest: 0
    [-0.5, 0.3, 0.8],  # nearest: 2
    [0.6, 0.5, 0.1],   # nearest: 0
]


def hand_cos(row):
    norm = math.sqrt(sum(v * v for v in row))
    return [v / norm for v in row]


@pytest.mark.parametrize("bonafide_label", [1, 0])
def test_which_center_hand_built(bonafide_label, device):
    m = spoofloss.MultiCenterOCSoftmaxLoss(enc_dim=3, num_centers=3, bonafide_label=bonafide_label,
                                           reduction="none").to(device=device, dtype=F64)
    with torch.no_grad():
        m.centers.copy_(torch.eye(3, dtype=F64) * torch.tensor([[2.0], [0.5], [3.0]], dtype=F64))  # norms differ
    emb = torch.tensor(HAND_EMB, dtype=F64, device=device)
    bona, spoof = bonafide_label, 1 - bonafide_label
    # utterance: (label, centre index) -> the centre its loss uses
    cases = [
        (bona, -1, 1),   # bona fide, no centre named: the nearest
        (bona, 2, 2),    # bona fide, its own centre, not the nearest
        (spoof, 0, 2),   # spoof: the nearest, whatever index it carries
        (spoof, -1, 0),  # spoof: the nearest
    ]
    label = torch.tensor([c[0] for c in cases], device=device)
    index = torch.tensor([c[1] for c in cases], device=device)
    loss = m(label, emb, None, index)
    no_index = m(label, emb)
    for b, (lab, _, j) in enumerate(cases):
        cos = hand_cos(HAND_EMB[b])
        nearest = max(range(3), key=lambda k: cos[k])
        if lab == bona:
            expected, expected_nearest = softplus(20 * (0.7 - cos[j])), softplus(20 * (0.7 - cos[nearest]))
        else:
            expected = expected_nearest = softplus(20 * (cos[j] - 0.0))
        assert loss[b].item() == pytest.approx(expected, rel=1e-12, abs=1e-12), (b, cases[b])
        assert no_index[b].item() == pytest.approx(expected_nearest, rel=1e-12, abs=1e-12), (b, cases[b])
    # scores: the largest cosine; with the index, the own centre's (the largest where -1), spoof included
    want_nearest = [max(hand_cos(r)) for r in HAND_EMB]
    want_own = [hand_cos(HAND_EMB[b])[c[1]] if c[1] >= 0 else want_nearest[b] for b, c in enumerate(cases)]
    assert m.score(emb).tolist() == pytest.approx(want_nearest, rel=1e-12)
    assert m.score(emb, None, index).tolist() == pytest.approx(want_own, rel=1e-12)
    _, score_with_loss = m.forward_and_score(label, emb, None, index)
    assert torch.equal(score_with_loss, m.score(emb, None, index))


@pytest.mark.parametrize("case", ["bonafide-own", "bonafide-nearest", "spoof-with-index", "spoof"])
def test_gradient_reaches_only_the_chosen_center(case, device):
    """One utterance: the loss's gradient is zero (exactly) on every centre but
    the one it uses; the score's likewise."""
    m = module(5, 6, device, dtype=F64)
    emb = randn(1, 4, 6, dtype=F64, device=device)
    cos = R.cosines(emb.cpu(), m.centers.detach().cpu())[0]
    nearest = int(cos.argmax())
    own = (nearest + 2) % 5
    label = torch.tensor([0 if case.startswith("spoof") else 1], device=device)
    index = {"bonafide-own": own, "bonafide-nearest": -1, "spoof-with-index": own, "spoof": -1}[case]
    chosen = own if case == "bonafide-own" else nearest
    index = torch.tensor([index], device=device)
    (g,) = torch.autograd.grad(m(label, emb, None, index), m.centers)
    others = [k for k in range(5) if k != chosen]
    assert bool((g[others] == 0).all()), g
    assert bool((g[chosen] != 0).any()), g
    (g_score,) = torch.autograd.grad(m.score(emb, None, index), m.centers)
    score_centre = own if index.item() >= 0 else nearest
    assert bool((g_score[[k for k in range(5) if k != score_centre]] == 0).all()), g_score


@pytest.mark.parametrize("num_centers,first,second", [(3, 0, 1), (64, 17, 50)])
def test_ties_go_to_the_first_center(num_centers, first, second, device):
    """Two equal centres that are both nearest: the first of them takes the loss's
    (and the score's) gradient, as torch.argmax and the reference decide."""
    dim = 8
    m = module(num_centers, dim, device, dtype=F64, reduction="sum")
    twin = F.normalize(randn(dim, dtype=F64), dim=0)
    emb = (3 * twin + 0.3 * randn(4, dim, dtype=F64)).to(device)  # the twin centres are everyone's nearest
    with torch.no_grad():
        m.centers[first] = twin * 3.0
        m.centers[second] = twin * 3.0
    label = torch.tensor([1, 0, 1, 0], device=device)
    cos = R.cosines(emb.cpu(), m.centers.detach().cpu())
    assert bool((cos[:, first] == cos[:, second]).all()) and bool((cos.argmax(dim=1) == first).all())
    for what, fused, ref in (
        ("loss", lambda c: m(label, emb), lambda c: R.samo_loss(cpu(label), emb.cpu(), c, reduction="sum",
                                                              m_real=m.m_real, m_fake=m.m_fake, alpha=m.alpha)),
        ("score", lambda c: m.score(emb).sum(), lambda c: R.samo_score(emb.cpu(), c).sum()),
    ):
        (g,) = torch.autograd.grad(fused(None), m.centers)
        c64 = m.centers.detach().cpu().clone().requires_grad_()
        (g_ref,) = torch.autograd.grad(ref(c64), c64)
        assert bool((g[second] == 0).all()) and bool((g[first] != 0).all()), f"{what}: {g[[first, second]]}"
        assert bool((g_ref[second] == 0).all()), f"reference {what}: {g_ref[[first, second]]}"
        assert_matches(g, g_ref, what=f"{what} d / d centres at a tie")


def test_nan_center_is_never_passed_over(device):
    """A NaN centre counts as the nearest (torch.argmax's rule), so every loss
    and nearest-centre score is NaN, as the reference's, and not silently
    computed from the other centres."""
    m = module(4, 5, device, reduction="none")
    with torch.no_grad():
        m.centers[2] = float("nan")
    emb, label = randn(6, 3, 5, device=device), make_labels(6).to(device)
    loss, score = m.forward_and_score(label, emb)
    ref = R.samo_loss(cpu(label), emb.cpu().double(), m.centers.detach().cpu().double(), reduction="none")
    assert bool(torch.isnan(ref).all()) and bool(torch.isnan(loss).all()) and bool(torch.isnan(score).all())
    own = torch.tensor([0, 1, 3, 0, 1, 3], device=device)  # a bona fide utterance with its own finite centre
    loss_own = m(label, emb, None, own)
    ref_own = R.samo_loss(cpu(label), emb.cpu().double(), m.centers.detach().cpu().double(), None, cpu(own),
                          reduction="none")
    assert torch.equal(torch.isnan(loss_own).cpu(), torch.isnan(ref_own)), (loss_own, ref_own)


# --------------------------------------------------------------------------- #
# A bad centre index
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("bad", [3, -2, 1000])
def test_invalid_center_index(bad, device):
    """The CPU names center_index[i] and its value; the CUDA kernels (on a GPU or
    emulated) make that utterance's loss, score and emb gradient NaN and leave the
    others as they were; every centre's gradient is NaN (it sums over the batch)."""
    batch, frames, dim = 5, 4, 6
    m = module(3, dim, device, reduction="none")
    emb = randn(batch, frames, dim, device=device).requires_grad_()
    label = make_labels(batch).to(device)
    index = torch.tensor([0, -1, bad, 2, 1], device=device)
    good_index = index.clone()
    good_index[2] = 0
    if not runs_cuda_kernels(device):
        for call in (lambda: m(label, emb, None, index), lambda: m.score(emb, None, index)):
            with pytest.raises(ValueError, match=rf"center_index\[2\] = {bad}\b"):
                call()
        return
    loss, score = m.forward_and_score(label, emb, None, index)
    good_loss, good_score = m.forward_and_score(label, emb, None, good_index)
    assert torch.isnan(loss[2]) and torch.isnan(score[2])
    keep = [0, 1, 3, 4]
    assert torch.equal(loss[keep], good_loss[keep]) and torch.equal(score[keep], good_score[keep])
    g_emb, g_centres = torch.autograd.grad(loss.sum(), [emb, m.centers])
    g_good, _ = torch.autograd.grad(good_loss.sum(), [emb, m.centers])
    assert bool(torch.isnan(g_emb[2]).all())
    assert torch.equal(g_emb[keep], g_good[keep])
    assert bool(torch.isnan(g_centres).all())


def test_center_index_shape_and_dtype(device):
    m = module(3, 4, device)
    emb, label = randn(4, 4, device=device), make_labels(4).to(device)
    with pytest.raises(ValueError, match="center_index"):
        m(label, emb, None, torch.zeros(3, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match="center_index"):
        m(label, emb, None, torch.zeros(4, device=device))
    with pytest.raises(TypeError, match="center_index"):
        m.score(emb, None, [0, 1, 2, 0])


@pytest.mark.parametrize("num_centers", [0, 1025, True, 2.0])
def test_num_centers_checked(num_centers):
    with pytest.raises(ValueError, match="num_centers"):
        spoofloss.MultiCenterOCSoftmaxLoss(num_centers=num_centers)


def test_initial_centers():
    """SAMO's one-hot attractors where K <= D; unit directions beyond."""
    assert torch.equal(spoofloss.MultiCenterOCSoftmaxLoss(enc_dim=6, num_centers=4).centers.detach(),
                       torch.eye(6)[:4])
    wide = spoofloss.MultiCenterOCSoftmaxLoss(enc_dim=4, num_centers=9).centers.detach()
    assert wide.shape == (9, 4)
    torch.testing.assert_close(wide.norm(dim=1), torch.ones(9))


# --------------------------------------------------------------------------- #
# Centres from per-speaker means
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("rank", [3, 2])
def test_load_centers_from_speaker_means(rank, device):
    batch, frames, dim, num_centers = 23, 6, 5, 4
    m = module(num_centers, dim, device)
    before = m.centers.detach().clone()
    emb = randn(batch, frames, dim, device=device) if rank == 3 else randn(batch, dim, device=device)
    lengths = make_lengths(batch, frames, device=device) if rank == 3 else None
    speaker = torch.randint(0, 3, (batch,))  # centre 3 has no utterance: it keeps its value
    speaker[torch.randperm(batch)[:5]] = -1  # left out (spoof, or no centre)
    if rank == 3:
        emb[speaker == -1, 0] = float("nan")  # a left-out utterance must not leak into any centre
    speaker = speaker.to(device)
    counts = m.load_centers_from_speaker_means(emb, speaker, lengths)

    pooled = R.masked_mean(emb.cpu().double(), cpu(lengths))
    for k in range(num_centers):
        members = (cpu(speaker) == k)
        assert counts[k].item() == members.sum().item()
        if members.any():
            want = pooled[members].mean(dim=0)
            want = want / want.norm()
            assert_matches(m.centers[k], want, what=f"centre {k}", scale=1.0)
        else:
            assert torch.equal(m.centers[k], before[k]), "a centre no utterance names keeps its value"
    assert counts.device == emb.device


def test_load_centers_from_batches_of_different_lengths(device):
    """An enrolment set seen batch by batch (T differs): pooled_embedding per
    batch, then one load, as README shows."""
    m = module(3, 5, device)
    batches = [(randn(4, t, 5, device=device), make_lengths(4, t, device=device), torch.tensor(spk, device=device))
               for t, spk in ((7, [0, 1, 1, -1]), (3, [2, 0, -1, 2]), (9, [1, 1, 0, 2]))]
    pooled = torch.cat([m.pooled_embedding(e, lens) for e, lens, _ in batches])
    assert not pooled.requires_grad and pooled.dtype == torch.float32
    m.load_centers_from_speaker_means(pooled, torch.cat([s for _, _, s in batches]))
    ref_pooled = torch.cat([R.masked_mean(e.cpu().double(), lens.cpu()) for e, lens, _ in batches])
    assert_matches(pooled, ref_pooled, what="pooled_embedding", scale=ref_pooled.abs().max().item())
    speakers = torch.cat([s.cpu() for _, _, s in batches])
    for k in range(3):
        want = ref_pooled[speakers == k].mean(dim=0)
        assert_matches(m.centers[k], want / want.norm(), what=f"centre {k}", scale=1.0)


def test_load_centers_bad_speaker(device):
    m = module(3, 4, device)
    emb = randn(5, 4, device=device)
    with pytest.raises(ValueError, match="speaker must have shape"):
        m.load_centers_from_speaker_means(emb, torch.zeros(4, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match="speaker must be an integer"):
        m.load_centers_from_speaker_means(emb, torch.zeros(5, device=device))
    bad = torch.tensor([0, 1, 3, -1, 2], device=device)
    if device == "cpu":
        before = m.centers.detach().clone()
        with pytest.raises(ValueError, match=r"speaker\[2\] = 3"):
            m.load_centers_from_speaker_means(emb, bad)
        assert torch.equal(m.centers.detach(), before)
    else:
        m.load_centers_from_speaker_means(emb, bad)
        assert bool(torch.isnan(m.centers).all())


def test_load_centers_then_train(device):
    """Loaded centres are those the loss then uses (learnable or frozen)."""
    m = module(2, 3, device, dtype=F64)
    emb = randn(6, 3, dtype=F64, device=device)
    m.load_centers_from_speaker_means(emb, torch.tensor([0, 0, 1, 1, -1, -1], device=device))
    m.centers.requires_grad_(False)
    label = torch.tensor([1, 1, 1, 1, 0, 0], device=device)
    index = torch.tensor([0, 0, 1, 1, -1, -1], device=device)
    e = emb.clone().requires_grad_()
    loss = m(label, e, None, index)
    (g,) = torch.autograd.grad(loss, e)
    ref = R.samo_loss(cpu(label), e.detach().cpu(), m.centers.cpu(), None, cpu(index))
    assert_matches(loss, ref, what="loss with loaded centres")
    assert bool(torch.isfinite(g).all())


# --------------------------------------------------------------------------- #
# The ops with this loss's code: opcheck, gradcheck, double backward
# --------------------------------------------------------------------------- #


def op_inputs(device, grad=True, batch=6, frames=5, dim=4, num_centers=3, dtype=torch.float32):
    emb = randn(batch, frames, dim, dtype=dtype, device=device).requires_grad_(grad)
    centers = randn(num_centers, dim, dtype=dtype, device=device).requires_grad_(grad)
    return (emb, centers, make_labels(batch).to(device), make_lengths(batch, frames, device=device),
            center_indices(batch, num_centers).to(device))


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("reduction", [NONE, MEAN])
@pytest.mark.parametrize("rule", ["nearest", "own"])
def test_opcheck(rule, reduction, requires_grad, device):
    emb, centers, label, lengths, index = op_inputs(device, requires_grad)
    score_rule = NEAREST if rule == "nearest" else OWN
    result = torch.library.opcheck(torch.ops.spoofloss.cosine_margin_loss.default, (
        emb, centers, label, lengths, index, SAMO, 20.0, 0.7, 0.0, 1, score_rule, 0, reduction))
    assert all(v == "SUCCESS" for v in result.values()), result
    result = torch.library.opcheck(torch.ops.spoofloss.cosine_score.default,
                                   (emb, centers, lengths, index, score_rule, 0, 1.0))
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("given", [False, True], ids=["nearest", "given"])
def test_gradcheck_ops(given, device):
    emb, centers, label, lengths, index = op_inputs(device, dtype=F64)
    index = index if given else None
    rule = OWN if given else NEAREST

    def loss_and_score(e, c):
        return ops.cosine_margin_loss_and_score(e, c, label, lengths, SAMO, 20.0, 0.7, 0.1, 1, NONE, rule, 0, index)

    assert torch.autograd.gradcheck(loss_and_score, (emb, centers), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(loss_and_score, (emb, centers), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_double_backward_matches_reference(device):
    """Second derivatives (through the composite backward, which differentiates
    reference.OP_FORMS["samo"]) against the reference differentiated twice."""
    emb, centers, label, lengths, index = op_inputs(device, dtype=F64)
    loss = ops.cosine_margin_loss(emb, centers, label, lengths, SAMO, 20.0, 0.7, 0.1, 1, SUM, OWN, 0, index)
    (g_emb,) = torch.autograd.grad(loss, emb, create_graph=True)
    (gg,) = torch.autograd.grad((g_emb ** 2).sum(), centers)
    e64, c64 = f64(emb), f64(centers)
    ref = R.samo_loss(cpu(label), e64, c64, cpu(lengths), cpu(index), m_real=0.7, m_fake=0.1, alpha=20.0,
                      reduction="sum")
    (r_emb,) = torch.autograd.grad(ref, e64, create_graph=True)
    (r_gg,) = torch.autograd.grad((r_emb ** 2).sum(), c64)
    assert_matches(gg, r_gg, what="d |d loss / d emb|^2 / d centres")


def test_compiled_score_with_center_index(device):
    m = module(4, 6, device)
    emb, label = randn(5, 3, 6, device=device), make_labels(5).to(device)
    index = center_indices(5, 4).to(device)

    def step(emb, index):
        loss, score = m.forward_and_score(label, emb, None, index)
        return loss, score, m.score(emb, None, index)

    torch._dynamo.reset()
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(emb, index)
    for g, e in zip(got, step(emb, index)):
        assert torch.equal(g, e)
