"""Input checks shared by the metric functions and the streaming accumulator.

Every check that reads values synchronises with the device; the good path does it once
per call (one ``tolist`` of a few reductions), the error path locates the first bad value.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch

from ..base import check_bonafide_label

TensorLike = Union[torch.Tensor, Sequence[float]]

# Codes of the ASV (Track 2) labels, as the a-DCF code of the ASVspoof 5 package numbers
# them (a_dcf.py, compute_a_det_curve): 1 target, 0 non-target, 2 spoof.
ASV_NONTARGET = 0
ASV_TARGET = 1
ASV_SPOOF = 2
_ASV_NAMES = {ASV_TARGET: "target", ASV_NONTARGET: "non-target", ASV_SPOOF: "spoof"}


def as_tensor(x: TensorLike, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except Exception as exc:  # pragma: no cover - message only
        raise ValueError(f"{name} must be a tensor or array-like, got {type(x).__name__}") from exc


NARROW_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def float_scores(scores: torch.Tensor, name: str) -> torch.Tensor:
    """Flatten; keep float32/float64, widen float16/bfloat16 to float32 (exact), convert
    integer and bool scores to float64."""
    if scores.is_complex():
        raise ValueError(f"{name} must be real, got dtype {scores.dtype}")
    scores = scores.reshape(-1)
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.to(torch.float32)
    elif scores.dtype not in (torch.float32, torch.float64):
        scores = scores.to(torch.float64)
    return scores


def first_bad(values: torch.Tensor, bad: torch.Tensor) -> Tuple[int, float]:
    """Index and value of the first flagged element (error path only: syncs)."""
    idx = int(torch.nonzero(bad.reshape(-1))[0, 0].item())
    return idx, values.reshape(-1)[idx].item()


def raise_nonfinite(scores: torch.Tensor, name: str):
    nonfinite = ~torch.isfinite(scores)
    idx, val = first_bad(scores, nonfinite)
    raise ValueError(
        f"{name} must be finite: found {int(nonfinite.sum().item())} NaN/Inf value(s) among "
        f"{scores.numel()}, first {name}[{idx}] = {val}"
    )


def same_size(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.numel() != b.numel():
        raise ValueError(
            f"{name_a} and {name_b} must have the same number of elements, got {name_a} of shape "
            f"{tuple(a.shape)} ({a.numel()}) and {name_b} of shape {tuple(b.shape)} ({b.numel()})"
        )
    if a.device != b.device:
        raise ValueError(
            f"{name_a} and {name_b} must be on the same device, got {name_a} on {a.device} "
            f"and {name_b} on {b.device}"
        )


def prepare(
    scores: TensorLike, labels: TensorLike, bonafide_label: int
) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
    """Validate CM trials; return (flat scores, flat bool is_bonafide, n_bonafide, n_spoof).

    One host synchronisation on the good path.
    """
    bonafide_label = check_bonafide_label(bonafide_label)
    scores = as_tensor(scores, "scores")
    labels = as_tensor(labels, "labels")
    same_size(scores, labels, "scores", "labels")
    if scores.numel() == 0:
        raise ValueError("scores is empty (0 trials); both bona fide and spoof trials are needed")
    if labels.is_complex():
        raise ValueError(f"labels must be real, got dtype {labels.dtype}")
    scores = float_scores(scores, "scores")
    labels = labels.reshape(-1)

    if labels.dtype == torch.bool:
        is_bf = labels if bonafide_label == 1 else ~labels
        labels_ok = torch.ones((), dtype=torch.bool, device=labels.device)
    elif labels.is_floating_point():
        is_bf = labels == bonafide_label
        labels_ok = (is_bf | (labels == 1 - bonafide_label)).all()
    else:  # integers: 0/1 iff min >= 0 and max <= 1 (one pass)
        lo, hi = torch.aminmax(labels)
        labels_ok = (lo >= 0) & (hi <= 1)
        is_bf = labels == bonafide_label
    summary = torch.stack(
        [torch.isfinite(scores).all().to(torch.int64), labels_ok.to(torch.int64), torch.count_nonzero(is_bf)]
    ).tolist()  # the one sync
    scores_ok, labels_ok, n_bf = (int(c) for c in summary)
    n = scores.numel()
    if not scores_ok:
        raise_nonfinite(scores, "scores")
    if not labels_ok:
        bad = (labels != 0) & (labels != 1)
        idx, val = first_bad(labels, bad)
        raise ValueError(
            f"labels must be 0 or 1: found {int(bad.sum().item())} other value(s) among {n}, "
            f"first labels[{idx}] = {val}"
        )
    if n_bf == 0:
        raise ValueError(
            f"labels contain no bona fide trial (no label == bonafide_label={bonafide_label} "
            f"among {n} trials); both classes are needed"
        )
    if n_bf == n:
        raise ValueError(
            f"labels contain no spoof trial (all {n} labels == bonafide_label={bonafide_label}); "
            "both classes are needed"
        )
    return scores, is_bf, n_bf, n - n_bf


def check_asv_labels(labels: torch.Tensor, name: str = "asv_labels") -> torch.Tensor:
    """int64 codes of ASV labels (1 target, 0 non-target, 2 spoof); raises on any other
    value.  One sync."""
    if labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"{name} must hold the codes 1 (target), 0 (non-target), 2 (spoof), got dtype {labels.dtype}"
        )
    labels = labels.reshape(-1)
    bad = (labels != ASV_TARGET) & (labels != ASV_NONTARGET) & (labels != ASV_SPOOF)
    if bool(bad.any().item()):
        idx, val = first_bad(labels, bad)
        raise ValueError(
            f"{name} must be 1 (target), 0 (non-target) or 2 (spoof): found "
            f"{int(bad.sum().item())} other value(s) among {labels.numel()}, first {name}[{idx}] = {val}"
        )
    return labels.to(torch.int64)


def prepare_scores(scores: TensorLike, name: str) -> torch.Tensor:
    """Flat finite float32/float64 scores (one sync)."""
    t = float_scores(as_tensor(scores, name), name)
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(t).all().item()):
        raise_nonfinite(t, name)
    return t


def asv_class_counts(codes: torch.Tensor, name: str = "asv_labels") -> Tuple[int, int, int]:
    """(n_target, n_nontarget, n_spoof); each must be > 0 (the package divides by them)."""
    counts = torch.bincount(codes, minlength=3).tolist()
    n_tar, n_non, n_spf = counts[ASV_TARGET], counts[ASV_NONTARGET], counts[ASV_SPOOF]
    for n, code in ((n_tar, ASV_TARGET), (n_non, ASV_NONTARGET), (n_spf, ASV_SPOOF)):
        if n == 0:
            raise ValueError(
                f"{name} contain no {_ASV_NAMES[code]} trial (code {code}) among {codes.numel()}; "
                "target, non-target and spoof trials are all needed"
            )
    return n_tar, n_non, n_spf
