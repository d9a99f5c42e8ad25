"""AMSoftmaxLoss's own contract: what bonafide_label does to it and how its
centres start. (Every registered loss gets the float64 comparison in
test_losses.py; ESPnet's constructor in test_espnet_compat.py.)"""

from __future__ import annotations

import inspect
import pytest
import torch

import spoofloss
from spoofloss import reference as R

from helpers.inputs import f64, make_emb, make_labels
from helpers.tolerance import assert_matches

pytestmark = pytest.mark.usefixtures("poison")

F64 = torch.float64


def test_am_softmax_loss_ignores_bonafide_label_and_score_switches_centre(device):
    """With equal margins the AM loss does not depend on which class is bona
    fide; the score is the cosine to that class's centre."""
    emb = make_emb(24, 30, 48, F64, device)
    labels = make_labels(24).to(device)
    m1 = spoofloss.AMSoftmaxLoss(enc_dim=48, bonafide_label=1, reduction="none").to(device, F64)
    m0 = spoofloss.AMSoftmaxLoss(enc_dim=48, bonafide_label=0, reduction="none").to(device, F64)
    m0.load_state_dict(m1.state_dict())
    assert_matches(m0(labels, emb), m1(labels, emb), what="AM loss does not depend on bonafide_label")
    s0, s1 = m0.score(emb), m1.score(emb)
    assert_matches(s0, R.am_softmax_score(f64(emb), f64(m1.centers), bonafide_label=0), what="AM score, label 0")
    assert not torch.allclose(s0, s1), "AM score ignores bonafide_label"


@pytest.mark.parametrize("module", [spoofloss, R], ids=["fused", "reference"])
def test_am_softmax_centres_start_normal(module):
    """centers ~ randn [num_classes, enc_dim], fresh per instance."""
    centers = module.AMSoftmaxLoss(enc_dim=4096).centers.detach()
    assert centers.shape == (2, 4096)
    assert 0.95 < centers.std().item() < 1.05 and abs(centers.mean().item()) < 0.05
    assert centers.abs().max().item() > 3.0  # a normal, not a uniform, sample
    assert not torch.equal(centers, module.AMSoftmaxLoss(enc_dim=4096).centers.detach())


def test_am_softmax_defaults_are_espnets():
    """Constructor arguments, their order and defaults (ESPnet's where ESPnet has them)."""
    parameters = inspect.signature(spoofloss.AMSoftmaxLoss.__init__).parameters
    defaults = {n: p.default for n, p in parameters.items() if n != "self"}
    expected = {"weight": 1.0, "enc_dim": 128, "s": 20.0, "m": 0.5, "bonafide_label": 1, "reduction": "mean",
                "num_classes": 2, "score": "cosine"}
    assert defaults == expected and list(defaults) == list(expected), defaults
