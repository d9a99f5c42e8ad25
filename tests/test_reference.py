"""The reference itself, against independent NumPy float64 formulas written
straight from the contract, so the yardstick of the other tests is checked too.
Also: the reference computes in its inputs' dtype (it is the benchmark
baseline) and ignores padded frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spoofloss import reference as R

from helpers.inputs import make_labels, make_lengths


def np_pool(emb, lengths):
    if emb.ndim == 2:
        return emb
    if lengths is None:
        return emb.mean(axis=1)
    return np.stack([emb[b, : lengths[b]].mean(axis=0) for b in range(emb.shape[0])])


def np_cos(emb, centers, lengths):
    x = np_pool(emb, lengths)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cn = centers / np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-12)
    return xn @ cn.T


def np_softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def inputs(batch=9, frames=13, dim=10, centers=2, with_lengths=True):
    emb = torch.randn(batch, frames, dim, dtype=torch.float64)
    c = torch.randn(centers, dim, dtype=torch.float64)
    label = make_labels(batch)
    lengths = make_lengths(batch, frames) if with_lengths else None
    return emb, c, label, lengths


@pytest.mark.parametrize("with_lengths", [False, True])
def test_am_softmax_against_numpy(with_lengths):
    emb, c, label, lengths = inputs(with_lengths=with_lengths)
    s, m = 17.0, 0.35
    cos = np_cos(emb.numpy(), c.numpy(), None if lengths is None else lengths.numpy())
    y = label.numpy()
    z = s * (cos - m * np.eye(2)[y])
    zmax = z.max(axis=1, keepdims=True)
    expected = (zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))) - z[np.arange(len(y)), y]
    out = R.am_softmax_loss(label, emb, c, lengths, s=s, m=m, reduction="none")
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(R.am_softmax_loss(label, emb, c, lengths, s=s, m=m).item(), expected.mean(), rtol=1e-12)
    np.testing.assert_allclose(
        R.am_softmax_loss(label, emb, c, lengths, s=s, m=m, reduction="sum").item(), expected.sum(), rtol=1e-12
    )
    for bonafide_label in (0, 1):
        np.testing.assert_allclose(
            R.am_softmax_score(emb, c, lengths, bonafide_label=bonafide_label).numpy(), cos[:, bonafide_label],
            rtol=1e-12, atol=1e-14,
        )


@pytest.mark.parametrize("bonafide_label", [0, 1])
def test_oc_softmax_against_numpy(bonafide_label):
    emb, c, label, lengths = inputs(centers=1)
    m_real, m_fake, alpha = 0.6, 0.1, 13.0
    cos = np_cos(emb.numpy(), c.numpy(), lengths.numpy())[:, 0]
    bona = label.numpy() == bonafide_label
    expected = np.where(bona, np_softplus(alpha * (m_real - cos)), np_softplus(alpha * (cos - m_fake)))
    out = R.oc_softmax_loss(label, emb, c, lengths, m_real=m_real, m_fake=m_fake, alpha=alpha,
                            bonafide_label=bonafide_label, reduction="none")
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(R.oc_softmax_score(emb, c, lengths).numpy(), cos, rtol=1e-12, atol=1e-14)


def test_am_softmax_is_cross_entropy():
    """The two-class form equals F.cross_entropy (value and gradient) where the
    latter is accurate, and keeps full relative accuracy where it is not."""
    emb, c, label, lengths = inputs(batch=32)
    emb.requires_grad_()
    cos = R.cosines(emb, c, lengths)
    logits = 20.0 * (cos - 0.5 * torch.nn.functional.one_hot(label, 2).double())
    ce = torch.nn.functional.cross_entropy(logits, label, reduction="none")
    out = R.am_softmax_loss(label, emb, c, lengths, reduction="none")
    torch.testing.assert_close(out, ce, rtol=1e-12, atol=1e-13)
    g_ce, g = (torch.autograd.grad(v.sum(), [emb])[0] for v in (ce, out))
    torch.testing.assert_close(g, g_ce, rtol=1e-9, atol=1e-13)
    # a nearly perfect utterance: cos_y = 1, cos_other = -1, s = 64 -> gap = -96
    c2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    tiny = R.am_softmax_loss(torch.tensor([0]), x, c2, s=64.0, reduction="none")
    assert tiny.item() == pytest.approx(math.exp(-96.0), rel=1e-14, abs=0)


def test_cross_entropy_gradient_at_tied_logits():
    """d CE / d z = softmax(z) - onehot(y), also where logits tie exactly (at D = 1
    all cosines are +-1): the log-sum-exp shift must not carry a gradient, whose
    value at a tie would be torch's subgradient convention (torch 2.13 gave a
    tied two-class posterior a zero gradient)."""
    gen = torch.Generator().manual_seed(7)
    for classes in (2, 3, 5):
        z = torch.randn(12, classes, generator=gen, dtype=torch.float64)
        target = torch.randint(0, classes, (12,), generator=gen)
        other, third = (target + 1) % classes, (target + 2) % classes
        tied_all, tied_target, tied_others = torch.arange(0, 12, 3), torch.arange(1, 12, 3), torch.arange(2, 12, 3)
        z[tied_all] = z[tied_all, :1]                                      # every logit equal
        z[tied_target, other[tied_target]] = z[tied_target, target[tied_target]]  # the target's and one other
        if classes > 2:                                                    # two others, above the target
            z[tied_others, other[tied_others]] = z[tied_others, target[tied_others]] + 0.5
            z[tied_others, third[tied_others]] = z[tied_others, target[tied_others]] + 0.5
        z.requires_grad_()
        grad, = torch.autograd.grad(R.margin_cross_entropy(z, target).sum(), [z])
        expected = torch.softmax(z.detach(), dim=1) - torch.nn.functional.one_hot(target, classes).double()
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15, msg=lambda m: f"{classes} classes: {m}")


def test_oc_softplus_is_exact_above_20():
    """F.softplus returns x itself above 20; the reference must not."""
    c = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    emb = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)  # cos = -1
    out = R.oc_softmax_loss(torch.tensor([1]), emb, c, alpha=15.0, reduction="none")  # 15 * 1.5 = 22.5
    assert out.item() == 22.5 + math.log1p(math.exp(-22.5))
    assert out.item() != 22.5


@pytest.mark.parametrize("bonafide_label", [0, 1])
def test_binary_against_numpy(bonafide_label):
    pred = 4 * torch.randn(5, 3, dtype=torch.float64)
    label = torch.rand(5, 3, dtype=torch.float64)
    x, t = pred.numpy().ravel(), label.numpy().ravel()
    t = t if bonafide_label == 1 else 1 - t
    expected = np_softplus(x) - t * x
    out = R.binary_loss(pred, label, bonafide_label=bonafide_label, reduction="none")
    assert out.shape == (15,)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-14)
    # ESPnet's formula: the same on moderate logits
    hard = (label > 0.5).long()
    np.testing.assert_allclose(
        R.espnet_binary_loss(pred, hard).item(), R.binary_loss(pred, hard).item(), rtol=1e-10
    )


def test_masked_mean():
    emb, _, _, lengths = inputs()
    out = R.masked_mean(emb, lengths)
    np.testing.assert_allclose(out.numpy(), np_pool(emb.numpy(), lengths.numpy()), rtol=1e-13)
    np.testing.assert_allclose(R.masked_mean(emb).numpy(), emb.numpy().mean(axis=1), rtol=1e-13)
    assert R.masked_mean(emb[:, 0]) is emb[:, 0] or torch.equal(R.masked_mean(emb[:, 0]), emb[:, 0])
    # padded frames are never read: NaN there changes nothing, gets zero gradient
    poisoned = emb.clone()
    padded = torch.arange(emb.shape[1])[None] >= lengths[:, None]
    poisoned[padded] = float("nan")
    poisoned.requires_grad_()
    pooled = R.masked_mean(poisoned, lengths)
    torch.testing.assert_close(pooled, out, rtol=0, atol=0)
    (g,) = torch.autograd.grad(pooled.sum(), [poisoned])
    assert bool((g[padded] == 0).all())
    assert bool((g[~padded] != 0).all())
    assert R.masked_mean(emb, lengths.int()).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_reference_computes_in_input_dtype(dtype):
    emb, c, label, lengths = inputs()
    emb, c = emb.to(dtype), c.to(dtype)
    assert R.am_softmax_loss(label, emb, c, lengths).dtype == dtype
    assert R.oc_softmax_loss(label, emb, c[:1], lengths).dtype == dtype
    assert R.am_softmax_score(emb, c, lengths).dtype == dtype
    assert R.binary_loss(emb[:, 0, 0], label).dtype == dtype
    # mixed (AMP): bf16 emb and float32 centres promote to float32
    assert R.am_softmax_loss(label, emb, c.float(), lengths).dtype == torch.promote_types(dtype, torch.float32)


@pytest.mark.parametrize("form", ["B1-long", "B-bool", "B-float", "B1-float"])
def test_reference_label_forms(form):
    emb, c, label, lengths = inputs()
    shaped = {"B1-long": label[:, None], "B-bool": label.bool(), "B-float": label.float(),
              "B1-float": label.float()[:, None]}[form]
    for fn, cc in ((R.am_softmax_loss, c), (R.oc_softmax_loss, c[:1])):
        torch.testing.assert_close(fn(shaped, emb, cc, lengths, reduction="none"),
                                   fn(label, emb, cc, lengths, reduction="none"), rtol=0, atol=0)
