"""The binary loss on one or two logits per utterance, class-weighted or not,
against torch's own losses as independent references.

* Two logits (pred [B, 2], column k = label k): torch's
  ``CrossEntropyLoss(weight=...)``: class indices (integer / bool labels)
  whose weighted mean divides by sum_i w_{y_i}, class probabilities (floating
  labels p -> (1 - p, p)) whose mean divides by N with the weights inside.
* One logit: torch's ``BCEWithLogitsLoss``: ``weight=w[label]`` for class
  indices, ``weight=w_s, pos_weight=w_b / w_s`` for soft targets; the mean
  divides by N.

On random, extreme (|logit| up to 1e4, -inf on the other class's logit where
torch is finite) and tied inputs; hard and soft labels; every reduction; both
bonafide_label values; float32 / float64 / bfloat16 / float16; non-contiguous
pred; the weighted mean's divisor (and the op's total_weight output); a bad
label (the CPU raises, the CUDA kernels give NaN); gradcheck, gradgradcheck
and opcheck of the ops; the two scores, and AASIST's loss and score.
"""

from __future__ import annotations

import math

import pytest
import torch

import spoofloss
from spoofloss import ops
from spoofloss import reference as R

from helpers.devices import EMULATED_CUDA, runs_cuda_kernels
from helpers.inputs import make_labels, random_upstream
from helpers.tolerance import assert_identical, assert_matches, expected_out_dtype

pytestmark = pytest.mark.usefixtures("poison")

NONE, MEAN, SUM = 0, 1, 2
REDUCTIONS = (NONE, MEAN, SUM)
RED_NAMES = {NONE: "none", MEAN: "mean", SUM: "sum"}
F64 = torch.float64
DTYPES = [torch.float32, F64, torch.bfloat16, torch.float16]
DTYPE_IDS = ["float32", "float64", "bfloat16", "float16"]
WEIGHTS = [None, (0.1, 0.9), (1.7, 0.4)]
WEIGHT_IDS = ["unweighted", "w0.1-0.9", "w1.7-0.4"]
LABEL_KINDS = ["int64", "bool", "float-hard", "soft"]


# --------------------------------------------------------------------------- #
# torch's losses, float64, as the independent references
# --------------------------------------------------------------------------- #


def torch_loss(pred64, label, bonafide_label, reduction, class_weight, num_logits):
    """The loss by torch's own modules, in float64 (pred64 [B, 2] or any shape)."""
    red = RED_NAMES[reduction]
    weight = None if class_weight is None else torch.tensor(class_weight, dtype=F64)
    flat = label.reshape(-1).cpu()
    if num_logits == 2:
        if flat.is_floating_point():  # class probabilities (1 - p, p)
            p = flat.double()
            target = torch.stack([1 - p, p], dim=1)
        else:  # class indices
            target = flat.long()
        return torch.nn.CrossEntropyLoss(weight=weight, reduction=red)(pred64, target)
    x = pred64.reshape(-1)
    t = flat.double() if bonafide_label == 1 else 1 - flat.double()
    if weight is None:
        return torch.nn.BCEWithLogitsLoss(reduction=red)(x, t)
    if not flat.is_floating_point():  # class indices: each element weighted by its class's weight
        return torch.nn.BCEWithLogitsLoss(weight=weight[flat.long()], reduction=red)(x, t)
    w_b, w_s = weight[bonafide_label], weight[1 - bonafide_label]
    return torch.nn.BCEWithLogitsLoss(weight=w_s, pos_weight=w_b / w_s, reduction=red)(x, t)


def divisor(label, class_weight, num_logits, reduction) -> float:
    """What torch's mean divides by (1 for none and sum)."""
    if reduction != MEAN:
        return 1.0
    flat = label.reshape(-1).cpu()
    if num_logits == 2 and class_weight is not None and not flat.is_floating_point():
        return float(torch.tensor(class_weight, dtype=F64)[flat.long()].sum())
    return float(flat.numel())


def make_label(batch, kind):
    hard = make_labels(batch)
    if kind == "int64":
        return hard
    if kind == "bool":
        return hard.bool()
    if kind == "float-hard":
        return hard.float()
    soft = torch.rand(batch, dtype=F64).float()
    soft[:2] = torch.tensor([0.0, 1.0])  # the ends of [0, 1] too
    return soft


def make_pred(batch, num_logits, dtype, device, scale=3.0):
    shape = (batch,) if num_logits == 1 else (batch, 2)
    return (scale * torch.randn(shape, dtype=F64)).to(dtype).to(device)


def check_against_torch(pred, label, bonafide_label, class_weight, num_logits, reductions=REDUCTIONS, what=""):
    """Loss and d loss / d pred of the op for each reduction against torch's in
    float64, from the values pred holds (low precision upcast exactly)."""
    device, dtype = pred.device, pred.dtype
    wmax = 1.0 if class_weight is None else max(class_weight)
    finite = pred.detach()[torch.isfinite(pred.detach())]
    logit_scale = num_logits * (finite.double().abs().max().item() if finite.numel() else 0.0) + 1.0
    for reduction in reductions:
        x = pred.detach().clone().requires_grad_()
        out = ops.binary_cross_entropy(x, label.to(device), bonafide_label, reduction, class_weight, num_logits)
        up = random_upstream(out)
        (grad,) = torch.autograd.grad(out, [x], up)
        p64 = pred.detach().cpu().double().requires_grad_()
        ref = torch_loss(p64, label, bonafide_label, reduction, class_weight, num_logits)
        (ref_grad,) = torch.autograd.grad(ref, [p64], up.cpu().double())
        name = f"{what} {RED_NAMES[reduction]}"
        assert out.dtype == expected_out_dtype(dtype) and grad.dtype == dtype and grad.shape == pred.shape
        assert_matches(out, ref, dtype=expected_out_dtype(dtype), what=f"{name} loss", scale=wmax * logit_scale)
        total = divisor(label, class_weight, num_logits, reduction)
        grad_scale = up.abs().max().item() * wmax / (total if total > 0 else 1.0)
        assert_matches(grad, ref_grad, what=f"{name} d loss / d pred", scale=grad_scale)


# --------------------------------------------------------------------------- #
# random inputs
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("label_kind", LABEL_KINDS)
@pytest.mark.parametrize("class_weight", WEIGHTS, ids=WEIGHT_IDS)
@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("num_logits", [1, 2], ids=["one-logit", "two-logits"])
def test_matches_torch(num_logits, bonafide_label, class_weight, label_kind, dtype, device):
    pred = make_pred(53, num_logits, dtype, device)
    label = make_label(53, label_kind)
    check_against_torch(pred, label, bonafide_label, class_weight, num_logits,
                        what=f"{num_logits} logit(s) {label_kind} {class_weight}")


@pytest.mark.parametrize("class_weight", WEIGHTS[:2], ids=WEIGHT_IDS[:2])
@pytest.mark.parametrize("num_logits", [1, 2], ids=["one-logit", "two-logits"])
def test_matches_torch_many_blocks(num_logits, class_weight, device):
    """3000 labels: several chunks on the CPU, several blocks (and their
    partial sums of losses and weights) on CUDA."""
    pred = make_pred(3000, num_logits, torch.float32, device)
    check_against_torch(pred, make_labels(3000), 1, class_weight, num_logits, what="B = 3000")
    check_against_torch(pred, torch.rand(3000), 0, class_weight, num_logits, reductions=(MEAN,), what="B = 3000 soft")


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4)], ids=["4x3", "2x3x4"])
@pytest.mark.parametrize("class_weight", WEIGHTS[:2], ids=WEIGHT_IDS[:2])
def test_one_logit_any_shape(class_weight, shape, device):
    """One logit per label: pred and label of any shapes with the same element count."""
    pred = make_pred(math.prod(shape), 1, torch.float32, device).reshape(shape)
    label = make_labels(math.prod(shape)).reshape(-1, 1)
    check_against_torch(pred, label, 1, class_weight, 1, what=f"pred {shape}")


# --------------------------------------------------------------------------- #
# extreme, infinite and tied logits
# --------------------------------------------------------------------------- #


def extreme_pred(batch, num_logits, dtype, device):
    """Logits of magnitudes 1e-3 to 1e4, random signs, ±1e4 itself among them."""
    shape = (batch,) if num_logits == 1 else (batch, 2)
    magnitude = 10.0 ** (7 * torch.rand(shape, dtype=F64) - 3)
    values = torch.where(torch.rand(shape) < 0.5, -magnitude, magnitude)
    values.view(-1)[:4] = torch.tensor([1e4, -1e4, 1e4, -1e4], dtype=F64)
    return values.to(dtype).to(device)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("label_kind", ["int64", "soft"])
@pytest.mark.parametrize("class_weight", WEIGHTS[:2], ids=WEIGHT_IDS[:2])
@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("num_logits", [1, 2], ids=["one-logit", "two-logits"])
def test_extreme_logits(num_logits, bonafide_label, class_weight, label_kind, dtype, device):
    pred = extreme_pred(64, num_logits, dtype, device)
    check_against_torch(pred, make_label(64, label_kind), bonafide_label, class_weight, num_logits,
                        what=f"|logit| up to 1e4 {label_kind}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("class_weight", WEIGHTS, ids=WEIGHT_IDS)
@pytest.mark.parametrize("bonafide_label", [0, 1])
def test_minus_infinity_on_the_other_class(bonafide_label, class_weight, dtype, device):
    """Two logits, class indices: where the other class's logit is -inf, torch's
    cross-entropy is 0 and its gradient 0 (finite), and so are these (the
    term of the class with zero probability vanishes, not 0 * inf = NaN)."""
    batch = 24
    label = make_labels(batch)
    pred = (3 * torch.randn(batch, 2, dtype=F64)).to(dtype)
    rows = torch.randperm(batch)[: batch // 2]
    pred[rows, 1 - label[rows]] = float("-inf")
    pred64 = pred.double()
    for reduction in REDUCTIONS:
        ref = torch_loss(pred64, label, bonafide_label, reduction, class_weight, 2)
        assert torch.isfinite(ref).all(), "the case must be one where torch is finite"
    check_against_torch(pred.to(device), label, bonafide_label, class_weight, 2, what="-inf on the other class")
    out = ops.binary_cross_entropy(pred.to(device), label.to(device), bonafide_label, NONE, class_weight, 2)
    assert torch.equal(out[rows.to(device)].cpu(), torch.zeros(len(rows), dtype=out.dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("class_weight", WEIGHTS[:2], ids=WEIGHT_IDS[:2])
@pytest.mark.parametrize("num_logits", [1, 2], ids=["one-logit", "two-logits"])
def test_tied_logits(num_logits, class_weight, dtype, device):
    """Ties: the two logits of a row equal (x = 0: loss w_y log 2), and every
    row the same."""
    batch = 40
    if num_logits == 2:
        column = (3 * torch.randn(batch, 1, dtype=F64)).to(dtype)
        pred = column.expand(batch, 2).contiguous()
    else:
        pred = torch.zeros(batch, dtype=dtype)
    for label in (make_labels(batch), torch.rand(batch)):
        for bonafide_label in (0, 1):
            check_against_torch(pred.to(device), label, bonafide_label, class_weight, num_logits, what="tied columns")
    same_rows = make_pred(1, num_logits, dtype, "cpu").expand((batch,) if num_logits == 1 else (batch, 2))
    check_against_torch(same_rows.contiguous().to(device), make_labels(batch), 1, class_weight, num_logits,
                        what="identical rows")
    ones = ops.binary_cross_entropy(same_rows.to(device), torch.ones(batch, dtype=torch.long, device=device), 1, NONE,
                                    class_weight, num_logits)
    assert torch.equal(ones, ones[:1].expand(batch)), "identical rows and labels, identical losses"


# --------------------------------------------------------------------------- #
# layouts of pred
# --------------------------------------------------------------------------- #


def strided_pred(layout, batch, dtype, device):
    """[B, 2] views that are not contiguous."""
    if layout == "column-slice":  # strides (4, 1)
        return (3 * torch.randn(batch, 4, dtype=F64)).to(dtype).to(device)[:, 1:3]
    if layout == "transposed":  # strides (1, B)
        return (3 * torch.randn(2, batch, dtype=F64)).to(dtype).to(device).t()
    if layout == "every-other-row":  # strides (4, 1)
        return (3 * torch.randn(2 * batch, 2, dtype=F64)).to(dtype).to(device)[::2]
    if layout == "expanded":  # strides (0, 1): one row for every utterance
        return (3 * torch.randn(1, 2, dtype=F64)).to(dtype).to(device).expand(batch, 2)
    raise ValueError(layout)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["column-slice", "transposed", "every-other-row", "expanded"])
def test_non_contiguous_pred(layout, dtype, device):
    pred = strided_pred(layout, 37, dtype, device)
    assert not pred.is_contiguous()
    for class_weight in WEIGHTS[:2]:
        check_against_torch(pred, make_labels(37), 1, class_weight, 2, what=layout)
        check_against_torch(pred, torch.rand(37), 0, class_weight, 2, reductions=(MEAN,), what=f"{layout} soft")
    # one logit per label, from a strided view
    one = (3 * torch.randn(74, dtype=F64)).to(dtype).to(device)[::2]
    check_against_torch(one, make_labels(37), 1, (0.1, 0.9), 1, what="one logit, every other element")


# --------------------------------------------------------------------------- #
# what the mean divides by
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("num_logits", [1, 2], ids=["one-logit", "two-logits"])
def test_weighted_mean_divisor_and_total_weight(num_logits, device):
    """Two logits, class indices, class weights: mean = sum / sum_i w_{y_i}, and
    the op's total_weight is that sum (for sum too; 0 for none, as torch's
    nll_loss). A floating label holding the same 0/1 values is a probability:
    mean = sum / N. One logit: mean = sum / N whatever the label dtype."""
    batch = 50
    weights = (0.1, 0.9)
    label = make_labels(batch)
    pred = make_pred(batch, num_logits, F64, device)
    target_weights = torch.tensor(weights, dtype=F64)[label].sum().item()
    for lab, expected in ((label, target_weights if num_logits == 2 else batch), (label.double(), batch),
                          (label.bool(), target_weights if num_logits == 2 else batch)):
        op = torch.ops.spoofloss.binary_cross_entropy.default
        mean, mean_weight = op(pred, lab.to(device), 1, MEAN, weights, num_logits)
        total, sum_weight = op(pred, lab.to(device), 1, SUM, weights, num_logits)
        per, none_weight = op(pred, lab.to(device), 1, NONE, weights, num_logits)
        assert mean_weight.shape == sum_weight.shape == none_weight.shape == ()
        assert mean_weight.item() == pytest.approx(expected, rel=1e-14)
        assert sum_weight.item() == pytest.approx(expected, rel=1e-14)
        assert none_weight.item() == 0.0
        assert mean.item() == pytest.approx(total.item() / expected, rel=1e-13)
        assert total.item() == pytest.approx(per.sum().item(), rel=1e-13)
    # without class weights every target weighs 1: the mean divides by N
    _, unweighted = torch.ops.spoofloss.binary_cross_entropy.default(pred, label.to(device), 1, MEAN, None, num_logits)
    assert unweighted.item() == batch


def test_all_targets_weigh_zero_is_nan_as_torch(device):
    """A batch whose every target has weight 0: torch's weighted mean is 0 / 0 =
    NaN, loss and gradient; so is this one."""
    label = torch.zeros(8, dtype=torch.long)
    pred = make_pred(8, 2, torch.float32, device)
    check_against_torch(pred, label, 1, (0.0, 1.0), 2, what="zero total weight")
    out = ops.binary_cross_entropy(pred, label.to(device), 1, MEAN, (0.0, 1.0), 2)
    assert torch.isnan(out)


# --------------------------------------------------------------------------- #
# a label outside {0, 1} / [0, 1]
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("bad", [2, -1, 1.5, -0.25, float("nan")], ids=["2", "-1", "1.5", "-0.25", "nan"])
@pytest.mark.parametrize("num_logits", [1, 2], ids=["one-logit", "two-logits"])
def test_bad_label(num_logits, bad, device):
    """The CPU raises naming the element; the CUDA kernels (which would need a
    host synchronisation to raise) give that element a NaN loss and gradient,
    and the others their values."""
    batch, where = 9, 4
    label = make_labels(batch).to(torch.long if isinstance(bad, int) else torch.float32)
    label[where] = bad
    pred = make_pred(batch, num_logits, torch.float32, device).requires_grad_()
    weights = (0.1, 0.9)
    if not runs_cuda_kernels(device):
        for reduction in REDUCTIONS:
            with pytest.raises(ValueError, match=rf"label\[{where}\] = .* lies outside \[0, 1\]"):
                ops.binary_cross_entropy(pred, label.to(device), 1, reduction, weights, num_logits)
        return
    per = ops.binary_cross_entropy(pred, label.to(device), 1, NONE, weights, num_logits)
    (grad,) = torch.autograd.grad(per, [pred], torch.ones_like(per))
    ok = torch.arange(batch) != where
    assert torch.isnan(per[where]) and torch.isnan(grad[where]).all()
    good = label.clone()
    good[where] = 0
    ref = torch_loss(pred.detach().cpu().double(), good, 1, NONE, weights, num_logits)
    assert_matches(per[ok.to(device)], ref[ok], what="the other labels' losses", scale=10.0)
    assert torch.isfinite(grad[ok.to(device)]).all()
    mean = ops.binary_cross_entropy(pred, label.to(device), 1, MEAN, weights, num_logits)
    assert torch.isnan(mean)


# --------------------------------------------------------------------------- #
# gradcheck, gradgradcheck, opcheck
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("label_kind", ["int64", "soft-grad"])
@pytest.mark.parametrize("class_weight", WEIGHTS, ids=WEIGHT_IDS)
@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("reduction", REDUCTIONS, ids=["none", "mean", "sum"])
@pytest.mark.parametrize("num_logits", [1, 2], ids=["one-logit", "two-logits"])
def test_gradcheck(num_logits, reduction, bonafide_label, class_weight, label_kind, device):
    """First and second derivatives with respect to pred (and a soft label that
    requires grad), float64."""
    pred = make_pred(5, num_logits, F64, device).requires_grad_()
    if label_kind == "int64":
        label = make_labels(5).to(device)
        inputs = (pred,)
        fn = lambda p: ops.binary_cross_entropy(p, label, bonafide_label, reduction, class_weight,  # noqa: E731
                                                num_logits)
    else:
        label = (0.05 + 0.9 * torch.rand(5, dtype=F64)).to(device).requires_grad_()
        inputs = (pred, label)
        fn = lambda p, t: ops.binary_cross_entropy(p, t, bonafide_label, reduction, class_weight,  # noqa: E731
                                                   num_logits)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("class_weight", WEIGHTS[:2], ids=WEIGHT_IDS[:2])
@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("num_logits", [1, 2], ids=["one-logit", "two-logits"])
def test_soft_label_gradient_matches_torch(num_logits, bonafide_label, class_weight, device):
    """d loss / d label for a soft label: torch's, of CrossEntropyLoss with
    probabilities (1 - p, p) or of BCEWithLogitsLoss(weight, pos_weight)."""
    pred = make_pred(11, num_logits, torch.float32, device).requires_grad_()
    label = torch.rand(11).to(device).requires_grad_()
    for reduction in REDUCTIONS:
        out = ops.binary_cross_entropy(pred, label, bonafide_label, reduction, class_weight, num_logits)
        up = random_upstream(out)
        got = torch.autograd.grad(out, [pred, label], up)
        p64 = pred.detach().cpu().double().requires_grad_()
        l64 = label.detach().cpu().double().requires_grad_()
        ref = torch_loss(p64, l64, bonafide_label, reduction, class_weight, num_logits)
        want = torch.autograd.grad(ref, [p64, l64], up.cpu().double())
        assert got[1].dtype == label.dtype and bool(want[1].abs().max() > 0)
        scale = up.max().item() * 2 * (pred.detach().abs().max().item() + 1)
        for g, w, name in zip(got, want, ("pred", "label"), strict=True):
            assert_matches(g, w, what=f"{RED_NAMES[reduction]} d loss / d {name}", scale=scale)


@pytest.mark.parametrize("class_weight", WEIGHTS[:2], ids=WEIGHT_IDS[:2])
def test_second_derivatives_through_a_layer(class_weight):
    """create_graph=True through a linear layer producing the two logits (the
    composite backward): a gradient penalty's gradient equals the reference's."""
    x = torch.randn(9, 4, dtype=F64)
    W = torch.randn(4, 2, dtype=F64).requires_grad_()
    label = make_labels(9)
    results = []
    for fn in (lambda p: ops.binary_cross_entropy(p, label, 1, MEAN, class_weight, 2),
               lambda p: torch_loss(p, label, 1, MEAN, class_weight, 2)):
        (first,) = torch.autograd.grad(fn(x @ W), [W], create_graph=True)
        (second,) = torch.autograd.grad(first.pow(2).sum(), [W])
        results.append((first, second))
    for got, want, name in zip(results[0], results[1], ("first", "second"), strict=True):
        assert bool(want.abs().max() > 0)
        assert_matches(got, want, what=f"{name} derivative")


def _opcheck(op, args):
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result


OPCHECK_CASES = [
    pytest.param(2, (0.1, 0.9), "int64", MEAN, id="two-weighted-int-mean"),
    pytest.param(2, (0.1, 0.9), "soft", SUM, id="two-weighted-soft-sum"),
    pytest.param(2, None, "int64", NONE, id="two-none"),
    pytest.param(1, (1.7, 0.4), "int64", MEAN, id="one-weighted-mean"),
    pytest.param(1, (1.7, 0.4), "soft", NONE, id="one-weighted-soft-none"),
]


@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("num_logits,class_weight,label_kind,reduction", OPCHECK_CASES)
def test_opcheck_forward(num_logits, class_weight, label_kind, reduction, requires_grad, device):
    pred = make_pred(6, num_logits, torch.float32, device).requires_grad_(requires_grad)
    label = make_label(6, label_kind).to(device)
    _opcheck(torch.ops.spoofloss.binary_cross_entropy.default, (pred, label, 0, reduction, class_weight, num_logits))


@pytest.mark.parametrize("num_logits,class_weight,label_kind,reduction", OPCHECK_CASES)
def test_opcheck_backward(num_logits, class_weight, label_kind, reduction, device):
    """The backward op with the forward's total_weight, as csrc/autograd.cpp calls it."""
    pred = make_pred(6, num_logits, torch.float32, device)
    label = make_label(6, label_kind).to(device)
    loss, total_weight = torch.ops.spoofloss.binary_cross_entropy.default(
        pred, label, 1, reduction, class_weight, num_logits)
    args = (torch.rand_like(loss) + 0.5, pred, label, 1, reduction, class_weight, num_logits, total_weight)
    _opcheck(torch.ops.spoofloss._binary_cross_entropy_backward.default, args)


@pytest.mark.parametrize("num_logits,class_weight,label_kind,reduction", OPCHECK_CASES)
def test_opcheck_backward_composite(num_logits, class_weight, label_kind, reduction, device):
    pred = make_pred(6, num_logits, F64, device)
    label = make_label(6, label_kind).double().to(device) if label_kind == "soft" else make_label(6, label_kind)
    grad = torch.rand(6 if reduction == NONE else (), dtype=F64, device=device) + 0.5
    args = (grad, pred, label.to(device), 1, reduction, class_weight, num_logits)
    _opcheck(torch.ops.spoofloss._binary_cross_entropy_backward_composite.default, args)


# --------------------------------------------------------------------------- #
# the two scores, and AASIST
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bonafide_label", [0, 1])
@pytest.mark.parametrize("score", ["logit_difference", "bonafide_logit"])
def test_scores(score, bonafide_label, dtype, device):
    loss = spoofloss.BinaryLoss(num_logits=2, bonafide_label=bonafide_label, score=score, class_weight=(0.1, 0.9))
    pred = make_pred(30, 2, dtype, device).requires_grad_()
    got = loss.score(pred)
    bonafide, spoof = (pred[:, 1], pred[:, 0]) if bonafide_label == 1 else (pred[:, 0], pred[:, 1])
    want = bonafide - spoof if score == "logit_difference" else bonafide
    assert_identical(got, want, f"{score} score")
    up = random_upstream(got)
    (grad,) = torch.autograd.grad(got, [pred], up)
    expected = torch.zeros(30, 2, dtype=F64)
    expected[:, bonafide_label] = up.cpu().double()
    if score == "logit_difference":
        expected[:, 1 - bonafide_label] = -up.cpu().double()
    assert_matches(grad, expected, what="d score / d pred")
    assert_identical(got, R.BinaryLoss(num_logits=2, bonafide_label=bonafide_label, score=score).score(pred),
                     "the reference twin's score")
    if score == "logit_difference" and dtype == F64:
        # it ranks as the posterior of bona fide (softmax) does, and equals that posterior's log-odds
        posterior = torch.softmax(pred.detach(), dim=1)[:, bonafide_label]
        assert torch.equal(torch.argsort(got.detach(), stable=True), torch.argsort(posterior, stable=True))
        assert_matches(got, torch.logit(posterior), what="log posterior odds", scale=1.0)


@pytest.mark.parametrize("score", ["logit_difference", "bonafide_logit"])
def test_one_logit_score_is_pred(score, device):
    pred = make_pred(7, 1, torch.float32, device)
    assert spoofloss.BinaryLoss(score=score).score(pred) is pred


def test_aasist(device):
    """AASIST (clovaai/aasist main.py): labels 1 = bona fide (data_utils.py),
    CrossEntropyLoss(weight=[0.1, 0.9]) on two logits, scored by batch_out[:, 1]."""
    batch_out = make_pred(32, 2, torch.float32, device).requires_grad_()
    batch_y = make_labels(32).to(device)
    criterion = torch.nn.CrossEntropyLoss(weight=torch.FloatTensor([0.1, 0.9]).to(device))
    theirs = criterion(batch_out, batch_y)
    (their_grad,) = torch.autograd.grad(theirs, [batch_out])
    loss = spoofloss.BinaryLoss(num_logits=2, class_weight=(0.1, 0.9), score="bonafide_logit")
    ours = loss(batch_out, batch_y)
    (our_grad,) = torch.autograd.grad(ours, [batch_out])
    assert_matches(ours, theirs.double(), what="AASIST's loss", scale=10.0)
    assert_matches(our_grad, their_grad.double(), what="AASIST's gradient", scale=1 / 32)
    assert torch.equal(loss.score(batch_out), batch_out[:, 1])


def test_class_weight_is_read_at_every_call(device):
    loss = spoofloss.BinaryLoss(num_logits=2, class_weight=torch.tensor([0.1, 0.9]))
    assert loss.class_weight == pytest.approx((0.1, 0.9))
    pred, label = make_pred(12, 2, F64, device), make_labels(12).to(device)
    before = loss(pred, label)
    loss.class_weight = (0.5, 0.5)
    after = loss(pred, label)
    assert_matches(after, torch_loss(pred.cpu(), label, 1, MEAN, (0.5, 0.5), 2), what="after the change")
    assert not torch.equal(before, after)
    loss.class_weight = None
    assert_matches(loss(pred, label), torch_loss(pred.cpu(), label, 1, MEAN, None, 2), what="weights removed")


# --------------------------------------------------------------------------- #
# bad arguments
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("bad", [(1.0,), (1.0, 2.0, 3.0), (-0.1, 1.0), (1.0, float("nan")), (float("inf"), 1.0),
                                 "ab", 3],
                         ids=["one", "three", "negative", "nan", "inf", "string", "int"])
def test_bad_class_weight(bad, device):
    with pytest.raises(ValueError, match="class_weight"):
        spoofloss.BinaryLoss(class_weight=bad)
    with pytest.raises(ValueError, match="class_weight"):
        R.BinaryLoss(class_weight=bad)
    if isinstance(bad, tuple):  # the op itself
        pred, label = make_pred(4, 2, torch.float32, device), make_labels(4).to(device)
        with pytest.raises((ValueError, RuntimeError), match="class_weight"):
            torch.ops.spoofloss.binary_cross_entropy.default(pred, label, 1, MEAN, list(bad), 2)


def test_class_weight_as_tensor():
    # a tensor is read once, at assignment (any real dtype); one without values,
    # of the wrong size, of bools, NaN, complex or requiring grad gets an error naming the argument
    for weights in (torch.tensor([0.3, 1.7], dtype=torch.float64), torch.tensor([3, 17], dtype=torch.int32)):
        expected = tuple(weights.tolist())
        assert spoofloss.BinaryLoss(class_weight=weights).class_weight == expected
        assert R.BinaryLoss(class_weight=weights).class_weight == expected
    for bad in (torch.empty(2, device="meta"), torch.ones(2, 1), torch.ones(3), torch.ones(0),
                torch.tensor([True, False]), (True, 1.0), torch.ones(2, requires_grad=True),
                torch.tensor([1.0, float("nan")]), torch.ones(2, dtype=torch.complex64)):
        with pytest.raises(ValueError, match="class_weight"):
            spoofloss.BinaryLoss(class_weight=bad)
        with pytest.raises(ValueError, match="class_weight"):
            R.BinaryLoss(class_weight=bad)


def test_bad_num_logits_and_shapes(device):
    for bad in (0, 3, True, 2.0):
        with pytest.raises(ValueError, match="num_logits"):
            spoofloss.BinaryLoss(num_logits=bad)
    with pytest.raises(ValueError, match="score"):
        spoofloss.BinaryLoss(num_logits=2, score="posterior")
    label = make_labels(6).to(device)
    op = torch.ops.spoofloss.binary_cross_entropy.default
    with pytest.raises(ValueError, match="num_logits"):
        op(make_pred(6, 1, torch.float32, device), label, 1, MEAN, None, 3)
    loss = spoofloss.BinaryLoss(num_logits=2)
    for shape in [(6,), (6, 3), (3, 2, 2), (12, 1)]:
        pred = torch.randn(shape, device=device)
        with pytest.raises(ValueError, match=r"pred must have shape \[B, 2\]"):
            loss(pred, label)
        if len(shape) != 2 or shape[1] != 2:
            with pytest.raises(ValueError, match=r"pred must have shape \[B, 2\]"):
                loss.score(pred)
    with pytest.raises(ValueError, match="label has 5 elements"):
        loss(make_pred(6, 2, torch.float32, device), label[:5])
    # the fake kernel (meta tensors, torch.compile) refuses the same
    with pytest.raises(ValueError, match=r"pred must have shape \[B, 2\]"):
        op(torch.empty(6, 3, device="meta"), torch.empty(6, device="meta"), 1, MEAN, None, 2)


def test_backward_needs_total_weight_where_the_mean_divides_by_it(device):
    pred, label = make_pred(6, 2, torch.float32, device), make_labels(6).to(device)
    backward = torch.ops.spoofloss._binary_cross_entropy_backward.default
    grad = torch.ones((), device=device)
    with pytest.raises(ValueError, match="total_weight"):
        backward(grad, pred, label, 1, MEAN, [0.1, 0.9], 2, None)
    with pytest.raises(ValueError, match="total_weight"):
        backward(grad, pred, label, 1, MEAN, [0.1, 0.9], 2, torch.ones(2, device=device))
    with pytest.raises(RuntimeError, match="total_weight is on meta"):
        backward(grad, pred, label, 1, MEAN, [0.1, 0.9], 2, torch.ones((), device="meta"))
    # without class weights, or with soft labels, the mean divides by N: no total_weight needed
    assert torch.isfinite(backward(grad, pred, label, 1, MEAN, None, 2, None)).all()
    assert torch.isfinite(backward(grad, pred, label.float(), 1, MEAN, [0.1, 0.9], 2, None)).all()


# --------------------------------------------------------------------------- #
# the emulated CUDA device: the same bits under every scheduling seed
# --------------------------------------------------------------------------- #


@pytest.mark.skipif(not EMULATED_CUDA, reason="needs the emulated-CUDA build (SPOOFLOSS_CUDA_EMULATION=1)")
@pytest.mark.parametrize("num_logits", [1, 2], ids=["one-logit", "two-logits"])
def test_same_bits_for_every_seed(num_logits):
    """Several blocks of partial sums of the losses and of the targets' weights:
    a race would change bits with the block and thread order."""
    emulation = spoofloss._C.emulation
    seed = emulation.seed()
    pred = make_pred(2500, num_logits, torch.float32, "cpu").requires_grad_()
    label = make_labels(2500)
    runs = []
    try:
        for s in (1, 2, 3):
            emulation.set_seed(s)
            loss = ops.binary_cross_entropy(pred, label, 1, MEAN, (0.1, 0.9), num_logits)
            (grad,) = torch.autograd.grad(loss, [pred])
            runs.append((loss, grad))
    finally:
        emulation.set_seed(seed)
    for loss, grad in runs[1:]:
        assert_identical(loss, runs[0][0], "loss")
        assert_identical(grad, runs[0][1], "d loss / d pred")
