"""Bad input: errors that name the argument and the value / shape seen, and
non-finite embeddings that stay confined to their own utterance.

Per the contract, the CPU raises for invalid label values, while on CUDA the
kernels do not synchronise with the host: the offending utterance's loss
becomes NaN and the others are unaffected. Lengths outside [1, T] are checked
the same way: on CUDA the tests accept either a raise or a NaN confined to the
offending utterance (the contract only spells out the label case).
"""

from __future__ import annotations

import pytest
import torch

from spoofloss import ops
from spoofloss.registry import LOSSES

from helpers.devices import cuda_only, runs_cuda_kernels
from helpers.inputs import make_labels, make_lengths, randn
from helpers.losses import LossCall, build, names
from helpers.op_args import first_cosine_op, raises_naming
from helpers.steps import expected_step
from helpers.tolerance import assert_matches

ERRORS = (ValueError, RuntimeError)
COSINE = names("cosine")
LOGITS = names("logits")
ALL = names()


def make_loss(name, enc_dim=16, **kwargs):
    """A registered loss in its default configuration, float32, on the CPU."""
    return build(name, enc_dim=enc_dim, **kwargs)[0]


def classes_of(name) -> int:
    return LOSSES[name].label_classes(make_loss(name))


def call_with(name, batch, device, **changes) -> LossCall:
    """Valid inputs for ``name`` (emb [B, 9, 16] or pred [B]) with ``changes`` applied."""
    if LOSSES[name].family == "logits":
        call = LossCall("logits", randn(batch, device=device), make_labels(batch, classes_of(name)).to(device))
    else:
        call = LossCall("cosine", randn(batch, 9, 16, device=device),
                        make_labels(batch, classes_of(name)).to(device))
    loss = make_loss(name)
    extra = LOSSES[name].make_inputs(loss, batch, None) if LOSSES[name].make_inputs else {}
    call.extra = {k: v.to(device) for k, v in extra.items()}
    for key, value in changes.items():
        setattr(call, key, value)
    return call


# --------------------------------------------------------------------------- #
# shapes
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", COSINE)
def test_label_batch_mismatch(name, device):
    loss = make_loss(name).to(device)
    emb = randn(5, 9, 16, device=device)
    with raises_naming("label", 7):
        loss(make_labels(7).to(device), emb)
    with raises_naming("label", 7):
        loss(make_labels(7).reshape(7, 1).to(device), emb)


@pytest.mark.parametrize("name", LOGITS)
def test_logits_numel_mismatch(name, device):
    loss = make_loss(name).to(device)
    with raises_naming("label|pred", 7):
        loss(randn(5, device=device), make_labels(7).to(device))


@pytest.mark.parametrize("name", COSINE)
def test_lengths_batch_mismatch(name, device):
    loss = make_loss(name).to(device)
    emb = randn(5, 9, 16, device=device)
    with raises_naming("lengths", 6):
        loss(make_labels(5).to(device), emb, torch.full((6,), 9, device=device))


@pytest.mark.parametrize("shape", [(16,), (2, 3, 4, 16)], ids=["rank1", "rank4"])
@pytest.mark.parametrize("name", COSINE)
def test_emb_rank(name, shape, device):
    loss = make_loss(name).to(device)
    label = make_labels(shape[0]).to(device)
    # the shape (which contains 16 / 4) or the rank (1 / 4) seen
    with raises_naming("emb", r"\b16\b|\b1\b" if len(shape) == 1 else r"\b4\b"):
        loss(label, randn(*shape, device=device))
    with raises_naming("emb"):
        loss.score(randn(*shape, device=device))


@pytest.mark.parametrize("name", COSINE)
def test_enc_dim_mismatch(name, device):
    loss = make_loss(name, enc_dim=16).to(device)
    emb = randn(5, 9, 24, device=device)
    with raises_naming("enc_dim|center", 24, 16):
        loss(make_labels(5).to(device), emb)
    with raises_naming("enc_dim|center", 24, 16):
        loss.score(emb)


@pytest.mark.parametrize("name", ALL)
def test_empty_batch(name, device):
    loss = make_loss(name).to(device)
    if LOSSES[name].family == "logits":
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


@pytest.mark.parametrize("bad", ["classes", "-1", "0.5"])
@pytest.mark.parametrize("name", ALL)
def test_label_values(name, bad, device):
    """A label outside the classes (the number of classes, -1, 0.5). CPU: raise
    naming label and the value. CUDA: that utterance's loss is NaN, the others
    equal the reference (no host synchronisation)."""
    if LOSSES[name].family == "logits" and bad == "0.5":
        pytest.skip("0.5 may be a valid soft target of a logit loss (BinaryLoss's is: test_binary_loss.py)")
    batch = 6
    value = {"classes": classes_of(name), "-1": -1, "0.5": 0.5}[bad]
    fused, twin = build(name, enc_dim=16, device=device, reduction="none")
    good = call_with(name, batch, device)
    labels = good.label.cpu().double()
    labels[3] = value
    call = call_with(name, batch, device, x=good.x, label=(labels if bad == "0.5" else labels.long()).to(device),
                     extra=good.extra)
    if not runs_cuda_kernels(device):
        with raises_naming("label", value):
            call.forward(fused)
        return
    out = call.forward(fused)
    assert torch.isnan(out[3]), f"invalid label {value} gave a finite loss {out[3].item()}"
    ok = torch.arange(batch) != 3
    expected, scale = expected_step(fused, twin, good, torch.ones(batch), torch.ones(batch))["loss"]
    assert_matches(out[ok.to(device)], expected[ok], what="the other utterances' losses", scale=scale[ok])


@pytest.mark.parametrize("bad", ["zero", "T+1"])
@pytest.mark.parametrize("name", COSINE)
def test_lengths_out_of_range(name, bad, device):
    batch, frames = 5, 9
    lengths = make_lengths(batch, frames)
    value = 0 if bad == "zero" else frames + 1
    lengths[2] = value
    loss = make_loss(name, reduction="none").to(device)
    label = make_labels(batch, classes_of(name)).to(device)
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
@pytest.mark.parametrize("name", COSINE)
def test_lengths_float_dtype(name, dtype, device):
    loss = make_loss(name).to(device)
    lengths = torch.full((5,), 9.0, dtype=dtype, device=device)
    with raises_naming("lengths", "[Ff]loat|[Dd]ouble"):
        loss(make_labels(5).to(device), randn(5, 9, 16, device=device), lengths)


@pytest.mark.parametrize("bad", ["avg", "", "MEAN", None])
@pytest.mark.parametrize("name", ALL)
def test_bad_reduction(name, bad, device):
    with raises_naming("reduction"):
        loss = make_loss(name, reduction=bad).to(device)
        call_with(name, 4, device).forward(loss)


# refused by the one validator (spoofloss.base.check_bonafide_label) that every
# module, reference module and metric shares: an index out of range, and values
# that read as an index only by accident
BAD_BONAFIDE_LABELS = {"classes": None, "-1": -1, "True": True, "1.0": 1.0, "tensor": "tensor"}


def bad_bonafide_label(name, bad):
    value = BAD_BONAFIDE_LABELS[bad]
    if bad == "classes":
        return classes_of(name)
    return torch.tensor(1) if bad == "tensor" else value


@pytest.mark.parametrize("bad", list(BAD_BONAFIDE_LABELS))
@pytest.mark.parametrize("name", ALL)
def test_bad_bonafide_label(name, bad, device):
    value = bad_bonafide_label(name, bad)
    with raises_naming("bonafide_label", value):
        loss = make_loss(name, bonafide_label=value).to(device)
        call = call_with(name, 4, device)
        call.forward(loss)
        call.score(loss)


@pytest.mark.parametrize("name", ALL)
def test_reference_rejects_bad_arguments(name):
    """The reference modules validate their arguments like the fused ones."""
    twin = LOSSES[name].reference_class()
    for bad in BAD_BONAFIDE_LABELS:
        value = bad_bonafide_label(name, bad)
        with raises_naming("bonafide_label", value):
            twin(bonafide_label=value)
    with raises_naming("reduction"):
        twin(reduction="avg")


def test_op_level_bad_enums(device):
    op = first_cosine_op()
    emb = randn(4, 3, 8, dtype=torch.float64, device=device)
    centers = randn(op.num_centers, 8, dtype=torch.float64, device=device)
    label = op.labels(4).to(device)
    args = (emb, centers, label, None, op.code, op.scale, op.margin_bonafide, op.margin_spoof)
    with raises_naming("reduction", 3):
        ops.cosine_margin_loss(*args, op.bonafide_label, 3)
    with raises_naming("loss", 77, op.loss_name):
        ops.cosine_margin_loss(emb, centers, label, None, 77, 20.0, 0.5, 0.5, 1, 1)
    with raises_naming("bonafide_label", op.label_classes):
        ops.cosine_margin_loss(*args, op.label_classes, 1, score_center=0)
    with raises_naming("score_center", op.num_centers):
        ops.cosine_score(emb, centers, None, op.num_centers)
    with raises_naming("score_rule", 9):
        ops.cosine_score(emb, centers, None, 0, score_rule=9)
    with raises_naming("reduction", 3):
        ops.binary_cross_entropy(emb[:, 0, 0], label, 1, 3)


# --------------------------------------------------------------------------- #
# devices
# --------------------------------------------------------------------------- #


@cuda_only
@pytest.mark.parametrize("name", COSINE)
def test_mixed_devices(name):
    loss = make_loss(name)  # centres on the CPU
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
@pytest.mark.parametrize("name", LOGITS)
def test_mixed_devices_logits(name):
    loss = make_loss(name)
    with raises_naming("label|pred|device|cuda|cpu"):
        loss(randn(5, device="cuda"), make_labels(5))


# --------------------------------------------------------------------------- #
# non-finite inputs stay in their utterance
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", COSINE)
def test_nonfinite_emb_is_confined(name, value, device):
    batch, frames, dim = 7, 11, 16
    data = randn(batch, frames, dim)
    bad = 4
    data[bad, 3, 5] = value
    lengths = make_lengths(batch, frames)
    lengths[bad] = frames
    fused, twin = build(name, enc_dim=dim, device=device, reduction="none")
    call = call_with(name, batch, device, x=data.to(device).requires_grad_(), lengths=lengths.to(device))
    out, score = call.forward(fused), call.score(fused)
    assert not torch.isfinite(out[bad]), f"{value} in utterance {bad} did not reach its loss"
    assert not torch.isfinite(score[bad])

    ok = torch.arange(batch) != bad
    good = call.with_input(torch.where(torch.isfinite(data), data, 0.0).to(device).requires_grad_())
    up = ok.to(out.dtype).to(device)
    expected = expected_step(fused, twin, good, up, torch.ones(batch))
    for what, got in (("loss", out), ("score", score)):
        want, scale = expected[what]
        assert_matches(got[ok.to(device)], want[ok], what=f"the other utterances' {what}", scale=scale[ok])
    # the other utterances' gradients are untouched as well
    (g,) = torch.autograd.grad(out, [call.x], up)
    want, scale = expected["d loss / d emb"]
    assert_matches(g[ok.to(device)], want[ok], what="the other utterances' d loss / d emb", scale=scale[ok])


@pytest.mark.parametrize("name", LOGITS)
def test_nonfinite_pred_is_confined(name, device):
    pred = randn(9) * 3
    pred[2] = float("nan")
    pred[5] = float("inf")
    fused, twin = build(name, device=device, reduction="none")
    call = call_with(name, 9, device, x=pred.to(device))
    call.label[5] = 0
    out = call.forward(fused)
    assert not torch.isfinite(out[2]) and not torch.isfinite(out[5])
    ok = torch.tensor([i not in (2, 5) for i in range(9)])
    good = call.with_input(torch.where(torch.isfinite(pred), pred, 0.0).to(device))
    want, scale = expected_step(fused, twin, good, torch.ones(9), torch.ones(9))["loss"]
    assert_matches(out[ok.to(device)], want[ok], what="the other elements' losses", scale=scale[ok])


# --------------------------------------------------------------------------- #
# None or a non-tensor where a tensor belongs (issue 10, item 9): the error
# names the argument (it used to be torch's "tensor does not have a device")
# --------------------------------------------------------------------------- #

NOT_TENSORS = [None, [0, 1, 1, 0], 3]


@pytest.mark.parametrize("bad", NOT_TENSORS, ids=["None", "list", "int"])
@pytest.mark.parametrize("name", COSINE)
def test_margin_arguments_not_tensors(name, bad, device):
    loss = make_loss(name, enc_dim=16).to(device)
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
@pytest.mark.parametrize("name", LOGITS)
def test_logits_arguments_not_tensors(name, bad, device):
    loss = make_loss(name)
    pred, label = randn(4, device=device), make_labels(4).to(device)
    for name, call in [("label", lambda: loss(pred, bad)), ("pred", lambda: loss(bad, label)),
                       ("pred", lambda: loss.score(bad))]:
        with pytest.raises(TypeError, match=rf"^{name} must be a tensor, got {type(bad).__name__}"):
            call()
