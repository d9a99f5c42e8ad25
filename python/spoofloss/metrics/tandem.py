"""Tandem (CM + ASV) and spoofing-robust ASV metrics: t-DCF, a-DCF, t-EER.

Definitions of the ASVspoof evaluation packages (ASVspoof 5 ``evaluation-package/``):

* min t-DCF (``calculate_modules.compute_tDCF``, ``compute_tDCF_legacy``): a cost over the
  CM's DET curve with the error rates of a fixed ASV system (see :func:`min_tdcf`).  In
  Track 2 of ASVspoof 5 the ASV rates are those of the organisers' ASV system, pooled
  (``calculate_metrics.calculate_aDCF_tdcf_tEER``): :data:`ASVSPOOF5_ASV_ERROR_RATES`.
* a-DCF (``a_dcf._calculate_a_dcf``, ``compute_a_det_curve``; Shim et al., Odyssey 2024):
  one score per trial (an SASV score) judged over target, non-target and spoof trials::

      a-DCF(t) = [Cmiss Ptar Pmiss(t) + Cfa Pnon Pfa_non(t) + Cfa_spoof Pspoof Pfa_spoof(t)]
                 / min(Cfa Pnon + Cfa_spoof Pspoof, Cmiss Ptar)

  minimised over the three-class DET points (ties: target, non-target, spoof; the first
  point sits 1e-8 below the smallest score).
* t-EER (``calculate_modules.compute_teer``, ``compute_teer_accelerated``; Kinnunen et
  al., IEEE TPAMI 2023): the concurrent tandem EER of a CM and an ASV system, see
  :func:`t_eer`.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch

from ._inputs import (
    ASV_NONTARGET,
    ASV_SPOOF,
    ASV_TARGET,
    TensorLike,
    asv_class_counts,
    check_asv_labels,
    prepare,
    prepare_scores,
    same_size,
)
from .attack import AttackCurve, AttackTrials, RangeMin
from .det import (
    ADCF_FIRST_THRESHOLD_OFFSET,
    FIRST_THRESHOLD_OFFSET,
    SortedTrials,
    det_rates,
    segment_first_min,
    sort_trials,
)
from .scalar import eer_of, sort_cm

# Pooled error rates of the organisers' ASV system at its EER threshold, which Track 2 of
# the ASVspoof 5 evaluation package uses for the min t-DCF
# (calculate_metrics.calculate_aDCF_tdcf_tEER: Pfa_non_ASV_org, Pmiss_ASV_org, Pfa_spf_ASV_org).
ASVSPOOF5_ASV_ERROR_RATES = {
    "pfa_asv": 0.01881016557566423,
    "pmiss_asv": 0.01880141010575793,
    "pfa_spoof_asv": 0.4607082907604729,
}

# Codes of the three-class curves in their tie order: target, non-target, spoof.
TARGET_CODE, NONTARGET_CODE, SPOOF3_CODE = 0, 1, 2

# t-EER search of compute_teer_accelerated: curves longer than this are searched first on
# every (length // 3000)-th point, then within +-1600 points of the coarse answer.
_TEER_DECIMATED = 3000
_TEER_WINDOW = 1600
_RHO = 0.5  # spoofing prevalence of the concurrent t-EER (any value gives the same point)


def asv_codes(asv_labels: torch.Tensor) -> torch.Tensor:
    """ASV label codes (1 target, 0 non-target, 2 spoof) -> three-class sort codes."""
    return torch.where(asv_labels == ASV_TARGET, TARGET_CODE,
                       torch.where(asv_labels == ASV_NONTARGET, NONTARGET_CODE, SPOOF3_CODE))


# ---------------------------------------------------------------------------------------
# t-DCF
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
    tar = prepare_scores(target_scores, "asv_target_scores")
    non = prepare_scores(nontarget_scores, "asv_nontarget_scores")
    spf = prepare_scores(spoof_scores, "asv_spoof_scores")
    if not (tar.device == non.device == spf.device):
        raise ValueError(
            "ASV scores must be on one device, got target on "
            f"{tar.device}, non-target on {non.device}, spoof on {spf.device}"
        )
    if threshold is None:
        both = torch.cat([tar.to(torch.float64), non.to(torch.float64)]) if tar.dtype != non.dtype \
            else torch.cat([tar, non])
        is_tar = torch.zeros(both.numel(), dtype=torch.bool, device=both.device)
        is_tar[: tar.numel()] = True
        st = sort_cm(both, is_tar)
        thr_t = eer_of(st, *det_rates(st))[1][0]
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


def tdcf_weights(version: str, cost_model: Optional[Mapping[str, float]], p_fa: float, p_miss: float,
                 p_miss_spf: float, p_fa_spf: float) -> Tuple[str, float, float, float, float]:
    """(version, C0, C1, C2, normaliser) of the t-DCF, with the package's checks."""
    v = _tdcf_version(version)
    m = tdcf_cost_model(v)
    if cost_model is not None:
        unknown = set(cost_model) - set(m)
        if unknown:
            raise ValueError(
                f"cost_model has unknown key(s) {sorted(unknown)} for version {v}; expected keys {sorted(m)}"
            )
        m.update({k: float(val) for k, val in cost_model.items()})
    for key in ("Pspoof", "Ptar", "Pnon"):
        if m[key] < 0:
            raise ValueError(f"cost_model[{key!r}] must be >= 0, got {m[key]!r}")
    total = m["Ptar"] + m["Pnon"] + m["Pspoof"]
    if abs(total - 1) > 1e-10:
        raise ValueError(f"cost_model priors Ptar + Pnon + Pspoof must sum to 1, got {total!r}")
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
    return v, c0, c1, c2, norm


def min_tdcf_of(st: SortedTrials, miss, fa, weights):
    """Normalised min t-DCF [G], its CM threshold [G], and the number of distinct CM scores
    [G] (the package refuses fewer than 3)."""
    v, c0, c1, c2, norm = weights
    # the package's association: (C0 + C1 Pmiss) + C2 Pfa, then / normaliser
    if v == "2019":
        curve = (miss * c1).add_(fa * c2).div_(norm)
        initial = (c1 * 0.0 + c2 * 1.0) / norm
    else:
        curve = (miss * c1).add_(c0).add_(fa * c2).div_(norm)
        initial = (c0 + c1 * 0.0 + c2 * 1.0) / norm
    pos, best = st.first_min(curve, initial)
    return best, st.thresholds(pos, FIRST_THRESHOLD_OFFSET), st.distinct_scores()


def _hard_decisions_error(n_distinct: int, n: int) -> ValueError:
    return ValueError(
        f"min t-DCF needs soft CM scores, got only {n_distinct} distinct score(s) among {n} trials; "
        "the ASVspoof evaluation package refuses fewer than 3 (hard decisions, not scores)"
    )


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
    and one of ``pfa_spoof_asv`` / ``pmiss_spoof_asv`` (they sum to 1).  Track 2 of
    ASVspoof 5 uses :data:`ASVSPOOF5_ASV_ERROR_RATES`.

    ``version="2019"`` - legacy t-DCF of ASVspoof 2019::

        C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv
        C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv)
        tDCF(t) = (C1 Pmiss_cm(t) + C2 Pfa_cm(t)) / min(C1, C2)

    ``version="2021"`` - revised t-DCF of ASVspoof 2021 and 5::

        C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv
        C1 = Ptar Cmiss - C0
        C2 = Pspoof Cfa_spoof Pfa_spoof_asv
        tDCF(t) = (C0 + C1 Pmiss_cm(t) + C2 Pfa_cm(t)) / (C0 + min(C1, C2))

    ``Pmiss_cm``, ``Pfa_cm`` run over the CM's DET curve.  ``cost_model`` overrides entries
    of :func:`tdcf_cost_model` (package key names).

    Raises ``ValueError`` where the package stops with an error: priors that do not sum to
    1, negative weights, and CM scores with fewer than 3 distinct values (hard decisions).

    Returns:
        ``(min_tdcf, threshold)`` as Python floats (CM threshold of the first minimum).
    """
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
        _tdcf_version(version)
        asv = asv_error_rates(*raw)
        p_fa, p_miss = asv["pfa_asv"], asv["pmiss_asv"]
        p_miss_spf, p_fa_spf = asv["pmiss_spoof_asv"], asv["pfa_spoof_asv"]
    else:
        _tdcf_version(version)
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
    weights = tdcf_weights(version, cost_model, p_fa, p_miss, p_miss_spf, p_fa_spf)

    s, is_bf, _, _ = prepare(scores, labels, bonafide_label)
    st = sort_cm(s, is_bf)
    value, thr, distinct = min_tdcf_of(st, *det_rates(st), weights)
    value, thr, distinct = torch.cat([value, thr, distinct.to(torch.float64)]).tolist()
    if distinct < 3:
        raise _hard_decisions_error(int(distinct), len(st))
    return value, thr


# ---------------------------------------------------------------------------------------
# a-DCF
# ---------------------------------------------------------------------------------------
def a_dcf_cost_model() -> Dict[str, float]:
    """a-DCF costs and priors of Track 2 of ASVspoof 5 (calculate_aDCF_tdcf_tEER builds
    its a_dcf.CostModel from the t-DCF model): Ptar = 0.95 * 0.99, Pnon = 0.95 * 0.01,
    Pspoof = 0.05, Cmiss = 1, Cfa = 10 (non-target accepted), Cfa_spoof = 10 (spoof accepted).

    (a_dcf.CostModel's own defaults, those of the a-DCF paper, differ: Ptar 0.9, Pnon 0.05,
    Cfa_spoof 20; pass them as ``cost_model`` to use them.)
    """
    p_spoof = 0.05
    return {"Ptar": (1 - p_spoof) * 0.99, "Pnon": (1 - p_spoof) * 0.01, "Pspoof": p_spoof,
            "Cmiss": 1.0, "Cfa": 10.0, "Cfa_spoof": 10.0}


def a_dcf_weights(cost_model: Optional[Mapping[str, float]]) -> Tuple[float, float, float, float]:
    """(w_miss, w_fa_nontarget, w_fa_spoof, normaliser) of the a-DCF."""
    m = a_dcf_cost_model()
    if cost_model is not None:
        unknown = set(cost_model) - set(m)
        if unknown:
            raise ValueError(f"cost_model has unknown key(s) {sorted(unknown)}; expected keys {sorted(m)}")
        m.update({k: float(val) for k, val in cost_model.items()})
    for key, val in m.items():
        if not val >= 0:
            raise ValueError(f"cost_model[{key!r}] must be >= 0, got {val!r}")
    w_miss = m["Cmiss"] * m["Ptar"]
    w_fa = m["Cfa"] * m["Pnon"]
    w_spoof = m["Cfa_spoof"] * m["Pspoof"]
    norm = min(w_fa + w_spoof, w_miss)  # a_dcf.normalize: all accepted vs all rejected
    if not norm > 0:
        raise ValueError(f"a-DCF normalisation min(Cfa Pnon + Cfa_spoof Pspoof, Cmiss Ptar) is {norm!r}; "
                         "it must be > 0")
    return w_miss, w_fa, w_spoof, norm


def a_dcf_of(st: SortedTrials, weights):
    """Normalised min a-DCF [G] and its threshold [G] over three-class segments."""
    w_miss, w_fa, w_spoof, norm = weights
    n_tar = st.per_trial(st.class_count(TARGET_CODE))
    n_non = st.per_trial(st.class_count(NONTARGET_CODE))
    n_spf = st.per_trial(st.class_count(SPOOF3_CODE))
    p_miss = st.cumulative(TARGET_CODE).div_(n_tar)
    p_fa_non = torch.sub(n_non, st.cumulative(NONTARGET_CODE)).div_(n_non)
    p_fa_spf = torch.sub(n_spf, st.cumulative(SPOOF3_CODE)).div_(n_spf)
    # a_dcf._calculate_a_dcf: (w_miss Pmiss + w_fa Pfa_non) + w_spoof Pfa_spoof, normalised, then argmin
    curve = p_miss.mul_(w_miss).add_(p_fa_non.mul_(w_fa)).add_(p_fa_spf.mul_(w_spoof)).div_(norm)
    initial = (w_miss * 0.0 + w_fa * 1.0 + w_spoof * 1.0) / norm
    pos, best = st.first_min(curve, initial)
    return best, st.thresholds(pos, ADCF_FIRST_THRESHOLD_OFFSET)


def a_dcf_by_attack(trials: AttackTrials, weights):
    """Normalised min a-DCF [G] and its threshold [G] of every attack group (three-class
    trials, see attack.py), equal to :func:`a_dcf_of` on each group's own trials.

    Along run s of a group the cost is ``(A(b) + C(s)) / norm`` with the shared part
    ``A(b) = w_miss Pmiss + w_fa Pfa_non`` (b shared trials passed) and the spoof part
    ``C(s) = w_spoof Pfa_spoof``, summed in a_dcf_of's order.  Rounding is monotone, so a
    run's minimum is that of ``min A`` over the run (one range-minimum query per run); the
    group's minimum is the earliest run's attaining it (run 0 first, then the runs the
    spoof trials open), and within that run the first b whose rounded cost is that
    minimum (a search that scans at most two blocks).
    """
    w_miss, w_fa, w_spoof, norm = weights
    device = trials.device
    n_tar, n_non = (trials.class_count(c)[0] for c in (TARGET_CODE, NONTARGET_CODE))
    # A(b), b = 0 .. M: as a_dcf_of's p_miss * w_miss + p_fa_non * w_fa
    targets = trials.shared_cumulative(TARGET_CODE).to(torch.float64)
    nontargets = trials.shared_cumulative(NONTARGET_CODE).to(torch.float64)
    shared_cost = targets.div_(n_tar).mul_(w_miss)
    shared_cost.add_(torch.sub(n_non, nontargets).div_(n_non).mul_(w_fa))
    del targets, nontargets
    range_min = RangeMin(shared_cost)
    n_spf = trials.class_count(SPOOF3_CODE)  # [G]
    # the runs the spoof trials open: b = lo .. hi, s = rank  [S]
    lo, hi = trials.spoof_lo, trials.run_ends()
    per_spoof = n_spf[trials.spoof_seg]
    spoof_cost = torch.sub(per_spoof, trials.spoof_rank.to(torch.float64)).div_(per_spoof).mul_(w_spoof)  # C(s)
    del per_spoof
    first, best = segment_first_min(range_min(lo, hi).add_(spoof_cost).div_(norm), trials.spoof_seg, trials.n_seg)
    # run 0 of each group: b = 0 .. lo of its first spoof trial, s = 0 (its first point,
    # k = 0, is valued as a_dcf_of's initial value: ((0 + w_fa) + w_spoof) / norm)
    zero = torch.zeros(trials.n_seg, dtype=torch.int64, device=device)
    cost0 = torch.sub(n_spf, 0.0).div_(n_spf).mul_(w_spoof)
    first_end = trials.first_run_end()
    best0 = range_min(zero, first_end).add_(cost0).div_(norm)
    run0 = best0 <= best  # the earlier run wins a tie
    best = torch.where(run0, best0, best)
    j = first.clamp(max=max(lo.numel() - 1, 0))
    run_lo, run_hi = torch.where(run0, 0, lo[j]), torch.where(run0, first_end, hi[j])
    run_cost = torch.where(run0, cost0, spoof_cost[j])

    def accept(x, rows):
        return (x + run_cost[rows]) / norm <= best[rows]

    b = range_min.first_at_most(run_lo, run_hi, accept)
    origin = run0 & (b == 0)
    keys = trials.key_at(b, run_lo, torch.where(run0, -1, j))
    at = trials.decode(torch.where(origin, trials.first_keys(), keys))
    return best, torch.where(origin, at - ADCF_FIRST_THRESHOLD_OFFSET, at)


def _prepare_asv(scores, asv_labels, name: str):
    s = prepare_scores(scores, name)
    lab = check_asv_labels(torch.as_tensor(asv_labels) if not isinstance(asv_labels, torch.Tensor)
                           else asv_labels.detach())
    same_size(s, lab, name, "asv_labels")
    asv_class_counts(lab)
    return s, lab


def a_dcf(scores: TensorLike, asv_labels: TensorLike, *, cost_model: Optional[Mapping[str, float]] = None
          ) -> Tuple[float, float]:
    """Normalised minimum a-DCF of one score per trial (an SASV score; higher = accept).

    ``asv_labels``: 1 target, 0 non-target, 2 spoof (:data:`ASV_TARGET`, ...).
    ``cost_model`` overrides entries of :func:`a_dcf_cost_model` (Ptar, Pnon, Pspoof, Cmiss,
    Cfa, Cfa_spoof).  See the module docstring for the definition.

    Returns:
        ``(a_dcf, threshold)`` as Python floats (threshold of the first minimum).
    """
    weights = a_dcf_weights(cost_model)
    s, lab = _prepare_asv(scores, asv_labels, "scores")
    st = sort_trials(s, asv_codes(lab), 3)
    value, thr = a_dcf_of(st, weights)
    value, thr = torch.cat([value, thr]).tolist()
    return value, thr


# ---------------------------------------------------------------------------------------
# t-EER
# ---------------------------------------------------------------------------------------
def asv_curves(st: SortedTrials):
    """ASV error curves at k = 1 .. n (compute_Pmiss_Pfa_Pspoof_curves; at k = 0 they are
    0, 1, 1): Pmiss = targets among the first k / N_tar, Pfa_non = 1 - non-targets among
    them / N_non, Pfa_spoof = 1 - spoofs among them / N_spoof."""
    n_tar = st.per_trial(st.class_count(TARGET_CODE))
    n_non = st.per_trial(st.class_count(NONTARGET_CODE))
    n_spf = st.per_trial(st.class_count(SPOOF3_CODE))
    p_miss = st.cumulative(TARGET_CODE).div_(n_tar)
    p_fa_non = st.cumulative(NONTARGET_CODE).div_(n_non).neg_().add_(1.0)
    p_fa_spf = st.cumulative(SPOOF3_CODE).div_(n_spf).neg_().add_(1.0)
    return p_miss, p_fa_non, p_fa_spf


def _tandem_search(cm_miss, cm_fa, asv_miss, asv_fa_non, asv_fa_spf):
    """compute_teer over the given curve points (the full curves or slices of them).

    For each ASV point j in the allowed region (Pmiss_asv < (Pfa_non + Pfa_spoof) / 2),
    the CM point i(j) that minimises |h|, with the tandem miss and false-alarm rates

        h_j(i) = [Pmiss_cm + (1 - Pmiss_cm) Pmiss_asv] - [(1 - rho)(1 - Pmiss_cm) Pfa_non + rho Pfa_cm Pfa_spoof]

    (rho = 0.5); then the first j minimising |Pfa_non / Pfa_spoof - Pfa_cm / (1 - Pmiss_cm)|,
    the crossing of the two tandem false-alarm terms.  t-EER = Pfa_spoof(j) Pfa_cm(i(j)).

    The package scans every i for every j (O(N M)).  Here h_j is non-decreasing in i
    (Pmiss_cm rises and Pfa_cm falls along the CM curve, and every coefficient is >= 0
    where the ASV point is allowed), so i(j) is found by binary search, for all j at once:
    O(M log N).  In float64 the steps of h (>= 1/(N_tar N_bonafide)) exceed its rounding
    (~1e-16) by orders of magnitude for any realistic size, so the first minimum of |h| is
    the package's.

    Returns ``(t_eer, j, i)`` (0-d tensors) or None when no ASV point is allowed with a
    finite criterion (the package fails there).
    """
    a, b, c = asv_miss, asv_fa_non, asv_fa_spf
    allowed = a < (1 - _RHO) * b + _RHO * c
    j = torch.nonzero(allowed).reshape(-1)
    if j.numel() == 0:
        return None
    aj, bj, cj = a[j], b[j], c[j]
    n_cm = cm_miss.numel()

    def h(i):
        pm, pf = cm_miss[i], cm_fa[i]
        tandem_miss = pm + (1 - pm) * aj
        tandem_fa = ((1 - _RHO) * (1 - pm)) * bj + (_RHO * pf) * cj
        return tandem_miss - tandem_fa

    def first_at_least(target):
        # first i in [0, n_cm] with h_j(i) >= target (n_cm when none), per j
        lo = torch.zeros_like(j)
        hi = torch.full_like(j, n_cm)
        for _ in range(n_cm.bit_length() + 1):
            mid = (lo + hi) >> 1
            below = h(mid.clamp(max=n_cm - 1)) < target
            lo = torch.where(below & (lo < hi), mid + 1, lo)
            hi = torch.where(~below & (lo < hi), mid, hi)
        return lo

    right = first_at_least(0.0)
    left = right - 1
    h_right = h(right.clamp(max=n_cm - 1))
    h_left = h(left.clamp(min=0))
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=a.device)
    abs_right = torch.where(right < n_cm, h_right.abs(), inf)
    abs_left = torch.where(left >= 0, h_left.abs(), inf)
    # |h| falls to the crossing and rises after it; equal values: the earlier point wins,
    # which on the left is the first point of a run of equal h (a flat stretch of the curve)
    take_left = abs_left <= abs_right
    i = torch.where(take_left, first_at_least(h_left), right)

    pm, pf = cm_miss[i], cm_fa[i]
    crit = (bj / cj - pf / (1 - pm)).abs()
    crit = torch.where(crit < inf, crit, inf)  # inf and NaN (0/0) never win, as in the package
    k = torch.argmin(crit)
    if not bool(crit[k] < inf):
        return None
    return cj[k] * pf[k], j[k], i[k]


class _Curve:
    """One segment's curve with its point k = 0 in front, and the thresholds."""

    def __init__(self, st: SortedTrials, start: int, stop: int, columns, initial):
        self.st, self.start = st, start
        self.full = [torch.cat([torch.tensor([v], dtype=torch.float64, device=st.device), col[start:stop]])
                     for col, v in zip(columns, initial)]
        self.n = stop - start + 1

    def columns(self, which: slice):
        return [col[which] for col in self.full]

    def threshold(self, index: int) -> float:
        first = self.st.scores_at(torch.tensor([self.start], device=self.st.device))
        if index == 0:
            return float(first.item()) - FIRST_THRESHOLD_OFFSET
        return float(self.st.scores_at(torch.tensor([self.start + index - 1], device=self.st.device)).item())


def t_eer_of_curves(cm, asv, exhaustive: bool):
    """(t_eer, cm_threshold, asv_threshold) as floats, or None where undefined.

    ``cm``, ``asv``: curves of ``n`` points (k = 0 .. n - 1) with ``columns(slice)`` (the
    curve's columns at those points) and ``threshold(k)``.
    """
    if not exhaustive:
        step_asv, step_cm = asv.n // _TEER_DECIMATED, cm.n // _TEER_DECIMATED
        if step_asv > 0 and step_cm > 0:
            coarse = _tandem_search(*cm.columns(slice(None, None, step_cm)), *asv.columns(slice(None, None, step_asv)))
            if coarse is None:
                return None
            centre_asv, centre_cm = int(coarse[1]) * step_asv, int(coarse[2]) * step_cm
            a0, a1 = max(centre_asv - _TEER_WINDOW, 0), min(centre_asv + _TEER_WINDOW, asv.n)
            c0, c1 = max(centre_cm - _TEER_WINDOW, 0), min(centre_cm + _TEER_WINDOW, cm.n)
            fine = _tandem_search(*cm.columns(slice(c0, c1)), *asv.columns(slice(a0, a1)))
            if fine is None:
                return None
            return float(fine[0]), cm.threshold(c0 + int(fine[2])), asv.threshold(a0 + int(fine[1]))
    full = _tandem_search(*cm.columns(slice(None)), *asv.columns(slice(None)))
    if full is None:
        return None
    return float(full[0]), cm.threshold(int(full[2])), asv.threshold(int(full[1]))


def t_eer_of(st_cm, st_asv, exhaustive: bool):
    """Per segment: list of (t_eer, cm_threshold, asv_threshold) or None.

    ``st_cm``: two-class segments of the CM scores (bona fide = target and non-target);
    ``st_asv``: three-class segments of the ASV scores, over the same trials
    (:class:`SortedTrials`, or :class:`~spoofloss.metrics.attack.AttackTrials` for attack
    groups, whose curves are evaluated only at the points the search visits).
    """
    lacking = ((st_cm.counts == 0).any(1) | (st_asv.counts == 0).any(1)).tolist()
    if isinstance(st_cm, AttackTrials):
        def curves(g):
            return AttackCurve(st_cm, g, FIRST_THRESHOLD_OFFSET), AttackCurve(st_asv, g, FIRST_THRESHOLD_OFFSET)
    else:
        cm_cols = det_rates(st_cm)
        asv_cols = asv_curves(st_asv)
        starts_cm, starts_asv = st_cm.starts.tolist(), st_asv.starts.tolist()
        sizes_cm, sizes_asv = st_cm.counts.sum(1).tolist(), st_asv.counts.sum(1).tolist()

        def curves(g):
            return (_Curve(st_cm, starts_cm[g], starts_cm[g] + sizes_cm[g], cm_cols, (0.0, 1.0)),
                    _Curve(st_asv, starts_asv[g], starts_asv[g] + sizes_asv[g], asv_cols, (0.0, 1.0, 1.0)))
    out = []
    for g in range(st_cm.n_seg):  # the search per group; the sorts were shared
        out.append(None if lacking[g] else t_eer_of_curves(*curves(g), exhaustive))
    return out


def t_eer(
    cm_scores: TensorLike,
    asv_scores: TensorLike,
    asv_labels: TensorLike,
    *,
    exhaustive: bool = False,
) -> Tuple[float, float, float]:
    """Concurrent tandem equal error rate of a CM and an ASV system on the same trials.

    ``cm_scores`` (higher = bona fide), ``asv_scores`` (higher = target) and ``asv_labels``
    (1 target, 0 non-target, 2 spoof) hold one value per trial.  The CM curve takes
    targets and non-targets as bona fide; the ASV curve has three classes.  The t-EER is
    the tandem error rate where the tandem miss rate, the non-target false alarm rate and
    the spoof false alarm rate meet (ASVspoof 5 ``compute_teer``; see
    :func:`_tandem_search` for the exact rule).

    ``exhaustive=False`` (default) searches as ``evaluation.py`` does
    (``compute_teer_accelerated``): on curves of more than 3000 points, first every
    (n // 3000)-th point, then +-1600 points around that answer; so the number equals the
    package's.  ``exhaustive=True`` searches every point (``compute_teer`` on the whole
    curves), which can differ slightly on large sets.

    Raises ``ValueError`` where no ASV operating point qualifies (the package crashes there).

    Returns:
        ``(t_eer, cm_threshold, asv_threshold)`` as Python floats; ``t_eer`` is a fraction
        (the package prints it in percent).
    """
    cm = prepare_scores(cm_scores, "cm_scores")
    asv, lab = _prepare_asv(asv_scores, asv_labels, "asv_scores")
    same_size(cm, asv, "cm_scores", "asv_scores")
    st_cm = sort_cm(cm, lab != ASV_SPOOF)
    st_asv = sort_trials(asv, asv_codes(lab), 3)
    (result,) = t_eer_of(st_cm, st_asv, exhaustive)
    if result is None:
        raise ValueError(
            "t-EER undefined: no ASV operating point with Pmiss_asv < (Pfa_nontarget + Pfa_spoof) / 2 "
            "gives a finite crossing criterion (the ASVspoof 5 package fails on such scores too)"
        )
    return result
