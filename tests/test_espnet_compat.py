"""Drop-in compatibility with ESPnet's espnet2/asvspoof losses.

spoofloss.espnet's classes are built with ESPnet's constructor arguments and
called the way ESPnetASVSpoofModel calls them: ``loss(label, encoder_out)`` for
AM/OC (encoder_out [B, T, D], no lengths, label [B, 1]) and ``loss(pred,
label)`` for the binary loss, then multiplied by ``.weight`` by the caller.
BinaryLoss equals ESPnet's sigmoid + BCELoss formula wherever that formula
does not saturate, and stays exact where it does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spoofloss
from spoofloss import reference as R
from spoofloss.espnet import ASVSpoofAMSoftmaxLoss, ASVSpoofBinaryLoss, ASVSpoofOCSoftmaxLoss

from conftest import assert_matches, f64, make_labels, make_lengths, randn

pytestmark = pytest.mark.usefixtures("poison")


def test_constructed_with_espnet_arguments():
    am = ASVSpoofAMSoftmaxLoss(weight=1.0, enc_dim=128, s=20, m=0.5)
    oc = ASVSpoofOCSoftmaxLoss(weight=1.0, enc_dim=128, m_real=0.5, m_fake=0.2, alpha=20.0)
    binary = ASVSpoofBinaryLoss(weight=1.0)
    for loss in (am, oc, binary):
        assert isinstance(loss, spoofloss.AbsASVSpoofLoss)
        assert isinstance(loss, torch.nn.Module)
        assert loss.weight == 1.0
    assert (am.name, oc.name, binary.name) == ("am_softmax_loss", "oc_softmax_loss", "binary_loss")
    assert tuple(am.centers.shape) == (2, 128) and list(am.state_dict()) == ["centers"]
    assert tuple(oc.center.shape) == (1, 128) and list(oc.state_dict()) == ["center"]
    assert list(binary.state_dict()) == []
    # positional order and defaults are ESPnet's
    am2 = ASVSpoofAMSoftmaxLoss(0.5, 64, 30, 0.2)
    oc2 = ASVSpoofOCSoftmaxLoss(0.5, 64, 0.9, 0.3, 10.0)
    assert am2.weight == 0.5 and tuple(am2.centers.shape) == (2, 64)
    assert oc2.weight == 0.5 and tuple(oc2.center.shape) == (1, 64)
    assert ASVSpoofBinaryLoss().weight == 1.0
    assert tuple(ASVSpoofAMSoftmaxLoss().centers.shape) == (2, 128)
    assert tuple(ASVSpoofOCSoftmaxLoss().center.shape) == (1, 128)


@pytest.mark.parametrize("label_form", ["B1-float", "B1-long", "B-long"])
def test_am_softmax_called_like_espnet(label_form, device):
    batch, frames, dim = 32, 60, 128
    loss = ASVSpoofAMSoftmaxLoss(weight=0.7, enc_dim=dim, s=20, m=0.5).to(device)
    encoder_out = randn(batch, frames, dim, device=device).requires_grad_()
    labels = make_labels(batch)
    label = {"B1-float": labels.float()[:, None], "B1-long": labels[:, None], "B-long": labels}[label_form]
    total = loss(label.to(device), encoder_out) * loss.weight
    score = loss.score(encoder_out)
    e64, c64 = f64(encoder_out), f64(loss.centers)
    ref = R.am_softmax_loss(labels, e64, c64, s=20.0, m=0.5) * 0.7
    assert_matches(total, ref, what="AM loss * weight", scale=20.0)
    assert_matches(score, R.am_softmax_score(e64, c64), what="AM score", scale=1.0)
    g, gc = torch.autograd.grad(total, [encoder_out, loss.centers])
    r, rc = torch.autograd.grad(ref, [e64, c64])
    assert_matches(g, r, what="d loss / d encoder_out")
    assert_matches(gc, rc, what="d loss / d centers")


@pytest.mark.parametrize("label_form", ["B1-float", "B-long"])
def test_oc_softmax_called_like_espnet(label_form, device):
    batch, frames, dim = 32, 60, 128
    loss = ASVSpoofOCSoftmaxLoss(weight=1.0, enc_dim=dim, m_real=0.5, m_fake=0.2, alpha=20.0).to(device)
    encoder_out = randn(batch, frames, dim, device=device).requires_grad_()
    labels = make_labels(batch)
    label = {"B1-float": labels.float()[:, None], "B-long": labels}[label_form]
    total = loss(label.to(device), encoder_out) * loss.weight
    e64, c64 = f64(encoder_out), f64(loss.center)
    ref = R.oc_softmax_loss(labels, e64, c64, m_real=0.5, m_fake=0.2, alpha=20.0)
    assert_matches(total, ref, what="OC loss", scale=20.0)
    assert_matches(loss.score(encoder_out), R.oc_softmax_score(e64, c64), what="OC score", scale=1.0)
    g, gc = torch.autograd.grad(total, [encoder_out, loss.center])
    r, rc = torch.autograd.grad(ref, [e64, c64])
    assert_matches(g, r, what="d loss / d encoder_out")
    assert_matches(gc, rc, what="d loss / d center")


def test_espnet_state_dict_loads(device):
    """A checkpoint of ESPnet's modules (keys centers / center) loads as is."""
    am_state = {"centers": torch.randn(2, 32)}
    oc_state = {"center": torch.randn(1, 32)}
    am = ASVSpoofAMSoftmaxLoss(enc_dim=32)
    oc = ASVSpoofOCSoftmaxLoss(enc_dim=32)
    am.load_state_dict(am_state)
    oc.load_state_dict(oc_state)
    assert torch.equal(am.centers.detach(), am_state["centers"])
    assert torch.equal(oc.center.detach(), oc_state["center"])


@pytest.mark.parametrize("pred_shape", [(64,), (64, 1), (32, 2)], ids=["B", "B1", "B2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_binary_equals_espnet_formula(pred_shape, dtype, device):
    """On non-saturating logits (|x| <= ~8, where BCELoss's log clamp at -100 is
    far away) the fused loss equals sigmoid + BCELoss, value and gradient."""
    pred = (2.5 * randn(*pred_shape, dtype=torch.float64)).clamp(-8, 8).to(dtype).to(device).requires_grad_()
    label = make_labels(pred.numel()).reshape(pred_shape).to(device)
    loss = ASVSpoofBinaryLoss(weight=1.0)
    out = loss(pred, label)
    assert out.shape == ()
    p64 = f64(pred)
    espnet = R.espnet_binary_loss(p64, label.cpu())
    assert_matches(out, espnet, what="binary vs ESPnet formula", scale=8.0)
    (g,) = torch.autograd.grad(out, [pred])
    (r,) = torch.autograd.grad(espnet, [p64])
    assert_matches(g, r, what="d binary / d pred vs ESPnet formula", scale=1.0 / pred.numel())
    # and ESPnet's formula run as ESPnet runs it (float32, same device)
    if dtype == torch.float32:
        native = R.espnet_binary_loss(pred.detach(), label)
        torch.testing.assert_close(out.detach(), native, rtol=1e-5, atol=1e-6)


def test_binary_exact_where_espnet_saturates(device):
    """A logit of 50 with label 0: ESPnet's sigmoid rounds to 1 in float32 and
    BCELoss clamps log(0) to -100; the fused loss gives the exact 50."""
    pred = torch.tensor([50.0], device=device)
    label = torch.tensor([0], device=device)
    assert R.espnet_binary_loss(pred, label).item() == pytest.approx(100.0)
    assert ASVSpoofBinaryLoss()(pred, label).item() == pytest.approx(50.0, rel=1e-7)
    assert spoofloss.BinaryLoss()(pred, label).item() == pytest.approx(50.0, rel=1e-7)
    assert R.binary_loss(pred, label).item() == pytest.approx(50.0, rel=1e-7)


def test_binary_score_is_pred(device):
    pred = randn(8, 1, device=device)
    assert torch.equal(ASVSpoofBinaryLoss().score(pred), pred)


def test_register_losses_makes_the_centres_parameters():
    """register_losses on a module that keeps its losses in a plain dict, as
    ESPnetASVSpoofModel does: the centres join parameters(), .to() and the optimiser."""
    from spoofloss.espnet import register_losses

    class KeepsLossesInADict(torch.nn.Module):
        def __init__(self, losses):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)
            self.losses = losses

    losses = {"am_softmax_loss": ASVSpoofAMSoftmaxLoss(enc_dim=8), "oc_softmax_loss": ASVSpoofOCSoftmaxLoss(enc_dim=8)}
    model = KeepsLossesInADict(losses)
    assert len(list(model.parameters())) == 2  # the Linear's weight and bias only
    registered = register_losses(model)
    assert model.losses is registered and isinstance(registered, torch.nn.ModuleDict)
    assert register_losses(model) is registered
    assert set(model.state_dict()) == {"proj.weight", "proj.bias", "losses.am_softmax_loss.centers",
                                       "losses.oc_softmax_loss.center"}
    emb = randn(6, 5, 8).requires_grad_()
    label = make_labels(6)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    before = losses["oc_softmax_loss"].center.detach().clone()
    (model.losses["oc_softmax_loss"](label, model.proj(emb)) + model.losses["am_softmax_loss"](label, emb)).backward()
    grad = losses["oc_softmax_loss"].center.grad.clone()
    assert grad.abs().max() > 0 and losses["am_softmax_loss"].centers.grad.abs().max() > 0
    optimiser.step()
    torch.testing.assert_close(losses["oc_softmax_loss"].center.detach(), before - 0.1 * grad)
    model.to(torch.float64)
    assert losses["am_softmax_loss"].centers.dtype == torch.float64
    assert losses["oc_softmax_loss"].center.dtype == torch.float64
    with pytest.raises(TypeError, match="losses"):
        register_losses(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", ["am", "oc"])
def test_forward_and_score_is_forward_and_score(name):
    """One pass for both: the same loss (and gradients) as forward, the same score as score
    (differentiable too: tests/test_score_gradient.py checks its gradient)."""
    batch, frames, dim = 16, 30, 32
    loss_fn = ASVSpoofAMSoftmaxLoss(enc_dim=dim) if name == "am" else ASVSpoofOCSoftmaxLoss(enc_dim=dim)
    emb = randn(batch, frames, dim).requires_grad_()
    label = make_labels(batch)
    lengths = make_lengths(batch, frames)
    loss, score = loss_fn.forward_and_score(label, emb, lengths)
    assert score.requires_grad
    e64 = f64(emb)
    if name == "am":
        c64 = f64(loss_fn.centers)
        ref = R.am_softmax_loss(label, e64, c64, lengths, s=loss_fn.s, m=loss_fn.m)
        ref_score = R.am_softmax_score(e64, c64, lengths)
        centres = loss_fn.centers
    else:
        c64 = f64(loss_fn.center)
        ref = R.oc_softmax_loss(label, e64, c64, lengths, m_real=loss_fn.m_real, m_fake=loss_fn.m_fake,
                                alpha=loss_fn.alpha)
        ref_score = R.oc_softmax_score(e64, c64, lengths)
        centres = loss_fn.center
    assert_matches(loss, ref, what=f"{name} forward_and_score: loss", scale=20.0)
    assert_matches(score, ref_score, what=f"{name} forward_and_score: score", scale=1.0)
    g, gc = torch.autograd.grad(loss, [emb, centres])
    r, rc = torch.autograd.grad(ref, [e64, c64])
    assert_matches(g, r, what=f"{name} forward_and_score: d loss / d emb", scale=r.abs().max().item())
    assert_matches(gc, rc, what=f"{name} forward_and_score: d loss / d centres")


def test_spoofloss_does_not_import_espnet():
    """`import spoofloss` leaves espnet alone, and spoofloss.espnet imports and
    works where espnet cannot be imported (it is blocked in a fresh interpreter)."""
    script = """
import sys
import spoofloss
assert not [m for m in sys.modules if m.split(".")[0] in ("espnet", "espnet2")], "import spoofloss imported espnet"
sys.modules["espnet2"] = None  # any `import espnet2...` now raises ImportError
import spoofloss.espnet as se
assert se.REGISTERED_WITH_ESPNET is False and se.register_with_espnet() is False
import torch
holder = torch.nn.Module()
holder.losses = {"oc_softmax_loss": se.ASVSpoofOCSoftmaxLoss(enc_dim=4)}
se.register_losses(holder)
assert [n for n, _ in holder.named_parameters()] == ["losses.oc_softmax_loss.center"]
print("ok")
"""
    python_dir = str(Path(spoofloss.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = python_dir + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
