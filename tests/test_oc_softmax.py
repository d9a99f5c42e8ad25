"""OCSoftmaxLoss's own contract: what bonafide_label does to it and how its
centre starts. (Every registered loss gets the float64 comparison in
test_losses.py; ESPnet's constructor in test_espnet_compat.py.)"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import spoofloss
from spoofloss import reference as R

from helpers.inputs import make_emb, make_labels
from helpers.tolerance import assert_matches

pytestmark = pytest.mark.usefixtures("poison")

F64 = torch.float64


def test_oc_softmax_bonafide_label_flips_the_classes(device):
    """The same data with labels flipped and bonafide_label 0 gives the same
    loss and score; the label convention matters."""
    emb = make_emb(24, 30, 48, F64, device)
    labels = make_labels(24).to(device)
    m1 = spoofloss.OCSoftmaxLoss(enc_dim=48, bonafide_label=1, reduction="none").to(device, F64)
    m0 = spoofloss.OCSoftmaxLoss(enc_dim=48, bonafide_label=0, reduction="none").to(device, F64)
    m0.load_state_dict(m1.state_dict())
    assert_matches(m0(1 - labels, emb), m1(labels, emb), what="OC loss, flipped convention")
    assert_matches(m0.score(emb), m1.score(emb), what="OC score, flipped convention")
    assert not torch.allclose(m0(labels, emb), m1(labels, emb)), "bonafide_label has no effect on OC"


@pytest.mark.parametrize("module", [spoofloss, R], ids=["fused", "reference"])
def test_oc_softmax_centre_starts_kaiming_uniform(module):
    """center randn then kaiming_uniform_(a=0.25), i.e. uniform within
    +-gain*sqrt(3/enc_dim), fresh per instance."""
    enc_dim = 4096
    center = module.OCSoftmaxLoss(enc_dim=enc_dim).center.detach()
    bound = math.sqrt(2.0 / (1 + 0.25**2)) * math.sqrt(3.0 / enc_dim)
    assert center.abs().max().item() <= bound
    assert center.abs().max().item() > 0.95 * bound
    assert center.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert not torch.equal(center, module.OCSoftmaxLoss(enc_dim=enc_dim).center.detach())


def test_oc_softmax_defaults_are_espnets():
    """Constructor arguments, their order and defaults (ESPnet's where ESPnet has them)."""
    parameters = inspect.signature(spoofloss.OCSoftmaxLoss.__init__).parameters
    defaults = {n: p.default for n, p in parameters.items() if n != "self"}
    expected = {"weight": 1.0, "enc_dim": 128, "m_real": 0.5, "m_fake": 0.2, "alpha": 20.0, "bonafide_label": 1,
                "reduction": "mean"}
    assert defaults == expected and list(defaults) == list(expected), defaults
