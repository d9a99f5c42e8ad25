"""Countermeasure (Track 1) metrics: EER, minDCF, actDCF, CLLR and the DET curve.

Definitions of the ASVspoof 5 evaluation package (``calculate_modules.py``: compute_eer,
compute_mindcf, compute_actDCF, calculate_CLLR; defaults of ``calculate_metrics.py``):

    DET point k (k = 0 .. N, see det.py for the order):
        miss(k) = bona fide among the first k sorted trials / N_bonafide
        fa(k)   = spoof not among them / N_spoof
        thr(k)  = k-th smallest score, thr(0) = smallest score - 0.001
    EER      = (miss + fa) / 2 at the first k minimising |miss - fa|
    minDCF   = min_k [Cmiss miss(k) (1 - Pspoof) + Cfa fa(k) Pspoof] / min(Cmiss (1 - Pspoof), Cfa Pspoof)
    actDCF   = the same cost at the Bayes threshold -log(Cmiss (1 - Pspoof) / (Cfa Pspoof)) of
               log-likelihood-ratio scores (bona fide missed below it, spoof accepted at or above)
    CLLR     = 0.5 (mean_bf log(1 + e^-s) + mean_spoof log(1 + e^s)) / log 2

With Pspoof = 0.05, Cmiss = 1, Cfa = 10.  Each function here works on
:class:`~spoofloss.metrics.det.SortedTrials` and returns one value per segment, so the
pooled call and the grouped results of :class:`DetectionMetrics` share the code.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch

from ._inputs import TensorLike, prepare
from .attack import AttackTrials, first_at_least
from .det import FIRST_THRESHOLD_OFFSET, SortedTrials, det_rates, sort_trials

# class codes of the two-class curves: bona fide sorts before spoof among equal scores
BONAFIDE_CODE, SPOOF_CODE = 0, 1


def dcf_weights(p_spoof: float, c_miss: float, c_fa: float) -> Tuple[float, float, float]:
    """(p_target, c_def, p_nontarget) of the DCF, after checking the parameters."""
    if not (0.0 < p_spoof < 1.0):
        raise ValueError(f"p_spoof must be in (0, 1), got {p_spoof!r}")
    if not (c_miss > 0 and c_fa > 0):
        raise ValueError(f"c_miss and c_fa must be > 0, got c_miss={c_miss!r}, c_fa={c_fa!r}")
    p_target = 1 - p_spoof
    c_def = min(c_miss * p_target, c_fa * (1 - p_target))
    return p_target, c_def, 1 - p_target


def sort_cm(scores: torch.Tensor, is_bf: torch.Tensor) -> SortedTrials:
    return sort_trials(scores, (~is_bf).to(torch.int64), 2)


def unsorted_cm(is_bf: torch.Tensor) -> SortedTrials:
    """The trials in input order, one segment: enough for the metrics that need no order
    (actDCF, CLLR), which then sum in the input order."""
    codes = (~is_bf).to(torch.int64)
    return SortedTrials(None, codes, False, 2, torch.bincount(codes, minlength=2).reshape(1, 2))


# ---------------------------------------------------------------------------------------
# per-segment metrics
# ---------------------------------------------------------------------------------------
def eer_of(st: SortedTrials, miss: torch.Tensor, fa: torch.Tensor):
    """EER [G] and its threshold [G] (compute_eer)."""
    pos, _ = st.first_min((miss - fa).abs_(), 1.0)  # |miss - fa| = 1 at k = 0
    value = (st.take(miss, pos, 0.0) + st.take(fa, pos, 1.0)) / 2
    return value, st.thresholds(pos, FIRST_THRESHOLD_OFFSET)


def eer_by_attack(trials: AttackTrials):
    """EER [G] and its threshold [G] of every attack group (two-class trials, see
    attack.py), equal to :func:`eer_of` on each group's own trials.

    Along a group's DET path ``miss = b / M`` rises and ``fa = (S_a - s) / S_a`` falls, so
    ``miss - fa`` rises strictly (steps of 1/M or 1/S_a, far above the rounding of float64)
    and ``|miss - fa|`` falls, then rises: its first minimum is the first point with
    ``miss >= fa`` or the point before it (the earlier on a tie).  The run holding the
    former is the first whose last point has ``miss >= fa``: a binary search over each
    group's runs, for all groups at once; the point within the run is
    :func:`~spoofloss.metrics.attack.first_at_least`'s.
    """
    device = trials.device
    n_bf = float(trials.n_shared)
    n_sp = trials.class_count(SPOOF_CODE)  # float64 [G]
    starts, lo_spoof, hi_spoof = trials.spoof_starts, trials.spoof_lo, trials.run_ends()
    last = max(lo_spoof.numel() - 1, 0)

    def bounds(t):  # first and last b of run t (0 .. S_a) of each group
        j = (starts + t - 1).clamp(0, last)
        return torch.where(t > 0, lo_spoof[j], 0), torch.where(t > 0, hi_spoof[j], trials.first_run_end())

    def miss_at(b):  # as det_rates: shared trials passed / M, spoof trials not passed / S_a
        return b.to(torch.float64).div_(n_bf)

    def fa_at(t):
        return torch.sub(n_sp, t.to(torch.float64)).div_(n_sp)

    low = torch.zeros(trials.n_seg, dtype=torch.int64, device=device)
    high = trials.n_spoof.clone()  # the last run ends at miss 1, fa 0
    while bool((low < high).any()):
        mid = (low + high) >> 1
        reached = miss_at(bounds(mid)[1]) >= fa_at(mid)
        high = torch.where(reached, mid, high)
        low = torch.where(reached, low, mid + 1)
    run = low
    lo, hi = bounds(run)
    fa_up = fa_at(run)
    b_up = torch.minimum(torch.maximum(first_at_least(fa_up, n_bf), lo), hi)  # the first point with miss >= fa
    # the point before it: in the same run, or the last of the run before (none before k = 0)
    in_run = b_up > lo
    b_down, s_down = torch.where(in_run, b_up - 1, lo), torch.where(in_run, run, run - 1)
    fa_down = fa_at(s_down)
    gap_up = (miss_at(b_up) - fa_up).abs_()
    gap_down = (miss_at(b_down) - fa_down).abs_()
    down = (in_run | (run > 0)) & (gap_down <= gap_up)
    b, s, fa = torch.where(down, b_down, b_up), torch.where(down, s_down, run), torch.where(down, fa_down, fa_up)
    value = (miss_at(b) + fa) / 2  # at k = 0: (0 + 1) / 2, as eer_of
    origin = (b == 0) & (s == 0)
    keys = trials.key_at(b, bounds(s)[0], torch.where(s > 0, starts + s - 1, -1))
    at = trials.decode(torch.where(origin, trials.first_keys(), keys))
    return value, torch.where(origin, at - FIRST_THRESHOLD_OFFSET, at)


def min_dcf_of(st: SortedTrials, miss, fa, p_spoof: float, c_miss: float, c_fa: float):
    """Normalised minDCF [G] and its threshold [G] (compute_mindcf)."""
    p_target, c_def, p_non = dcf_weights(p_spoof, c_miss, c_fa)
    # the package's association: (Cmiss * frr) * p_target + (Cfa * far) * (1 - p_target)
    cost = (miss * c_miss).mul_(p_target)
    cost.add_((fa * c_fa).mul_(p_non))
    initial = (c_miss * 0.0) * p_target + (c_fa * 1.0) * p_non
    pos, best = st.first_min(cost, initial)
    return best / c_def, st.thresholds(pos, FIRST_THRESHOLD_OFFSET)


def _bayes_threshold(p_spoof: float, c_miss: float, c_fa: float) -> float:
    dcf_weights(p_spoof, c_miss, c_fa)
    beta = c_miss * (1 - p_spoof) / (c_fa * p_spoof)
    return -math.log(beta)


def _act_dcf_value(n_missed, n_bf, n_accepted, n_spoof, p_spoof: float, c_miss: float, c_fa: float):
    """compute_actDCF's arithmetic on the counts (float64 tensors [G])."""
    rate_miss = n_missed / n_bf
    rate_fa = n_accepted / n_spoof
    value = c_miss * (1 - p_spoof) * rate_miss + c_fa * p_spoof * rate_fa
    return value / min(c_fa * p_spoof, c_miss * (1 - p_spoof))


def act_dcf_of(st: SortedTrials, p_spoof: float, c_miss: float, c_fa: float, scores64=None):
    """Normalised actDCF [G] and the Bayes threshold (compute_actDCF)."""
    threshold = _bayes_threshold(p_spoof, c_miss, c_fa)
    if scores64 is None:
        scores64 = st.scores()
    below = scores64 < threshold  # float64: the exact comparison
    is_bf = st.codes == BONAFIDE_CODE
    n_missed = st.segment_sum((below & is_bf).to(torch.float64))  # bona fide below: missed
    n_accepted = st.segment_sum((~below & ~is_bf).to(torch.float64))  # spoof at or above: accepted
    return _act_dcf_value(n_missed, st.class_count(BONAFIDE_CODE), n_accepted, st.class_count(SPOOF_CODE),
                          p_spoof, c_miss, c_fa), threshold


def act_dcf_by_attack(trials: AttackTrials, p_spoof: float, c_miss: float, c_fa: float):
    """:func:`act_dcf_of` of every attack group: the bona fide trials missed are counted
    once, the spoof trials accepted per group (exact counts: the same numbers)."""
    threshold = _bayes_threshold(p_spoof, c_miss, c_fa)
    shared, spoof = trials.scores()
    n_missed = (shared < threshold).sum().to(torch.float64)
    accepted = (spoof >= threshold).to(torch.float64)
    n_accepted = torch.zeros(trials.n_seg, dtype=torch.float64, device=trials.device)
    n_accepted.index_add_(0, trials.spoof_seg, accepted)
    return _act_dcf_value(n_missed, trials.class_count(BONAFIDE_CODE), n_accepted, trials.class_count(SPOOF_CODE),
                          p_spoof, c_miss, c_fa), threshold


def _neg_log_sigmoid(w: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(-w) = softplus(w) = max(w, 0) + log1p(exp(-|w|)), in place on ``w``:
    no overflow (the package's log1p(exp(w)) gives inf beyond w = 709), and no linear
    cut-off as in torch's softplus (threshold 20)."""
    tail = torch.abs(w)
    tail.neg_().exp_().log1p_()
    return w.clamp_min_(0).add_(tail)


def _cllr_value(sum_bf, n_bf, sum_spoof, n_spoof):
    return 0.5 * (sum_bf / n_bf + sum_spoof / n_spoof) / math.log(2)


def cllr_of(st: SortedTrials, scores64=None) -> torch.Tensor:
    """CLLR [G] in bits (calculate_CLLR)."""
    if scores64 is None:
        scores64 = st.scores()
    # w = -llr for bona fide, +llr for spoof
    is_bf = st.codes == BONAFIDE_CODE
    nls = _neg_log_sigmoid(torch.where(is_bf, -scores64, scores64))
    sum_bf = st.segment_sum(torch.where(is_bf, nls, 0.0))
    sum_sp = st.segment_sum(torch.where(is_bf, 0.0, nls))
    return _cllr_value(sum_bf, st.class_count(BONAFIDE_CODE), sum_sp, st.class_count(SPOOF_CODE))


def cllr_by_attack(trials: AttackTrials) -> torch.Tensor:
    """:func:`cllr_of` of every attack group: the bona fide sum once, the spoof sums per
    group, each accumulated in sorted order one term after another (index_add_), as
    cllr_of accumulates a group's own trials: the same numbers."""
    device = trials.device
    shared, spoof = trials.scores()
    nls_bf = _neg_log_sigmoid(-shared)
    sum_bf = torch.zeros(1, dtype=torch.float64, device=device)
    sum_bf.index_add_(0, torch.zeros(nls_bf.numel(), dtype=torch.int64, device=device), nls_bf)
    del nls_bf
    nls_spoof = _neg_log_sigmoid(spoof.clone())
    sum_sp = torch.zeros(trials.n_seg, dtype=torch.float64, device=device)
    sum_sp.index_add_(0, trials.spoof_seg, nls_spoof)
    return _cllr_value(sum_bf, trials.class_count(BONAFIDE_CODE), sum_sp, trials.class_count(SPOOF_CODE))


# ---------------------------------------------------------------------------------------
# public functions (one set of trials)
# ---------------------------------------------------------------------------------------
def _sorted(scores, labels, bonafide_label) -> Tuple[SortedTrials, torch.Tensor, torch.Tensor]:
    s, is_bf, _, _ = prepare(scores, labels, bonafide_label)
    st = sort_cm(s, is_bf)
    return st, s, is_bf


def det_curve(
    scores: TensorLike, labels: TensorLike, bonafide_label: int = 1
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The package's DET curve: ``(miss, fa, thresholds)``, float64 tensors of length N + 1
    on the scores' device (see the package docstring for the exact definition)."""
    st, _, _ = _sorted(scores, labels, bonafide_label)
    miss, fa = det_rates(st)
    one = torch.ones(1, dtype=torch.float64, device=st.device)
    sorted_scores = st.scores()
    return (
        torch.cat([one * 0.0, miss]),
        torch.cat([one, fa]),
        torch.cat([sorted_scores[:1] - FIRST_THRESHOLD_OFFSET, sorted_scores]),
    )


def eer(scores: TensorLike, labels: TensorLike, bonafide_label: int = 1) -> Tuple[float, float]:
    """Equal error rate and its threshold, as ASVspoof's ``compute_eer``.

    Over the DET curve, the first point minimising ``|miss - fa|``; the EER is the mean of
    the two rates there and the threshold the score at that point.

    Returns:
        ``(eer, threshold)`` as Python floats; ``eer`` is a fraction in [0, 1].
    """
    st, _, _ = _sorted(scores, labels, bonafide_label)
    value, thr = eer_of(st, *det_rates(st))
    value, thr = torch.cat([value, thr]).tolist()
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
    dcf_weights(p_spoof, c_miss, c_fa)
    st, _, _ = _sorted(scores, labels, bonafide_label)
    value, thr = min_dcf_of(st, *det_rates(st), p_spoof, c_miss, c_fa)
    value, thr = torch.cat([value, thr]).tolist()
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
    dcf_weights(p_spoof, c_miss, c_fa)
    s, is_bf, _, _ = prepare(scores, labels, bonafide_label)
    value, thr = act_dcf_of(unsorted_cm(is_bf), p_spoof, c_miss, c_fa, scores64=s.to(torch.float64))
    return float(value.item()), thr


def cllr(scores: TensorLike, labels: TensorLike, bonafide_label: int = 1) -> float:
    """Log-likelihood-ratio cost in bits, for natural-log LLR scores:
    ``0.5 * (mean_bf log(1 + e^-s) + mean_spoof log(1 + e^s)) / log 2``.

    Returns:
        Python float (1.0 for an uninformative system that always outputs 0).
    """
    s, is_bf, _, _ = prepare(scores, labels, bonafide_label)
    return float(cllr_of(unsorted_cm(is_bf), scores64=s.to(torch.float64)).item())
