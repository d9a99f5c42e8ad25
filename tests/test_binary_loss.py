"""BinaryLoss's own contract: one logit per label in any shape, any label form
(soft targets included), and exact values at extreme logits.

The checks every registered loss gets (dtypes, reductions, its float64 twin)
are in test_losses.py; ESPnet's formula in test_espnet_compat.py.
"""

from __future__ import annotations

import inspect
import pytest
import torch

import spoofloss

from helpers.inputs import make_labels, randn
from helpers.losses import LossCall, build
from helpers.steps import check_step
from helpers.tolerance import assert_matches

pytestmark = pytest.mark.usefixtures("poison")

F64 = torch.float64
REDUCTIONS = ["none", "mean", "sum"]


def check(pred, label, bonafide_label, reduction):
    fused, twin = build("binary", None, bonafide_label=bonafide_label, reduction=reduction)
    call = LossCall("logits", pred, label)
    check_step(fused, twin, call, f"binary {tuple(pred.shape)} {reduction} bonafide_label {bonafide_label}")
    assert fused.score(pred) is pred


PRED_SHAPES = {"B": (64,), "B1": (64, 1), "B2": (32, 2), "3d": (4, 5, 6), "N1": (1,), "odd": (1023,)}


@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pred_shape", list(PRED_SHAPES))
def test_binary_one_logit_per_label_any_shape(pred_shape, reduction, bonafide_label, device):
    shape = PRED_SHAPES[pred_shape]
    pred = (3 * randn(*shape, dtype=F64)).float().to(device).requires_grad_()
    labels = make_labels(pred.numel()).reshape(shape)
    check(pred, labels.to(device), bonafide_label, reduction)


@pytest.mark.parametrize("label_kind", ["int64", "int32", "bool", "float32", "soft", "flat", "B1"])
def test_binary_label_forms(label_kind, device):
    """Any integer/bool/float label; soft targets in [0, 1]; any shape with the
    same number of elements as pred."""
    pred = (3 * randn(48, 1, dtype=F64)).to(device).requires_grad_()
    labels = make_labels(48).reshape(48, 1)
    if label_kind == "soft":
        label = torch.rand(48, 1, dtype=F64)
        label[0], label[1] = 0.0, 1.0
        label = label.float()
    elif label_kind == "flat":
        label = labels.reshape(48)
    elif label_kind == "B1":
        pred = (3 * randn(48, dtype=F64)).to(device).requires_grad_()
        label = labels
    else:
        label = labels.to(getattr(torch, label_kind))
    for bonafide_label in (0, 1):
        check(pred, label.to(device), bonafide_label, "none")


def test_binary_bonafide_label_flips_the_target(device):
    """bonafide_label 0 on labels 1 - y is bonafide_label 1 on y."""
    pred = (3 * randn(40, dtype=F64)).to(device)
    labels = make_labels(40).to(device)
    flipped = spoofloss.BinaryLoss(bonafide_label=0, reduction="none")(pred, 1 - labels)
    assert_matches(flipped, spoofloss.BinaryLoss(reduction="none")(pred, labels), what="flipped convention")


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


def test_binary_defaults_are_espnets():
    """Constructor arguments, their order and defaults (ESPnet's where ESPnet has them)."""
    parameters = inspect.signature(spoofloss.BinaryLoss.__init__).parameters
    defaults = {n: p.default for n, p in parameters.items() if n != "self"}
    expected = {"weight": 1.0, "bonafide_label": 1, "reduction": "mean", "num_logits": 1, "class_weight": None,
                "score": "logit_difference"}
    assert defaults == expected and list(defaults) == list(expected), defaults
