"""Bad input: errors that name the argument and the value / shape seen, and
non-finite embeddings that stay confined to their own utterance.

Per the contract, the CPU raises for invalid label values, while on CUDA the
kernels do not synchronise with the host: the offending utterance's loss
becomes NaN and the others are unaffected. Lengths outside [1, T] are checked
the same way: on CUDA the tests accept either a raise or a NaN confined to the
offending utterance (the contract only spells out the label case).
"""

from __future__ import annotations

import re

import pytest
import torch

import spoofloss
from spoofloss import ops
from spoofloss import reference as R

from conftest import assert_matches, cpu, cuda_only, f64, make_labels, make_lengths, randn, runs_cuda_kernels

ERRORS = (ValueError, RuntimeError)
MARGIN = ["am", "oc"]
ALL = ["am", "oc", "binary"]


def make_loss(kind, enc_dim=16, **kwargs):
    if kind == "am":
        return spoofloss.AMSoftmaxLoss(enc_dim=enc_dim, **kwargs)
    if kind == "oc":
        return spoofloss.OCSoftmaxLoss(enc_dim=enc_dim, **kwargs)
    return spoofloss.BinaryLoss(**kwargs)


def raises_naming(argument, *values):
    """pytest.raises for ValueError/RuntimeError whose message names
    ``argument`` (a regex) and shows each of ``values``: a number must appear as
    a whole number (7 matches "7", "7.0", "[5, 7]", not "17" or "0.7"); a
    string is a regex of its own."""
    patterns = [argument] + [
        v if isinstance(v, str) else rf"(?<![\w.]){re.escape(str(v))}(?![\w])" for v in values
    ]
    # every pattern must occur, in any order
    regex = "".join(f"(?=[\\s\\S]*?(?:{p}))" for p in patterns)
    return pytest.raises(ERRORS, match=regex)


# --------------------------------------------------------------------------- #
# shapes
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", MARGIN)
def test_label_batch_mismatch(kind, device):
    loss = make_loss(kind).to(device)
    emb = randn(5, 9, 16, device=device)
    with raises_naming("label", 7):
        loss(make_labels(7).to(device), emb)
    with raises_naming("label", 7):
        loss(make_labels(7).reshape(7, 1).to(device), emb)


def test_binary_numel_mismatch(device):
    loss = make_loss("binary").to(device)
    with raises_naming("label|pred", 7):
        loss(randn(5, device=device), make_labels(7).to(device))


@pytest.mark.parametrize("kind", MARGIN)
def test_lengths_batch_mismatch(kind, device):
    loss = make_loss(kind).to(device)
    emb = randn(5, 9, 16, device=device)
    with raises_naming("lengths", 6):
        loss(make_labels(5).to(device), emb, torch.full((6,), 9, device=device))


@pytest.mark.parametrize("shape", [(16,), (2, 3, 4, 16)], ids=["rank1", "rank4"])
@pytest.mark.parametrize("kind", MARGIN)
def test_emb_rank(kind, shape, device):
    loss = make_loss(kind).to(device)
    label = make_labels(shape[0]).to(device)
    # the shape (which contains 16 / 4) or the rank (1 / 4) seen
    with raises_naming("emb", r"\b16\b|\b1\b" if len(shape) == 1 else r"\b4\b"):
        loss(label, randn(*shape, device=device))
    with raises_naming("emb"):
        loss.score(randn(*shape, device=device))


@pytest.mark.parametrize("kind", MARGIN)
def test_enc_dim_mismatch(kind, device):
    loss = make_loss(kind, enc_dim=16).to(device)
    emb = randn(5, 9, 24, device=device)
    with raises_naming("enc_dim|center", 24, 16):
        loss(make_labels(5).to(device), emb)
    with raises_naming("enc_dim|center", 24, 16):
        loss.score(emb)


@pytest.mark.parametrize("kind", ALL)
def test_empty_batch(kind, device):
    loss = make_loss(kind).to(device)
    if kind == "binary":
        with raises_naming("pred|label|empty|batch"):
            loss(randn(0, device=device), torch.zeros(0, dtype=torch.long, device=device))
        return
    with raises_naming("emb|empty|batch", r"\b0\b"):
        loss(torch.zeros(0, dtype=torch.long, device=device), randn(0, 9, 16, device=device))
    with raises_naming("emb|empty|batch", r"\b0\b"):
        loss.score(randn(0, 9, 16, device=device))


# --------------------------------------------------------------------------- #
# values
# --------------------------------------------------------------------------- #


def _loss_none(kind, device):
    return make_loss(kind, reduction="none").to(device)


@pytest.mark.parametrize("bad", [2, -1, 0.5], ids=["2", "-1", "0.5"])
@pytest.mark.parametrize("kind", ALL)
def test_label_values(kind, bad, device):
    """CPU: raise naming label and the value. CUDA: that utterance's loss is NaN,
    the others equal the reference (no host synchronisation)."""
    if kind == "binary" and bad == 0.5:
        pytest.skip("0.5 is a valid soft target for the binary loss")
    batch = 6
    labels = make_labels(batch).double()
    labels[3] = bad
    label = labels if isinstance(bad, float) else labels.long()
    loss = _loss_none(kind, device)
    if kind == "binary":
        inputs = (randn(batch, device=device), label.to(device))
    else:
        inputs = (label.to(device), randn(batch, 9, 16, device=device))
    if not runs_cuda_kernels(device):
        with raises_naming("label", bad):
            loss(*inputs)
        return
    out = loss(*inputs)
    assert torch.isnan(out[3]), f"invalid label {bad} gave a finite loss {out[3].item()}"
    ok = torch.arange(batch) != 3
    good = labels.clone()
    good[3] = 0
    if kind == "binary":
        ref = R.binary_loss(f64(inputs[0]), good, reduction="none")
    elif kind == "am":
        ref = R.am_softmax_loss(good.long(), f64(inputs[1]), f64(loss.centers), reduction="none")
    else:
        ref = R.oc_softmax_loss(good.long(), f64(inputs[1]), f64(loss.center), reduction="none")
    assert_matches(out[ok.to(device)], ref[ok], what="the other utterances' losses", scale=20.0)


@pytest.mark.parametrize("bad", ["zero", "T+1"])
@pytest.mark.parametrize("kind", MARGIN)
def test_lengths_out_of_range(kind, bad, device):
    batch, frames = 5, 9
    lengths = make_lengths(batch, frames)
    value = 0 if bad == "zero" else frames + 1
    lengths[2] = value
    loss = _loss_none(kind, device)
    label = make_labels(batch).to(device)
    emb = randn(batch, frames, 16, device=device)
    if not runs_cuda_kernels(device):
        with raises_naming("lengths", value):
            loss(label, emb, lengths.to(device))
        with raises_naming("lengths", value):
            loss.score(emb, lengths.to(device))
        return
    try:  # CUDA: raise, or NaN confined to utterance 2
        out = loss(label, emb, lengths.to(device))
    except ERRORS as err:
        assert "lengths" in str(err) and str(value) in str(err), str(err)
        return
    assert torch.isnan(out[2]).item(), f"lengths {value} gave a finite loss"
    assert torch.isfinite(out[torch.arange(batch, device=device) != 2]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", MARGIN)
def test_lengths_float_dtype(kind, dtype, device):
    loss = make_loss(kind).to(device)
    lengths = torch.full((5,), 9.0, dtype=dtype, device=device)
    with raises_naming("lengths", "[Ff]loat|[Dd]ouble"):
        loss(make_labels(5).to(device), randn(5, 9, 16, device=device), lengths)


@pytest.mark.parametrize("bad", ["avg", "", "MEAN", None])
@pytest.mark.parametrize("kind", ALL)
def test_bad_reduction(kind, bad, device):
    with raises_naming("reduction"):
        loss = make_loss(kind, reduction=bad).to(device)
        if kind == "binary":
            loss(randn(4, device=device), make_labels(4).to(device))
        else:
            loss(make_labels(4).to(device), randn(4, 3, 16, device=device))


@pytest.mark.parametrize("bad", [2, -1])
@pytest.mark.parametrize("kind", ALL)
def test_bad_bonafide_label(kind, bad, device):
    with raises_naming("bonafide_label", bad):
        loss = make_loss(kind, bonafide_label=bad).to(device)
        if kind == "binary":
            loss(randn(4, device=device), make_labels(4).to(device))
        else:
            loss(make_labels(4).to(device), randn(4, 3, 16, device=device))
            loss.score(randn(4, 3, 16, device=device))


@pytest.mark.parametrize("bad", [2, -1])
def test_reference_rejects_bad_arguments(bad):
    """The reference modules validate their arguments like the fused ones."""
    for cls in (R.AMSoftmaxLoss, R.OCSoftmaxLoss, R.BinaryLoss):
        with raises_naming("bonafide_label", bad):
            cls(bonafide_label=bad)
        with raises_naming("reduction"):
            cls(reduction="avg")


def test_op_level_bad_enums(device):
    emb = randn(4, 3, 8, dtype=torch.float64, device=device)
    centers = randn(2, 8, dtype=torch.float64, device=device)
    label = make_labels(4).to(device)
    am = ops.loss_code("am_softmax")
    with raises_naming("reduction", 3):
        ops.cosine_margin_loss(emb, centers, label, None, am, 20.0, 0.5, 0.5, 1, 3)
    with raises_naming("loss", 77, "am_softmax"):
        ops.cosine_margin_loss(emb, centers, label, None, 77, 20.0, 0.5, 0.5, 1, 1)
    with raises_naming("bonafide_label", 2):
        ops.cosine_margin_loss(emb, centers, label, None, am, 20.0, 0.5, 0.5, 2, 1, score_center=0)
    with raises_naming("score_center", 2):
        ops.cosine_score(emb, centers, None, 2)
    with raises_naming("score_rule", 9):
        ops.cosine_score(emb, centers, None, 0, score_rule=9)
    with raises_naming("reduction", 3):
        ops.binary_cross_entropy(emb[:, 0, 0], label, 1, 3)


# --------------------------------------------------------------------------- #
# devices
# --------------------------------------------------------------------------- #


@cuda_only
@pytest.mark.parametrize("kind", MARGIN)
def test_mixed_devices(kind):
    loss = make_loss(kind)  # centres on the CPU
    emb = randn(5, 9, 16, device="cuda")
    label = make_labels(5)
    lengths = make_lengths(5, 9)
    with raises_naming("cuda|cpu|device"):
        loss(label.cuda(), emb)
    loss = loss.cuda()
    with raises_naming("label"):
        loss(label, emb)  # label on the CPU
    with raises_naming("lengths"):
        loss(label.cuda(), emb, lengths)  # lengths on the CPU
    with raises_naming("cuda|cpu|device"):
        loss(label, emb.cpu())


@cuda_only
def test_mixed_devices_binary():
    loss = make_loss("binary")
    with raises_naming("label|pred|device|cuda|cpu"):
        loss(randn(5, device="cuda"), make_labels(5))


# --------------------------------------------------------------------------- #
# non-finite embeddings stay in their utterance
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("kind", MARGIN)
def test_nonfinite_emb_is_confined(kind, value, device):
    batch, frames, dim = 7, 11, 16
    data = randn(batch, frames, dim)
    bad = 4
    data[bad, 3, 5] = value
    lengths = make_lengths(batch, frames)
    lengths[bad] = frames
    emb = data.to(device).requires_grad_()
    loss = _loss_none(kind, device)
    label = make_labels(batch)
    out = loss(label.to(device), emb, lengths.to(device))
    assert not torch.isfinite(out[bad]), f"{value} in utterance {bad} did not reach its loss"
    score = loss.score(emb, lengths.to(device))
    assert not torch.isfinite(score[bad])

    ok = torch.arange(batch) != bad
    e64, c64 = f64(emb), f64(loss.centers if kind == "am" else loss.center)
    if kind == "am":
        ref = R.am_softmax_loss(label, e64, c64, lengths, reduction="none")
    else:
        ref = R.oc_softmax_loss(label, e64, c64, lengths, reduction="none")
    assert_matches(out[ok.to(device)], ref[ok], what="the other utterances' losses", scale=20.0)
    assert_matches(score[ok.to(device)], R._cosines(e64, c64, lengths)[ok, 1 if kind == "am" else 0],
                   what="the other utterances' scores", scale=1.0)
    # the other utterances' gradients are untouched as well
    up = ok.to(out.dtype).to(device)
    (g,) = torch.autograd.grad(out, [emb], up)
    (r,) = torch.autograd.grad(ref, [e64], cpu(up).double())
    assert_matches(g[ok.to(device)], r[ok], what="the other utterances' d loss / d emb")


def test_nonfinite_pred_is_confined(device):
    pred = randn(9) * 3
    pred[2] = float("nan")
    pred[5] = float("inf")
    label = make_labels(9)
    label[5] = 0
    out = spoofloss.BinaryLoss(reduction="none")(pred.to(device), label.to(device))
    assert not torch.isfinite(out[2]) and not torch.isfinite(out[5])
    ok = torch.tensor([i not in (2, 5) for i in range(9)])
    ref = R.binary_loss(pred.double(), label, reduction="none")
    assert_matches(out[ok.to(device)], ref[ok], what="the other elements' losses", scale=3.0)


# --------------------------------------------------------------------------- #
# None or a non-tensor where a tensor belongs (issue 10, item 9): the error
# names the argument (it used to be torch's "tensor does not have a device")
# --------------------------------------------------------------------------- #

NOT_TENSORS = [None, [0, 1, 1, 0], 3]


@pytest.mark.parametrize("bad", NOT_TENSORS, ids=["None", "list", "int"])
@pytest.mark.parametrize("kind", MARGIN)
def test_margin_arguments_not_tensors(kind, bad, device):
    loss = make_loss(kind, enc_dim=16).to(device)
    label, emb = make_labels(4).to(device), randn(4, 5, 16, device=device)
    lengths = make_lengths(4, 5).to(device)
    for name, call in [
        ("label", lambda: loss(bad, emb)),
        ("emb", lambda: loss(label, bad)),
        ("label", lambda: loss.forward_and_score(bad, emb)),
        ("emb", lambda: loss.forward_and_score(label, bad, lengths)),
        ("emb", lambda: loss.score(bad)),
        ("emb", lambda: loss.score(bad, lengths)),
    ]:
        with pytest.raises(TypeError, match=rf"^{name} must be a tensor, got {type(bad).__name__}"):
            call()
    if bad is not None:  # lengths may be None
        with pytest.raises(TypeError, match=rf"^lengths must be a tensor or None, got {type(bad).__name__}"):
            loss(label, emb, bad)
        with pytest.raises(TypeError, match=rf"^lengths must be a tensor or None, got {type(bad).__name__}"):
            loss.score(emb, bad)


@pytest.mark.parametrize("bad", NOT_TENSORS, ids=["None", "list", "int"])
def test_binary_arguments_not_tensors(bad, device):
    loss = make_loss("binary")
    pred, label = randn(4, device=device), make_labels(4).to(device)
    for name, call in [("label", lambda: loss(pred, bad)), ("pred", lambda: loss(bad, label)),
                       ("pred", lambda: loss.score(bad))]:
        with pytest.raises(TypeError, match=rf"^{name} must be a tensor, got {type(bad).__name__}"):
            call()
