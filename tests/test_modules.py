"""Module-level API of the fused losses and of their reference twins:
names, weight, constructor signatures, parameters and their initialisation,
the abstract base class, and fused == reference once they share parameters."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import spoofloss
from spoofloss import reference as R

from conftest import assert_matches, f64, make_labels, make_lengths, randn

pytestmark = pytest.mark.usefixtures("poison")

SIGNATURES = {
    "BinaryLoss": {"weight": 1.0, "bonafide_label": 1, "reduction": "mean"},
    "AMSoftmaxLoss": {"weight": 1.0, "enc_dim": 128, "s": 20.0, "m": 0.5, "bonafide_label": 1, "reduction": "mean",
                      "num_classes": 2, "score": "cosine"},
    "OCSoftmaxLoss": {"weight": 1.0, "enc_dim": 128, "m_real": 0.5, "m_fake": 0.2, "alpha": 20.0,
                      "bonafide_label": 1, "reduction": "mean"},
}
NAMES = {"BinaryLoss": "binary_loss", "AMSoftmaxLoss": "am_softmax_loss", "OCSoftmaxLoss": "oc_softmax_loss"}
PARAMS = {"BinaryLoss": {}, "AMSoftmaxLoss": {"centers": (2, 128)}, "OCSoftmaxLoss": {"center": (1, 128)}}


def _defaults(cls):
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items() if n != "self"}


@pytest.mark.parametrize("module", [spoofloss, R], ids=["fused", "reference"])
@pytest.mark.parametrize("cls_name", list(SIGNATURES))
def test_constructor_names_and_parameters(cls_name, module):
    cls = getattr(module, cls_name)
    assert _defaults(cls) == SIGNATURES[cls_name], "constructor arguments (order and defaults)"
    assert list(_defaults(cls)) == list(SIGNATURES[cls_name])
    loss = cls()
    assert isinstance(loss, torch.nn.Module)
    assert loss.name == NAMES[cls_name]
    assert loss.weight == 1.0
    assert cls(weight=0.25).weight == 0.25
    state = loss.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == PARAMS[cls_name]
    for key in PARAMS[cls_name]:
        param = getattr(loss, key)
        assert isinstance(param, torch.nn.Parameter) and param.requires_grad and param.dtype == torch.float32
    if module is spoofloss:
        assert isinstance(loss, spoofloss.AbsASVSpoofLoss)


@pytest.mark.parametrize("cls_name", ["AMSoftmaxLoss", "OCSoftmaxLoss"])
def test_enc_dim(cls_name):
    for module in (spoofloss, R):
        loss = getattr(module, cls_name)(enc_dim=40)
        (param,) = loss.parameters()
        assert param.shape[1] == 40


@pytest.mark.parametrize("module", [spoofloss, R], ids=["fused", "reference"])
def test_centre_initialisation(module):
    """AM: centers ~ randn [2, enc_dim]; OC: center randn then
    kaiming_uniform_(a=0.25), i.e. uniform within +-gain*sqrt(3/enc_dim)."""
    enc_dim = 4096
    centers = module.AMSoftmaxLoss(enc_dim=enc_dim).centers.detach()
    assert 0.95 < centers.std().item() < 1.05 and abs(centers.mean().item()) < 0.05
    assert centers.abs().max().item() > 3.0  # a normal, not a uniform, sample
    center = module.OCSoftmaxLoss(enc_dim=enc_dim).center.detach()
    bound = math.sqrt(2.0 / (1 + 0.25**2)) * math.sqrt(3.0 / enc_dim)
    assert center.abs().max().item() <= bound
    assert center.abs().max().item() > 0.95 * bound
    assert center.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    # fresh draws per instance
    assert not torch.equal(center, module.OCSoftmaxLoss(enc_dim=enc_dim).center.detach())


def test_abstract_base():
    base = spoofloss.AbsASVSpoofLoss
    assert issubclass(base, torch.nn.Module)
    with pytest.raises(TypeError):
        base()

    class NoScore(base):
        @property
        def name(self):
            return "x"

        def forward(self, a, b):
            return a

    class NoName(base):
        def forward(self, a, b):
            return a

        def score(self, a):
            return a

    class Complete(base):
        def __init__(self):
            super().__init__()
            self.weight = 2.0

        @property
        def name(self):
            return "complete"

        def forward(self, a, b):
            return a

        def score(self, a):
            return a

    with pytest.raises(TypeError):
        NoScore()
    try:
        incomplete = NoName()
    except TypeError:
        pass  # name is abstract: instantiation refused
    else:
        with pytest.raises(NotImplementedError):
            incomplete.name  # noqa: B018
    done = Complete()
    assert done.name == "complete" and done.weight == 2.0


@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("cls_name", ["AMSoftmaxLoss", "OCSoftmaxLoss"])
def test_fused_equals_reference_module(cls_name, reduction, bonafide_label, device):
    """With shared parameters, fused and reference modules agree (float64);
    so the benchmark compares like with like."""
    batch, frames, dim = 20, 30, 48
    kwargs = dict(enc_dim=dim, bonafide_label=bonafide_label, reduction=reduction)
    fused = getattr(spoofloss, cls_name)(**kwargs).to(device, torch.float64)
    ref = getattr(R, cls_name)(**kwargs).double()
    ref.load_state_dict({k: v.cpu() for k, v in fused.state_dict().items()})
    emb = randn(batch, frames, dim, dtype=torch.float64, device=device).requires_grad_()
    lengths = make_lengths(batch, frames)
    label = make_labels(batch)[:, None]
    out = fused(label.to(device), emb, lengths.to(device))
    e64 = f64(emb)
    expected = ref(label, e64, lengths)
    assert_matches(out, expected, what="fused vs reference module", scale=20.0)
    (param,) = fused.parameters()
    (rparam,) = ref.parameters()
    g = torch.autograd.grad(out.sum(), [emb, param])
    r = torch.autograd.grad(expected.sum(), [e64, rparam])
    assert_matches(g[0], r[0], what="d / d emb")
    assert_matches(g[1], r[1], what="d / d centres")
    assert_matches(fused.score(emb, lengths.to(device)), ref.score(e64, lengths), what="score", scale=1.0)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("bonafide_label", [0, 1])
def test_fused_equals_reference_binary(bonafide_label, reduction, device):
    pred = randn(40, 2, dtype=torch.float64, device=device)
    label = make_labels(80).reshape(40, 2)
    fused = spoofloss.BinaryLoss(bonafide_label=bonafide_label, reduction=reduction)
    ref = R.BinaryLoss(bonafide_label=bonafide_label, reduction=reduction)
    assert_matches(fused(pred, label.to(device)), ref(pred.cpu(), label), what="binary", scale=5.0)
    assert torch.equal(fused.score(pred), pred) and torch.equal(ref.score(pred), pred)


@pytest.mark.parametrize("cls_name", ["AMSoftmaxLoss", "OCSoftmaxLoss"])
def test_module_moves_and_casts(cls_name, device):
    loss = getattr(spoofloss, cls_name)(enc_dim=16).to(device)
    (param,) = loss.parameters()
    assert param.device.type == device
    loss = loss.double()
    (param,) = loss.parameters()
    assert param.dtype == torch.float64
    out = loss(make_labels(4).to(device), randn(4, 5, 16, dtype=torch.float64, device=device))
    assert out.dtype == torch.float64 and out.device.type == device
