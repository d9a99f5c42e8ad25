"""Detection metrics for spoofing countermeasures, computed where the scores live.

Everything here depends on torch and the standard library only (no compiled code), and
runs on any device torch supports.  The definitions follow the ASVspoof evaluation
packages (2019/2021 ``eval_metrics.py``, ASVspoof 5 ``calculate_modules.py``):

Label convention
    Same as the losses: by default ``1`` = bona fide, ``0`` = spoof, and a *higher* score
    means *more bona fide*.  Pass ``bonafide_label=0`` for data that use 0 = bona fide.
    Labels may have any shape with as many elements as ``scores`` (``[B]`` or ``[B, 1]``
    typically) and any integer, bool or floating dtype holding 0/1.

DET curve (shared by EER, minDCF and min t-DCF)
    The scores of the bona fide trials are placed before those of the spoof trials and the
    whole list is sorted with a *stable* sort (the package's
    ``np.argsort(kind="mergesort")``).  After the first ``k`` sorted trials
    (``k = 0 .. N``)::

        miss(k) = (#bona fide among them) / N_bonafide       # "frr", Pmiss_cm
        fa(k)   = (#spoof not among them) / N_spoof          # "far", Pfa_cm
        thr(k)  = k-th smallest score   (thr(0) = smallest score - 0.001)

    so for a threshold ``t`` between distinct scores, ``miss`` is the share of bona fide
    scores ``<= t`` and ``fa`` the share of spoof scores ``> t``.  Inside a run of equal
    scores the stable sort puts the bona fide trials first: the curve passes through the
    point where all tied bona fide trials are already rejected but the tied spoof trials
    are still accepted (the pessimistic corner).  As a consequence, constant scores give
    EER = 1.0, exactly as the package reports.  The result does not depend on the order of
    the trials in the input.

Cost
    O(N log N) time, O(N) memory: one sort and cumulative counts, with torch's own sort and
    scan.  float32 scores (float16/bfloat16 are widened exactly) are sorted once as int64
    keys that encode (score, class), which is the package's order; float64 scores take a
    stable sort of the bona fide scores followed by the spoof scores.

Return values
    The functions return Python ``float`` values (and ``dict`` of floats for
    :func:`asv_error_rates`).  They synchronise with the device a small fixed number of
    times (input validation: NaN/Inf, label values, class counts; reading the result),
    never per trial.  All counts and rates are computed in float64; scores of lower
    precision are compared and thresholded after an exact conversion to float64.

Streaming
    :class:`DetectionMetrics` accumulates ``(scores, labels)`` batches on their device
    without any host synchronisation in :meth:`DetectionMetrics.update` and all-gathers
    across ranks under ``torch.distributed`` in :meth:`DetectionMetrics.compute`.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "det_curve",
    "eer",
    "min_dcf",
    "act_dcf",
    "cllr",
    "asv_error_rates",
    "min_tdcf",
    "tdcf_cost_model",
    "DetectionMetrics",
]

TensorLike = Union[torch.Tensor, Sequence[float]]

# Offset the package puts below the smallest score for the first DET point.
_FIRST_THRESHOLD_OFFSET = 0.001


# ---------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------
def _as_tensor(x: TensorLike, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except Exception as exc:  # pragma: no cover - message only
        raise ValueError(f"{name} must be a tensor or array-like, got {type(x).__name__}") from exc


def _check_bonafide_label(bonafide_label) -> int:
    if isinstance(bonafide_label, torch.Tensor) or bonafide_label not in (0, 1):
        raise ValueError(f"bonafide_label must be 0 or 1, got {bonafide_label!r}")
    return int(bonafide_label)


def _float_scores(scores: torch.Tensor, name: str) -> torch.Tensor:
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


def _first_bad(values: torch.Tensor, bad: torch.Tensor) -> Tuple[int, float]:
    """Index and value of the first flagged element (error path only: syncs)."""
    idx = int(torch.nonzero(bad.reshape(-1))[0, 0].item())
    return idx, values.reshape(-1)[idx].item()


def _raise_nonfinite(scores: torch.Tensor, nonfinite: torch.Tensor, count: int, name: str):
    idx, val = _first_bad(scores, nonfinite)
    raise ValueError(
        f"{name} must be finite: found {count} NaN/Inf value(s) among {scores.numel()}, "
        f"first {name}[{idx}] = {val}"
    )


def _prepare(
    scores: TensorLike, labels: TensorLike, bonafide_label: int
) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
    """Validate and return (flat scores, flat bool is_bonafide, n_bonafide, n_spoof).

    One host synchronisation on the good path.
    """
    bonafide_label = _check_bonafide_label(bonafide_label)
    scores = _as_tensor(scores, "scores")
    labels = _as_tensor(labels, "labels")
    if scores.numel() != labels.numel():
        raise ValueError(
            "scores and labels must have the same number of elements, got scores of shape "
            f"{tuple(scores.shape)} ({scores.numel()}) and labels of shape "
            f"{tuple(labels.shape)} ({labels.numel()})"
        )
    if scores.device != labels.device:
        raise ValueError(
            f"scores and labels must be on the same device, got scores on {scores.device} "
            f"and labels on {labels.device}"
        )
    if scores.numel() == 0:
        raise ValueError("scores is empty (0 trials); both bona fide and spoof trials are needed")
    if labels.is_complex():
        raise ValueError(f"labels must be real, got dtype {labels.dtype}")
    scores = _float_scores(scores, "scores")
    labels = labels.reshape(-1)

    # good path: a few reductions, one sync; the error path counts and locates
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
        nonfinite = ~torch.isfinite(scores)
        _raise_nonfinite(scores, nonfinite, int(nonfinite.sum().item()), "scores")
    if not labels_ok:
        bad = (labels != 0) & (labels != 1)
        idx, val = _first_bad(labels, bad)
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


# ---------------------------------------------------------------------------------------
# core: one sort + cumulative counts
# ---------------------------------------------------------------------------------------
_NARROW_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _float32_sort_key(scores32: torch.Tensor, is_bf: torch.Tensor) -> torch.Tensor:
    """int64 keys whose ascending order is (score ascending, bona fide before spoof):
    2 * (order-preserving signed image of the float32 bits) + is_spoof."""
    bits = (scores32 + 0.0).view(torch.int32)  # + 0.0: -0.0 -> +0.0
    # negative floats: flip the magnitude bits, so that the signed int32 order is the
    # float order; then widen, and append the class bit (in place: few passes over N).
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    keys = bits.to(torch.int64)
    keys.mul_(2).add_(~is_bf)
    return keys


def _float32_from_key(keys: torch.Tensor) -> torch.Tensor:
    bits = (keys >> 1).to(torch.int32)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # the flip is its own inverse
    return bits.view(torch.float32).to(torch.float64)


class _SortedScores:
    """The scores in the package's order, read back lazily as float64 (thresholds)."""

    def __init__(self, values: Optional[torch.Tensor] = None, keys: Optional[torch.Tensor] = None):
        self._values, self._keys = values, keys

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        if self._values is not None:
            return self._values[idx].to(torch.float64)
        return _float32_from_key(self._keys[idx])

    def full(self) -> torch.Tensor:
        if self._values is not None:
            return self._values.to(torch.float64)
        return _float32_from_key(self._keys)


class _Thresholds:
    """thr(0) = smallest score - 0.001, thr(k) = k-th smallest score (k = 1..N)."""

    def __init__(self, sorted_scores: _SortedScores):
        self._sorted = sorted_scores

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        value = self._sorted[torch.clamp_min(idx - 1, 0)]
        return torch.where(idx == 0, value - _FIRST_THRESHOLD_OFFSET, value)

    def full(self) -> torch.Tensor:
        values = self._sorted.full()
        return torch.cat([values[:1] - _FIRST_THRESHOLD_OFFSET, values])


def _det_curve_prepared(
    scores: torch.Tensor, is_bf: torch.Tensor, n_bf: int, n_sp: int
) -> Tuple[torch.Tensor, torch.Tensor, _Thresholds]:
    """DET curve: miss and fa (float64, length N + 1, on scores.device) and the thresholds.

    The package's order is (score ascending, bona fide before spoof among equal scores);
    trials that agree in both are interchangeable, so any sort that respects that order
    reproduces its counts.  float32 scores (and narrower, converted exactly): one sort of
    int64 keys that encode both.  float64 scores: bona fide then spoof, stable sort.
    """
    n = n_bf + n_sp
    device = scores.device
    if scores.dtype == torch.float32:
        keys, _ = torch.sort(_float32_sort_key(scores, is_bf))
        is_bf_sorted = (keys & 1) == 0
        sorted_scores = _SortedScores(keys=keys)
    else:
        ordered = torch.cat([scores[is_bf], scores[~is_bf]])
        values, order = torch.sort(ordered, stable=True)
        is_bf_sorted = order < n_bf
        sorted_scores = _SortedScores(values=values)
    miss = torch.empty(n + 1, dtype=torch.float64, device=device)
    fa = torch.empty(n + 1, dtype=torch.float64, device=device)
    miss[0] = 0.0
    fa[0] = 1.0
    # bona fide trials among the first k sorted (k = 1..N): exact integers in float64
    tar_sums = torch.cumsum(is_bf_sorted, 0, dtype=torch.float64)
    # spoof trials *not* among the first k: n_sp - (k - tar_sums), as the package
    non_sums = torch.arange(1, n + 1, device=device, dtype=torch.float64)
    torch.sub(non_sums, tar_sums, out=non_sums)
    torch.sub(n_sp, non_sums, out=non_sums)
    # one IEEE division each, as numpy does
    torch.div(tar_sums, float(n_bf), out=miss[1:])
    torch.div(non_sums, float(n_sp), out=fa[1:])
    return miss, fa, _Thresholds(sorted_scores)


def _eer_from_curve(miss, fa, thr) -> Tuple[torch.Tensor, torch.Tensor]:
    idx = torch.argmin(torch.abs(miss - fa))  # first minimum, as np.argmin
    return (miss[idx] + fa[idx]) / 2, thr[idx]


def _dcf_weights(p_spoof: float, c_miss: float, c_fa: float) -> Tuple[float, float, float]:
    if not (0.0 < p_spoof < 1.0):
        raise ValueError(f"p_spoof must be in (0, 1), got {p_spoof!r}")
    if not (c_miss > 0 and c_fa > 0):
        raise ValueError(f"c_miss and c_fa must be > 0, got c_miss={c_miss!r}, c_fa={c_fa!r}")
    p_target = 1 - p_spoof
    c_def = min(c_miss * p_target, c_fa * (1 - p_target))
    return p_target, c_def, 1 - p_target


def _min_dcf_from_curve(miss, fa, thr, p_spoof, c_miss, c_fa):
    p_target, c_def, p_non = _dcf_weights(p_spoof, c_miss, c_fa)
    # same association as the package: (Cmiss * frr) * p_target + (Cfa * far) * (1 - p_target)
    cost = (miss * c_miss).mul_(p_target)
    cost.add_((fa * c_fa).mul_(p_non))
    idx = torch.argmin(cost)  # first strict minimum, as the package's loop
    return cost[idx] / c_def, thr[idx]


def _act_dcf_prepared(scores, is_bf, n_bf, n_sp, p_spoof, c_miss, c_fa):
    _dcf_weights(p_spoof, c_miss, c_fa)
    beta = c_miss * (1 - p_spoof) / (c_fa * p_spoof)
    threshold = -math.log(beta)
    below = scores.to(torch.float64) < threshold  # float64: the exact comparison
    n_below = torch.count_nonzero(below)
    n_miss = torch.count_nonzero(below.logical_and_(is_bf))  # bona fide below: missed
    n_fa = n_sp - (n_below - n_miss)  # spoof at or above: accepted
    rate_miss = n_miss.to(torch.float64) / n_bf
    rate_fa = n_fa.to(torch.float64) / n_sp
    value = c_miss * (1 - p_spoof) * rate_miss + c_fa * p_spoof * rate_fa
    value = value / min(c_fa * p_spoof, c_miss * (1 - p_spoof))
    return value, threshold


def _cllr_prepared(scores, is_bf, n_bf, n_sp):
    # w = -llr for bona fide, +llr for spoof; -log sigmoid(-w) = softplus(w)
    #   = max(w, 0) + log1p(exp(-|w|)): no overflow, and no linear cut-off as in
    # torch.nn.functional.softplus (threshold=20), which would cost ~1e-9 there.
    s64 = scores.to(torch.float64)
    w = torch.where(is_bf, -s64, s64)
    tail = torch.abs(w)
    tail.neg_().exp_().log1p_()
    nls = w.clamp_min_(0).add_(tail)
    sum_bf = torch.where(is_bf, nls, 0.0).sum()
    sum_sp = torch.where(is_bf, 0.0, nls).sum()
    return 0.5 * (sum_bf / n_bf + sum_sp / n_sp) / math.log(2)


# ---------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------
def det_curve(
    scores: TensorLike, labels: TensorLike, bonafide_label: int = 1
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The package's DET curve: ``(miss, fa, thresholds)``, float64 tensors of length N + 1
    on the scores' device (see the module docstring for the exact definition)."""
    s, is_bf, n_bf, n_sp = _prepare(scores, labels, bonafide_label)
    miss, fa, thr = _det_curve_prepared(s, is_bf, n_bf, n_sp)
    return miss, fa, thr.full()


def eer(scores: TensorLike, labels: TensorLike, bonafide_label: int = 1) -> Tuple[float, float]:
    """Equal error rate and its threshold, as ASVspoof's ``compute_eer``.

    Over the DET curve, the first point minimising ``|miss - fa|``; the EER is the mean of
    the two rates there and the threshold the score at that point.

    Returns:
        ``(eer, threshold)`` as Python floats; ``eer`` is a fraction in [0, 1].
    """
    s, is_bf, n_bf, n_sp = _prepare(scores, labels, bonafide_label)
    value, thr = _eer_from_curve(*_det_curve_prepared(s, is_bf, n_bf, n_sp))
    value, thr = torch.stack([value, thr]).tolist()
    return value, thr


def min_dcf(
    scores: TensorLike,
    labels: TensorLike,
    p_spoof: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
    bonafide_label: int = 1,
) -> Tuple[float, float]:
    """Normalised minimum DCF of ASVspoof 5 track 1.

    ``min_k [c_miss * miss(k) * (1 - p_spoof) + c_fa * fa(k) * p_spoof]`` over the DET curve,
    divided by ``min(c_miss * (1 - p_spoof), c_fa * p_spoof)`` (the cost of the best
    fixed decision).  Defaults are the challenge's: p_spoof 0.05, c_miss 1, c_fa 10.

    Returns:
        ``(min_dcf, threshold)`` as Python floats (threshold of the first minimum).
    """
    s, is_bf, n_bf, n_sp = _prepare(scores, labels, bonafide_label)
    value, thr = _min_dcf_from_curve(*_det_curve_prepared(s, is_bf, n_bf, n_sp), p_spoof, c_miss, c_fa)
    value, thr = torch.stack([value, thr]).tolist()
    return value, thr


def act_dcf(
    scores: TensorLike,
    labels: TensorLike,
    p_spoof: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
    bonafide_label: int = 1,
) -> Tuple[float, float]:
    """Normalised actual DCF of ASVspoof 5 for scores that are log-likelihood ratios
    (bona fide vs spoof, natural log).

    The Bayes threshold is ``t = -log(beta)``, ``beta = c_miss (1 - p_spoof) / (c_fa p_spoof)``;
    a bona fide trial is missed when ``score < t`` and a spoof trial accepted when
    ``score >= t``.  Normalised as :func:`min_dcf`.

    Returns:
        ``(act_dcf, threshold)`` as Python floats.
    """
    s, is_bf, n_bf, n_sp = _prepare(scores, labels, bonafide_label)
    value, thr = _act_dcf_prepared(s, is_bf, n_bf, n_sp, p_spoof, c_miss, c_fa)
    return float(value.item()), thr


def cllr(scores: TensorLike, labels: TensorLike, bonafide_label: int = 1) -> float:
    """Log-likelihood-ratio cost in bits, for natural-log LLR scores:
    ``0.5 * (mean_bf log(1 + e^-s) + mean_spoof log(1 + e^s)) / log 2``.

    Returns:
        Python float (1.0 for an uninformative system that always outputs 0).
    """
    s, is_bf, n_bf, n_sp = _prepare(scores, labels, bonafide_label)
    return float(_cllr_prepared(s, is_bf, n_bf, n_sp).item())


# ---------------------------------------------------------------------------------------
# tandem DCF
# ---------------------------------------------------------------------------------------
def tdcf_cost_model(version: str = "2021", p_spoof: float = 0.05) -> Dict[str, float]:
    """Default t-DCF cost model of the challenge, with the package's key names.

    ``"2019"`` (legacy t-DCF): Pspoof, Ptar, Pnon, Cmiss_asv, Cfa_asv, Cmiss_cm, Cfa_cm.
    ``"2021"`` (revised t-DCF): Pspoof, Ptar, Pnon, Cmiss, Cfa, Cfa_spoof.
    Ptar = (1 - Pspoof) * 0.99, Pnon = (1 - Pspoof) * 0.01, miss costs 1, false alarms 10.
    """
    v = _tdcf_version(version)
    model = {"Pspoof": p_spoof, "Ptar": (1 - p_spoof) * 0.99, "Pnon": (1 - p_spoof) * 0.01}
    if v == "2019":
        model.update(Cmiss_asv=1, Cfa_asv=10, Cmiss_cm=1, Cfa_cm=10)
    else:
        model.update(Cmiss=1, Cfa=10, Cfa_spoof=10)
    return model


def _tdcf_version(version) -> str:
    v = str(version).lower()
    if v in ("2019", "legacy"):
        return "2019"
    if v in ("2021", "revised"):
        return "2021"
    raise ValueError(f"version must be '2019' (legacy) or '2021' (revised), got {version!r}")


def _flat_finite(x: TensorLike, name: str) -> torch.Tensor:
    t = _float_scores(_as_tensor(x, name), name)
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    nonfinite = ~torch.isfinite(t)
    count = int(nonfinite.sum().item())
    if count:
        _raise_nonfinite(t, nonfinite, count, name)
    return t


def asv_error_rates(
    target_scores: TensorLike,
    nontarget_scores: TensorLike,
    spoof_scores: TensorLike,
    threshold: Optional[float] = None,
) -> Dict[str, float]:
    """ASV error rates at its operating point, as the package's ``obtain_asv_error_rates``.

    ``threshold`` defaults to the ASV system's EER threshold (target vs non-target, same
    definition as :func:`eer`).  A trial is accepted when ``score >= threshold``.

    Returns:
        dict of Python floats: ``threshold``, ``pfa_asv`` (non-targets accepted),
        ``pmiss_asv`` (targets rejected), ``pmiss_spoof_asv`` (spoofs rejected),
        ``pfa_spoof_asv`` (spoofs accepted).
    """
    tar = _flat_finite(target_scores, "asv_target_scores")
    non = _flat_finite(nontarget_scores, "asv_nontarget_scores")
    spf = _flat_finite(spoof_scores, "asv_spoof_scores")
    if not (tar.device == non.device == spf.device):
        raise ValueError(
            "ASV scores must be on one device, got target on "
            f"{tar.device}, non-target on {non.device}, spoof on {spf.device}"
        )
    if threshold is None:
        both = torch.cat([tar, non])
        is_tar = torch.zeros(both.numel(), dtype=torch.bool, device=both.device)
        is_tar[: tar.numel()] = True
        _, thr_t = _eer_from_curve(*_det_curve_prepared(both, is_tar, tar.numel(), non.numel()))
    else:
        thr_t = torch.tensor(float(threshold), dtype=torch.float64, device=tar.device)
    tar64, non64, spf64 = (x.to(torch.float64) for x in (tar, non, spf))
    counts = torch.stack(
        [
            (non64 >= thr_t).sum().to(torch.float64),
            (tar64 < thr_t).sum().to(torch.float64),
            (spf64 < thr_t).sum().to(torch.float64),
            (spf64 >= thr_t).sum().to(torch.float64),
            thr_t.to(torch.float64),
        ]
    ).tolist()
    n_fa, n_miss, n_miss_spf, n_fa_spf, thr = counts
    return {
        "threshold": thr,
        "pfa_asv": n_fa / non.numel(),
        "pmiss_asv": n_miss / tar.numel(),
        "pmiss_spoof_asv": n_miss_spf / spf.numel(),
        "pfa_spoof_asv": n_fa_spf / spf.numel(),
    }


def _check_rate(x, name: str) -> float:
    x = float(x)
    if not (0.0 <= x <= 1.0):
        raise ValueError(f"{name} must be a rate in [0, 1], got {x!r}")
    return x


def min_tdcf(
    scores: TensorLike,
    labels: TensorLike,
    *,
    asv_target_scores: Optional[TensorLike] = None,
    asv_nontarget_scores: Optional[TensorLike] = None,
    asv_spoof_scores: Optional[TensorLike] = None,
    pfa_asv: Optional[float] = None,
    pmiss_asv: Optional[float] = None,
    pfa_spoof_asv: Optional[float] = None,
    pmiss_spoof_asv: Optional[float] = None,
    version: str = "2021",
    cost_model: Optional[Mapping[str, float]] = None,
    bonafide_label: int = 1,
) -> Tuple[float, float]:
    """Normalised minimum tandem DCF of a countermeasure (``scores``, ``labels``) in tandem
    with a fixed ASV system.

    The ASV system is given either by its raw scores (``asv_target_scores``,
    ``asv_nontarget_scores``, ``asv_spoof_scores``; its operating point is then its EER
    threshold, see :func:`asv_error_rates`) or by its error rates ``pfa_asv``, ``pmiss_asv``
    and one of ``pfa_spoof_asv`` / ``pmiss_spoof_asv`` (they sum to 1).

    ``version="2019"`` - legacy t-DCF of ASVspoof 2019::

        C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv
        C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv)
        tDCF(t) = (C1 Pmiss_cm(t) + C2 Pfa_cm(t)) / min(C1, C2)

    ``version="2021"`` - revised t-DCF of ASVspoof 2021::

        C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv
        C1 = Ptar Cmiss - C0
        C2 = Pspoof Cfa_spoof Pfa_spoof_asv
        tDCF(t) = (C0 + C1 Pmiss_cm(t) + C2 Pfa_cm(t)) / (C0 + min(C1, C2))

    ``Pmiss_cm``, ``Pfa_cm`` run over the CM's DET curve (module docstring).  ``cost_model``
    overrides entries of :func:`tdcf_cost_model` (package key names).

    Returns:
        ``(min_tdcf, threshold)`` as Python floats (CM threshold of the first minimum).
    """
    v = _tdcf_version(version)
    model = tdcf_cost_model(v)
    if cost_model is not None:
        unknown = set(cost_model) - set(model)
        if unknown:
            raise ValueError(
                f"cost_model has unknown key(s) {sorted(unknown)} for version {v}; "
                f"expected keys {sorted(model)}"
            )
        model.update({k: float(val) for k, val in cost_model.items()})
    for key in ("Pspoof", "Ptar", "Pnon"):
        if model[key] < 0:
            raise ValueError(f"cost_model[{key!r}] must be >= 0, got {model[key]!r}")
    total = model["Ptar"] + model["Pnon"] + model["Pspoof"]
    if abs(total - 1) > 1e-10:
        raise ValueError(f"cost_model priors Ptar + Pnon + Pspoof must sum to 1, got {total!r}")

    raw = (asv_target_scores, asv_nontarget_scores, asv_spoof_scores)
    rates = (pfa_asv, pmiss_asv, pfa_spoof_asv, pmiss_spoof_asv)
    if any(r is not None for r in raw):
        if any(r is None for r in raw):
            raise ValueError(
                "give all of asv_target_scores, asv_nontarget_scores and asv_spoof_scores; got "
                + ", ".join(f"{n}={'given' if r is not None else None}" for n, r in zip(
                    ("asv_target_scores", "asv_nontarget_scores", "asv_spoof_scores"), raw))
            )
        if any(r is not None for r in rates):
            raise ValueError("give either the raw ASV scores or the ASV error rates, not both")
        asv = asv_error_rates(*raw)
        p_fa, p_miss = asv["pfa_asv"], asv["pmiss_asv"]
        p_miss_spf, p_fa_spf = asv["pmiss_spoof_asv"], asv["pfa_spoof_asv"]
    else:
        if pfa_asv is None or pmiss_asv is None:
            raise ValueError(
                f"give the ASV scores or its error rates; got pfa_asv={pfa_asv!r}, pmiss_asv={pmiss_asv!r}"
            )
        if (pfa_spoof_asv is None) == (pmiss_spoof_asv is None):
            raise ValueError(
                "give exactly one of pfa_spoof_asv and pmiss_spoof_asv, got "
                f"pfa_spoof_asv={pfa_spoof_asv!r}, pmiss_spoof_asv={pmiss_spoof_asv!r}"
            )
        p_fa = _check_rate(pfa_asv, "pfa_asv")
        p_miss = _check_rate(pmiss_asv, "pmiss_asv")
        if pfa_spoof_asv is not None:
            p_fa_spf = _check_rate(pfa_spoof_asv, "pfa_spoof_asv")
            p_miss_spf = 1 - p_fa_spf
        else:
            p_miss_spf = _check_rate(pmiss_spoof_asv, "pmiss_spoof_asv")
            p_fa_spf = 1 - p_miss_spf

    m = model
    if v == "2019":
        c1 = m["Ptar"] * (m["Cmiss_cm"] - m["Cmiss_asv"] * p_miss) - m["Pnon"] * m["Cfa_asv"] * p_fa
        c2 = m["Cfa_cm"] * m["Pspoof"] * (1 - p_miss_spf)
        c0 = 0.0
        if c1 < 0 or c2 < 0:
            raise ValueError(f"t-DCF weights must be >= 0, got C1={c1!r}, C2={c2!r}")
        norm = min(c1, c2)
    else:
        c0 = m["Ptar"] * m["Cmiss"] * p_miss + m["Pnon"] * m["Cfa"] * p_fa
        c1 = m["Ptar"] * m["Cmiss"] - (m["Ptar"] * m["Cmiss"] * p_miss + m["Pnon"] * m["Cfa"] * p_fa)
        c2 = m["Pspoof"] * m["Cfa_spoof"] * p_fa_spf
        if c0 < 0 or c1 < 0 or c2 < 0:
            raise ValueError(f"t-DCF weights must be >= 0, got C0={c0!r}, C1={c1!r}, C2={c2!r}")
        norm = c0 + min(c1, c2)
    if not norm > 0:
        raise ValueError(
            f"t-DCF normalisation is {norm!r} (C0={c0!r}, C1={c1!r}, C2={c2!r}); the ASV error "
            "rates leave nothing for the CM to do"
        )

    s, is_bf, n_bf, n_sp = _prepare(scores, labels, bonafide_label)
    miss, fa, thr = _det_curve_prepared(s, is_bf, n_bf, n_sp)
    if v == "2019":
        curve = c1 * miss + c2 * fa
    else:
        curve = c0 + c1 * miss + c2 * fa
    curve = curve / norm
    idx = torch.argmin(curve)
    value, t = torch.stack([curve[idx], thr[idx]]).tolist()
    return value, t


# ---------------------------------------------------------------------------------------
# streaming accumulator
# ---------------------------------------------------------------------------------------
class DetectionMetrics:
    """Accumulates CM scores batch by batch on their device and computes the metrics once.

    Example::

        metric = DetectionMetrics(bonafide_label=1)
        for batch in loader:
            metric.update(loss.score(emb), batch_labels)   # no host sync
        result = metric.compute()                           # dict of Python floats
        print(f"EER {100 * result['eer']:.2f} %")
        metric.reset()

    :meth:`update` only records (detached copies of) the flattened tensors; it checks
    shapes and devices (metadata only) and never synchronises with the device.  Value
    checks (NaN/Inf, labels in {0, 1}, both classes present) happen in :meth:`compute`,
    which all-gathers the data of every rank when ``torch.distributed`` is initialised
    (ranks may hold different numbers of trials, or none) and so must be called on every
    rank; all ranks get the same result.

    ``compute()`` returns a dict of Python floats/ints:
    ``eer``, ``eer_threshold``, ``min_dcf``, ``min_dcf_threshold``, ``act_dcf``
    (meaningful for LLR scores), ``act_dcf_threshold``, ``cllr`` (bits, LLR scores),
    ``n_bonafide``, ``n_spoof``.  ``min_dcf``/``act_dcf`` use ``p_spoof``, ``c_miss`` and
    ``c_fa``.

    Args:
        bonafide_label: 0 or 1, the label value of bona fide trials.
        p_spoof, c_miss, c_fa: DCF parameters (ASVspoof 5 defaults).
        dist_sync: gather across ranks when torch.distributed is initialised.
        process_group: the group to gather over (default: the world).
    """

    def __init__(
        self,
        bonafide_label: int = 1,
        *,
        p_spoof: float = 0.05,
        c_miss: float = 1.0,
        c_fa: float = 10.0,
        dist_sync: bool = True,
        process_group=None,
    ) -> None:
        self.bonafide_label = _check_bonafide_label(bonafide_label)
        _dcf_weights(p_spoof, c_miss, c_fa)
        self.p_spoof, self.c_miss, self.c_fa = p_spoof, c_miss, c_fa
        self.dist_sync = dist_sync
        self.process_group = process_group
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated trials."""
        self._scores: List[torch.Tensor] = []
        self._labels: List[torch.Tensor] = []
        self._device: Optional[torch.device] = None
        self._count = 0

    def __len__(self) -> int:
        """Number of trials accumulated on this rank (no sync)."""
        return self._count

    @torch.no_grad()
    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Record one batch: ``scores`` (any shape, real dtype) and ``labels`` with as many
        elements.  No host synchronisation."""
        if not isinstance(scores, torch.Tensor) or not isinstance(labels, torch.Tensor):
            raise ValueError(
                f"scores and labels must be tensors, got {type(scores).__name__} and "
                f"{type(labels).__name__}"
            )
        if scores.numel() != labels.numel():
            raise ValueError(
                "scores and labels must have the same number of elements, got scores of shape "
                f"{tuple(scores.shape)} and labels of shape {tuple(labels.shape)}"
            )
        if scores.device != labels.device:
            raise ValueError(
                f"scores and labels must be on the same device, got {scores.device} and {labels.device}"
            )
        if scores.is_complex() or labels.is_complex():
            raise ValueError(f"scores and labels must be real, got {scores.dtype} and {labels.dtype}")
        if self._device is None:
            self._device = scores.device
        elif scores.device != self._device:
            raise ValueError(
                f"scores are on {scores.device} but earlier batches were on {self._device}"
            )
        # copies (the caller may reuse its buffers). Scores keep float32 (float16/bfloat16
        # widened exactly), others become float64; labels keep their dtype, so that every
        # value can be validated in compute().
        sdtype = torch.float32 if scores.dtype in _NARROW_FLOATS else torch.float64
        self._scores.append(scores.detach().reshape(-1).to(sdtype, copy=True))
        self._labels.append(labels.detach().reshape(-1).clone())
        self._count += scores.numel()

    def _local(self) -> Tuple[torch.Tensor, torch.Tensor]:
        device = self._device if self._device is not None else torch.device("cpu")
        if not self._scores:
            return (torch.empty(0, dtype=torch.float32, device=device),
                    torch.empty(0, dtype=torch.int64, device=device))
        if any(x.dtype == torch.float64 for x in self._scores):
            scores = torch.cat([x.to(torch.float64) for x in self._scores])
        else:
            scores = torch.cat(self._scores)
        dtypes = {x.dtype for x in self._labels}
        if dtypes == {torch.bool}:
            labels = torch.cat(self._labels)
        elif any(d.is_floating_point for d in dtypes):
            labels = torch.cat([x.to(torch.float64) for x in self._labels])
        else:  # integers (and bools): int64 keeps every value
            labels = torch.cat([x.to(torch.int64) for x in self._labels])
        return scores, labels

    def gather(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """All accumulated ``(scores, labels)`` as 1-D tensors, concatenated over ranks (in
        rank order) when distributed; a collective call in that case.  Scores are float32
        when every batch (of every rank) was float32 or narrower, else float64.  Labels
        keep a common dtype of the batches (bool, int64 or float64) on one process and
        are float64 after a gather across ranks."""
        scores, labels = self._local()
        if not self.dist_sync:
            return scores, labels
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return scores, labels
        group = self.process_group
        world = dist.get_world_size(group)
        if world == 1:
            return scores, labels
        backend = str(dist.get_backend(group)).lower()
        device = scores.device
        if "nccl" in backend and device.type != "cuda":
            comm_device = torch.device("cuda", torch.cuda.current_device())
        elif "gloo" in backend and "nccl" not in backend and device.type != "cpu":
            comm_device = torch.device("cpu")
        else:
            comm_device = device
        # one float64 [2, n] message: float32 scores and 0/1 labels are exact in it, and an
        # invalid label stays invalid (compute() names it)
        local = torch.stack([scores.to(torch.float64), labels.to(torch.float64)]).to(comm_device)
        info = torch.tensor(
            [local.shape[1], int(scores.dtype == torch.float64 and local.shape[1] > 0)],
            dtype=torch.int64, device=comm_device,
        )
        infos = [torch.zeros_like(info) for _ in range(world)]
        dist.all_gather(infos, info, group=group)
        infos_l = torch.stack(infos).tolist()
        sizes_l = [int(x[0]) for x in infos_l]
        any64 = any(x[1] for x in infos_l)
        longest = max(sizes_l)
        if longest == 0:
            return scores, labels
        padded = local.new_zeros((2, longest))
        padded[:, : local.shape[1]] = local
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded, group=group)
        full = torch.cat([p[:, :m] for p, m in zip(parts, sizes_l)], dim=1).to(device)
        # float32 data travelled as float64 exactly: narrow it back for the fast sort
        return (full[0] if any64 else full[0].to(torch.float32)), full[1]

    def compute(self) -> Dict[str, float]:
        """The metrics over everything accumulated (on all ranks); see the class docstring."""
        scores, labels = self.gather()
        if scores.numel() == 0:
            raise ValueError("DetectionMetrics.compute() called before any update() (0 trials)")
        s, is_bf, n_bf, n_sp = _prepare(scores, labels, self.bonafide_label)
        miss, fa, thr = _det_curve_prepared(s, is_bf, n_bf, n_sp)
        e, e_thr = _eer_from_curve(miss, fa, thr)
        d, d_thr = _min_dcf_from_curve(miss, fa, thr, self.p_spoof, self.c_miss, self.c_fa)
        a, a_thr = _act_dcf_prepared(s, is_bf, n_bf, n_sp, self.p_spoof, self.c_miss, self.c_fa)
        c = _cllr_prepared(s, is_bf, n_bf, n_sp)
        vals = torch.stack([e, e_thr, d, d_thr, a, c]).tolist()
        return {
            "eer": vals[0],
            "eer_threshold": vals[1],
            "min_dcf": vals[2],
            "min_dcf_threshold": vals[3],
            "act_dcf": vals[4],
            "act_dcf_threshold": a_thr,
            "cllr": vals[5],
            "n_bonafide": n_bf,
            "n_spoof": n_sp,
        }
