"""The backward ops validate every argument as the forward ops do (issue 10,
item 6): torch.ops.spoofloss._cosine_margin_loss_backward with D = 0 used to
kill the process (a division by zero in the chunk computation) and B = 0 or
T = 0 ran on; now each bad size, shape, dtype and argument gets a ValueError
naming the argument and what was seen. Called through torch.ops directly,
as a user of the op (or a bad compiled graph) would."""

from __future__ import annotations

import pytest
import torch

from conftest import make_labels, runs_cuda_kernels
from hardening_helpers import (
    AM, COSINE, MEAN, NONE, OC, binary_backward_args, call_op, cosine_backward_args, raises_naming, score_op,
)

BACKWARD = "_cosine_margin_loss_backward"


def spoil(args, **changes):
    out = dict(args)
    out.update(changes)
    return out


@pytest.mark.parametrize("epilogue", [AM, OC, COSINE], ids=["am", "oc", "score"])
def test_valid_arguments_run(epilogue, device):
    """The argument sets the other tests spoil are valid as they stand."""
    grad_emb, grad_centers = call_op(BACKWARD, cosine_backward_args(epilogue, device=device))
    assert torch.isfinite(grad_emb).all() and torch.isfinite(grad_centers).all()


@pytest.mark.parametrize("sizes,pooled_shape,shown", [
    ([4, 5, 0], (4, 0), r"D = 0"),
    ([0, 5, 6], (0, 6), r"B = 0"),
    ([4, 0, 6], (4, 6), r"T = 0"),
    ([0, 6], (0, 6), r"B = 0"),
    ([4, 0], (4, 0), r"D = 0"),
    ([4, -5, 6], (4, 6), r"T = -5"),
], ids=["D=0", "B=0", "T=0", "rank2-B=0", "rank2-D=0", "T<0"])
@pytest.mark.parametrize("epilogue", [AM, OC, COSINE], ids=["am", "oc", "score"])
def test_empty_sizes(epilogue, sizes, pooled_shape, shown, device):
    args = cosine_backward_args(epilogue, device=device, reduction=MEAN)
    batch, dim = pooled_shape
    args = spoil(args, emb_sizes=sizes, pooled=torch.randn(batch, dim, device=device),
                 centers=torch.randn(args["centers"].shape[0], dim, device=device),
                 lengths=None)
    if args["label"] is not None:
        args["label"] = make_labels(max(batch, 2))[:batch].to(device)
    if args["reduction"] == NONE:
        args["grad_loss"] = torch.rand(batch, device=device)
    with raises_naming("emb_sizes", shown, error=ValueError):
        call_op(BACKWARD, args)


@pytest.mark.parametrize("sizes", [[24], [4, 5, 6, 1], []], ids=["rank1", "rank4", "rank0"])
def test_emb_sizes_rank(sizes, device):
    with raises_naming("emb_sizes", error=ValueError):
        call_op(BACKWARD, spoil(cosine_backward_args(device=device), emb_sizes=sizes))


@pytest.mark.parametrize("case", ["none-wrong-batch", "none-scalar", "mean-vector", "int64", "bool", "complex"])
def test_grad_loss(case, device):
    reduction = NONE if case.startswith("none") else MEAN
    args = cosine_backward_args(AM, batch=4, reduction=reduction, device=device)
    bad, shown = {
        "none-wrong-batch": (torch.rand(5), r"\[5\]"),
        "none-scalar": (torch.rand(()), r"\[\]"),
        "mean-vector": (torch.rand(4), r"\[4\]"),
        "int64": (torch.ones((), dtype=torch.int64), "Long"),
        "bool": (torch.ones((), dtype=torch.bool), "Bool"),
        "complex": (torch.ones((), dtype=torch.complex64), "Complex"),
    }[case]
    with raises_naming("grad_loss", shown, error=ValueError):
        call_op(BACKWARD, spoil(args, grad_loss=bad.to(device)))


@pytest.mark.parametrize("case", ["wide", "rank3", "short-batch", "dtype"])
def test_pooled(case, device):
    args = cosine_backward_args(AM, batch=4, dim=6, device=device)
    bad = {
        "wide": torch.randn(4, 7),
        "rank3": torch.randn(4, 1, 6),
        "short-batch": torch.randn(3, 6),
        "dtype": torch.randn(4, 6, dtype=torch.float64),  # emb_dtype float32 accumulates in float32
    }[case].to(device)
    with raises_naming("pooled", error=ValueError):
        call_op(BACKWARD, spoil(args, pooled=bad))


@pytest.mark.parametrize("case", ["count", "dim", "dtype", "rank"])
@pytest.mark.parametrize("epilogue", [AM, OC], ids=["am", "oc"])
def test_centers(epilogue, case, device):
    args = cosine_backward_args(epilogue, dim=6, device=device)
    count = args["centers"].shape[0]
    bad = {
        "count": torch.randn(3 - count, 6),
        "dim": torch.randn(count, 5),
        "dtype": torch.ones(count, 6, dtype=torch.int32),
        "rank": torch.randn(6),
    }[case].to(device)
    with raises_naming("center", error=ValueError):
        call_op(BACKWARD, spoil(args, centers=bad))


@pytest.mark.parametrize("case", ["missing", "given-for-score", "batch", "shape", "dtype"])
def test_label(case, device):
    epilogue = COSINE if case == "given-for-score" else OC
    args = cosine_backward_args(epilogue, batch=4, device=device)
    bad = {
        "missing": None,
        "given-for-score": make_labels(4),
        "batch": make_labels(5),
        "shape": make_labels(8).reshape(4, 2),
        "dtype": torch.zeros(4, dtype=torch.complex64),
    }[case]
    with raises_naming("label", error=ValueError):
        call_op(BACKWARD, spoil(args, label=None if bad is None else bad.to(device)))


@pytest.mark.parametrize("case", ["batch", "float", "rank2"])
def test_lengths(case, device):
    args = cosine_backward_args(AM, batch=4, frames=5, device=device)
    bad = {
        "batch": torch.full((3,), 5),
        "float": torch.full((4,), 5.0),
        "rank2": torch.full((4, 1), 5),
    }[case].to(device)
    with raises_naming("lengths", error=ValueError):
        call_op(BACKWARD, spoil(args, lengths=bad))


@pytest.mark.parametrize("value", [-5, 0, 6])
def test_length_values(value, device):
    """A length outside [1, T]: the CPU raises naming it (CUDA: NaN, see test_errors)."""
    if runs_cuda_kernels(device):
        pytest.skip("the CUDA kernels turn a bad length into NaN (no host synchronisation); test_errors covers it")
    args = cosine_backward_args(AM, batch=4, frames=5, device=device)
    lengths = args["lengths"].clone()
    lengths[2] = value
    with raises_naming("lengths", value, error=ValueError):
        call_op(BACKWARD, spoil(args, lengths=lengths))


@pytest.mark.parametrize("name,value", [
    ("loss", 99), ("loss", -2), ("reduction", 3), ("bonafide_label", 2), ("score_rule", 4), ("score_center", 2),
])
def test_enums(name, value, device):
    with raises_naming(name, value, error=ValueError):
        call_op(BACKWARD, spoil(cosine_backward_args(AM, device=device), **{name: value}))


def test_score_center_index(device):
    args = cosine_backward_args(COSINE, device=device)
    with raises_naming("score_center", 2, error=ValueError):
        call_op(BACKWARD, spoil(args, score_center=2))


def test_utterance_centre_score_needs_center_index(device):
    args = cosine_backward_args(COSINE, device=device)
    with raises_naming("center_index", error=ValueError):
        call_op(BACKWARD, spoil(args, score_rule=3))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_emb_dtype(dtype, device):
    with raises_naming("emb_dtype", error=ValueError):
        call_op(BACKWARD, spoil(cosine_backward_args(AM, device=device), emb_dtype=dtype))


# --------------------------------------------------------------------------- #
# _binary_cross_entropy_backward
# --------------------------------------------------------------------------- #

BINARY_BACKWARD = "_binary_cross_entropy_backward"


def test_binary_valid_arguments_run(device):
    assert torch.isfinite(call_op(BINARY_BACKWARD, binary_backward_args(device=device))).all()


@pytest.mark.parametrize("case", ["none-wrong-numel", "none-scalar", "mean-vector", "int64", "complex"])
def test_binary_grad_loss(case, device):
    reduction = NONE if case.startswith("none") else MEAN
    args = binary_backward_args(numel=6, reduction=reduction, device=device)
    bad = {
        "none-wrong-numel": torch.rand(7),
        "none-scalar": torch.rand(()),
        "mean-vector": torch.rand(6),
        "int64": torch.ones((), dtype=torch.int64),
        "complex": torch.ones((), dtype=torch.complex64),
    }[case]
    with raises_naming("grad_loss", error=ValueError):
        call_op(BINARY_BACKWARD, spoil(args, grad_loss=bad.to(device)))


@pytest.mark.parametrize("case", ["empty", "numel", "pred-dtype", "label-dtype", "bonafide_label", "reduction"])
def test_binary_arguments(case, device):
    args = binary_backward_args(numel=6, device=device)
    name, changes = {
        "empty": ("pred", dict(pred=torch.randn(0), label=torch.zeros(0), grad_loss=torch.rand(()))),
        "numel": ("label", dict(label=torch.zeros(7))),
        "pred-dtype": ("pred", dict(pred=torch.ones(6, dtype=torch.int64))),
        "label-dtype": ("label", dict(label=torch.zeros(6, dtype=torch.complex64))),
        "bonafide_label": ("bonafide_label", dict(bonafide_label=2)),
        "reduction": ("reduction", dict(reduction=5)),
    }[case]
    changes = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in changes.items()}
    with raises_naming(name, error=ValueError):
        call_op(BINARY_BACKWARD, spoil(args, **changes))


@pytest.mark.parametrize("sizes,pooled_shape", [([4, 5, 0], (4, 0)), ([0, 5, 6], (0, 6)), ([4, 0, 6], (4, 6))],
                         ids=["D=0", "B=0", "T=0"])
def test_empty_sizes_on_meta(sizes, pooled_shape):
    """The fake kernel (every tensor on meta) refuses the same sizes."""
    args = cosine_backward_args(OC, reduction=MEAN)
    batch, dim = pooled_shape
    args = spoil(args, emb_sizes=sizes, pooled=torch.empty(batch, dim, device="meta"),
                 centers=torch.empty(1, dim, device="meta"), lengths=None,
                 label=torch.empty(batch, dtype=torch.long, device="meta"), grad_loss=torch.empty((), device="meta"))
    with raises_naming("emb_sizes", error=ValueError):
        call_op(BACKWARD, args)
    emb = torch.empty(*sizes, device="meta")
    with raises_naming("emb", error=ValueError):
        score_op(emb, torch.empty(2, dim, device="meta"), None, 1)
