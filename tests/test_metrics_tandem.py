"""Track 2 metrics (a-DCF, t-EER) against an independent float64 numpy restatement of the
ASVspoof 5 evaluation package's definitions (a_dcf.py, calculate_modules.py), written here
from the formulas: hand-made cases, then random, tied, tiny, imbalanced and realistic sets.

ASV label codes: 1 target, 0 non-target, 2 spoof.  Higher scores = more target / bona fide.
"""

import numpy as np
import pytest
import torch

from spoofloss import metrics
from spoofloss.metrics import tandem

TAR, NON, SPF = 1, 0, 2

# a-DCF weights of ASVspoof 5 Track 2: Ptar = .95 * .99, Pnon = .95 * .01, Pspoof = .05,
# Cmiss = 1, Cfa = 10, Cfa_spoof = 10
P_TAR, P_NON, P_SPF = (1 - 0.05) * 0.99, (1 - 0.05) * 0.01, 0.05
W_MISS, W_FA, W_SPF = 1 * P_TAR, 10 * P_NON, 10 * P_SPF


# ---------------------------------------------------------------------------------------
# numpy reference
# ---------------------------------------------------------------------------------------
def np_sorted_classes(tar, non, spf):
    """Scores of the three classes, class by class (target, non-target, spoof), merge-sorted."""
    every = np.concatenate([tar, non, spf]).astype(np.float64)
    cls = np.concatenate([np.zeros(len(tar)), np.ones(len(non)), np.full(len(spf), 2.0)])
    order = np.argsort(every, kind="mergesort")
    return every[order], cls[order]


def np_a_dcf(tar, non, spf, w_miss=W_MISS, w_fa=W_FA, w_spf=W_SPF):
    s, cls = np_sorted_classes(tar, non, spf)
    nt, nn, ns = len(tar), len(non), len(spf)
    p_miss = np.concatenate([[0.0], np.cumsum(cls == 0) / nt])
    p_fa_non = np.concatenate([[1.0], (nn - np.cumsum(cls == 1)) / nn])
    p_fa_spf = np.concatenate([[1.0], (ns - np.cumsum(cls == 2)) / ns])
    cost = (w_miss * p_miss + w_fa * p_fa_non + w_spf * p_fa_spf) / min(w_fa + w_spf, w_miss)
    thr = np.concatenate([[s[0] - 1e-8], s])
    i = int(np.argmin(cost))
    return float(cost[i]), float(thr[i])


def brute_a_dcf(tar, non, spf):
    """Tie-free definition: min over t in {-inf} U scores of the cost of accepting > t."""
    tar, non, spf = (np.asarray(x, np.float64) for x in (tar, non, spf))
    norm = min(W_FA + W_SPF, W_MISS)
    best = (W_FA + W_SPF) / norm
    for t in np.unique(np.concatenate([tar, non, spf])):
        best = min(best, (W_MISS * np.mean(tar <= t) + W_FA * np.mean(non > t) + W_SPF * np.mean(spf > t)) / norm)
    return best


def np_asv_curves(tar, non, spf):
    s, cls = np_sorted_classes(tar, non, spf)
    p_miss = np.concatenate([[0.0], np.cumsum(cls == 0) / len(tar)])
    p_fa_non = np.concatenate([[1.0], 1 - np.cumsum(cls == 1) / len(non)])
    p_fa_spf = np.concatenate([[1.0], 1 - np.cumsum(cls == 2) / len(spf)])
    return p_miss, p_fa_non, p_fa_spf, np.concatenate([[s[0] - 0.001], s])


def np_det(bona, spoof):
    every = np.concatenate([bona, spoof]).astype(np.float64)
    is_bona = np.concatenate([np.ones(len(bona)), np.zeros(len(spoof))])
    order = np.argsort(every, kind="mergesort")
    seen = np.cumsum(is_bona[order])
    miss = np.concatenate([[0.0], seen / len(bona)])
    fa = np.concatenate([[1.0], (len(spoof) - (np.arange(1, len(every) + 1) - seen)) / len(spoof)])
    return miss, fa, np.concatenate([[every[order][0] - 0.001], every[order]])


def np_teer_scan(cm_miss, cm_fa, asv_miss, asv_fa_non, asv_fa_spf):
    """Every ASV point j in the allowed region, every CM point i: the CM point where the
    tandem miss and false-alarm rates (rho = 1/2) are closest; then the ASV point where
    Pfa_non / Pfa_spoof is closest to Pfa_cm / (1 - Pmiss_cm).  Returns (t-EER, j, i)."""
    best, found = np.inf, None
    for j in range(len(asv_miss)):
        a, b, c = asv_miss[j], asv_fa_non[j], asv_fa_spf[j]
        if not a < 0.5 * b + 0.5 * c:
            continue
        gap = (cm_miss + (1 - cm_miss) * a) - (0.5 * (1 - cm_miss) * b + 0.5 * cm_fa * c)
        i = int(np.argmin(np.abs(gap)))
        with np.errstate(divide="ignore", invalid="ignore"):
            crit = abs(b / c - cm_fa[i] / (1 - cm_miss[i]))
        if crit < best:
            best, found = crit, (c * cm_fa[i], j, i)
    return found


def np_teer(cm, asv, lab, exhaustive=False):
    """t-EER as a fraction, with the package's coarse-to-fine search unless exhaustive."""
    cm_miss, cm_fa, cm_thr = np_det(cm[lab != SPF], cm[lab == SPF])
    a_miss, a_non, a_spf, a_thr = np_asv_curves(asv[lab == TAR], asv[lab == NON], asv[lab == SPF])
    na, nc = len(a_thr), len(cm_thr)
    if not exhaustive and na // 3000 and nc // 3000:
        da, dc = na // 3000, nc // 3000
        _, j, i = np_teer_scan(cm_miss[::dc], cm_fa[::dc], a_miss[::da], a_non[::da], a_spf[::da])
        a0, a1 = max(j * da - 1600, 0), min(j * da + 1600, na)
        c0, c1 = max(i * dc - 1600, 0), min(i * dc + 1600, nc)
        v, j, i = np_teer_scan(cm_miss[c0:c1], cm_fa[c0:c1], a_miss[a0:a1], a_non[a0:a1], a_spf[a0:a1])
        return float(v), float(cm_thr[c0 + i]), float(a_thr[a0 + j])
    v, j, i = np_teer_scan(cm_miss, cm_fa, a_miss, a_non, a_spf)
    return float(v), float(cm_thr[i]), float(a_thr[j])


def sasv_case(n, seed, kind):
    """(cm, asv, sasv, labels) with every class present."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([2, 2, 2]) * 0.9 + 0.1 / 3
    if kind == "imbalanced":
        p = np.array([0.9, 0.02, 0.08])
    lab = rng.choice([TAR, NON, SPF], size=n, p=p)
    lab[:3] = [TAR, NON, SPF]
    rng.shuffle(lab)
    tgt, spf = (lab == TAR).astype(float), (lab == SPF).astype(float)
    cm = rng.normal(size=n) + rng.uniform(1, 3) * (1 - spf)
    asv = rng.normal(size=n) + rng.uniform(1, 4) * tgt + rng.uniform(0, 2) * spf
    if kind == "ties":  # few distinct values: ties across all classes
        cm, asv = np.round(cm), np.round(asv * 2) / 2
    elif kind == "realistic":  # scores as files give them: 4 decimals
        cm, asv = np.round(cm * 3, 4), np.round(asv * 5, 4)
    sasv = np.round(0.5 * cm + 0.5 * asv, 3) if kind != "continuous" else 0.5 * cm + 0.5 * asv
    return cm, asv, sasv, lab


KINDS = ("continuous", "ties", "realistic", "imbalanced")


# ---------------------------------------------------------------------------------------
# the reference itself, on hand-made cases
# ---------------------------------------------------------------------------------------
def test_reference_a_dcf_hand():
    # target {3}, non-target {1}, spoof {2}.  Sorted 1n 2s 3t; points (Pmiss, Pfa_non, Pfa_spf):
    # k0 (0, 1, 1) k1 (0, 0, 1) k2 (0, 0, 0) k3 (1, 0, 0) -> the minimum 0 at k2, threshold 2
    assert np_a_dcf([3.0], [1.0], [2.0]) == (0.0, 2.0)
    # all equal: the stable order target, non-target, spoof: k1 rejects the target first ->
    # cost W_MISS + W_FA + W_SPF > k0's W_FA + W_SPF; k0 wins: 1.0 at 5 - 1e-8
    norm = min(W_FA + W_SPF, W_MISS)
    assert np_a_dcf([5.0], [5.0], [5.0]) == ((W_FA + W_SPF) / norm, 5.0 - 1e-8)


def test_reference_teer_hand():
    # ASV separates (target 3 > spoof 2 > non-target 1), CM separates (bona fide 1 > spoof 0):
    # at the ASV point after the non-target (Pmiss 0, Pfa_non 0, Pfa_spf 1), the CM point
    # after the spoof (Pmiss_cm 0, Pfa_cm 0) closes every gap: t-EER = 1 * 0 = 0
    cm = np.array([1.0, 1.0, 0.0])
    asv = np.array([3.0, 1.0, 2.0])
    lab = np.array([TAR, NON, SPF])
    assert np_teer(cm, asv, lab, exhaustive=True)[0] == 0.0


# ---------------------------------------------------------------------------------------
# the library against the reference
# ---------------------------------------------------------------------------------------
def test_a_dcf_hand():
    assert metrics.a_dcf(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([TAR, NON, SPF])) == (0.0, 2.0)
    assert metrics.a_dcf_cost_model() == dict(Ptar=P_TAR, Pnon=P_NON, Pspoof=P_SPF, Cmiss=1.0, Cfa=10.0,
                                              Cfa_spoof=10.0)


@pytest.mark.parametrize("n", [3, 4, 7, 20, 100, 1001, 5000])
@pytest.mark.parametrize("kind", KINDS)
def test_a_dcf_against_reference(n, kind):
    cm, asv, sasv, lab = sasv_case(n, n * 7 + len(kind), kind)
    parts = [sasv[lab == c] for c in (TAR, NON, SPF)]
    want = np_a_dcf(*parts)
    got = metrics.a_dcf(torch.from_numpy(sasv), torch.from_numpy(lab))
    assert got == want
    # float32 scores: the same definition on the rounded values
    s32 = sasv.astype(np.float32)
    assert metrics.a_dcf(torch.from_numpy(s32), torch.from_numpy(lab)) == np_a_dcf(*[s32[lab == c] for c in (TAR, NON, SPF)])
    if n <= 1001:
        assert abs(got[0] - brute_a_dcf(*parts)) <= 1e-12
    # another cost model (the a-DCF paper's defaults)
    model = dict(Ptar=0.9, Pnon=0.05, Pspoof=0.05, Cmiss=1, Cfa=10, Cfa_spoof=20)
    assert metrics.a_dcf(torch.from_numpy(sasv), torch.from_numpy(lab), cost_model=model)[0] == \
        np_a_dcf(*parts, w_miss=0.9, w_fa=0.5, w_spf=1.0)[0]


@pytest.mark.parametrize("n", [3, 5, 30, 400, 2998, 3500, 7001, 20000])
@pytest.mark.parametrize("kind", KINDS)
def test_t_eer_against_reference(n, kind):
    # 2998 + 1 points: one search; 3500: coarse on every point, then a window; 7001 and
    # 20000: decimated coarse search (steps 2 and 6), then the window
    cm, asv, _, lab = sasv_case(n, 3 * n + len(kind), kind)
    want = np_teer(cm, asv, lab)
    got = metrics.t_eer(torch.from_numpy(cm), torch.from_numpy(asv), torch.from_numpy(lab))
    assert got == want
    if n <= 3500:
        assert metrics.t_eer(torch.from_numpy(cm), torch.from_numpy(asv), torch.from_numpy(lab),
                             exhaustive=True) == np_teer(cm, asv, lab, exhaustive=True)


def test_t_eer_float32_and_label_dtypes():
    cm, asv, _, lab = sasv_case(600, 5, "realistic")
    cm32, asv32 = cm.astype(np.float32), asv.astype(np.float32)
    want = np_teer(cm32.astype(np.float64), asv32.astype(np.float64), lab)
    for lab_t in (torch.from_numpy(lab), torch.from_numpy(lab).to(torch.int8).reshape(-1, 1),
                  torch.from_numpy(lab).double()):
        assert metrics.t_eer(torch.from_numpy(cm32), torch.from_numpy(asv32), lab_t) == want


def test_track2_min_tdcf_is_the_package_constant_rates():
    cm, _, _, lab = sasv_case(800, 1, "realistic")
    rates = metrics.ASVSPOOF5_ASV_ERROR_RATES
    got = metrics.min_tdcf(torch.from_numpy(cm), torch.from_numpy((lab != SPF).astype(np.int64)), **rates)
    metric = metrics.DetectionMetrics()
    metric.update(torch.from_numpy(cm), asv_labels=torch.from_numpy(lab))
    out = metric.compute()
    assert (out["min_tdcf"], out["min_tdcf_threshold"]) == got


def test_tandem_search_without_allowed_point():
    # an ASV system that misses every target is never in the allowed region
    ones = torch.ones(4, dtype=torch.float64)
    assert tandem._tandem_search(torch.linspace(0, 1, 4, dtype=torch.float64), 1 - torch.linspace(0, 1, 4,
                                 dtype=torch.float64), ones, ones * 0.5, ones * 0.5) is None


@pytest.mark.parametrize(
    "fn, args, pattern",
    [
        ("a_dcf", ([0.1, 0.2, 0.3], [1, 0, 3]), r"asv_labels must be 1 \(target\).*asv_labels\[2\] = 3"),
        ("a_dcf", ([0.1, 0.2, 0.3], [1, 1, 2]), r"no non-target trial"),
        ("a_dcf", ([0.1, float("nan"), 0.3], [1, 0, 2]), r"scores must be finite.*scores\[1\] = nan"),
        ("a_dcf", ([0.1, 0.2], [1, 0, 2]), r"scores and asv_labels must have the same number"),
        ("t_eer", ([0.1, 0.2, 0.3], [0.1, 0.2], [1, 0, 2]), r"asv_scores and asv_labels"),
        ("t_eer", ([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [1, 0, 0]), r"no spoof trial"),
        ("t_eer", ([0.1, 0.2, float("inf")], [0.1, 0.2, 0.3], [1, 0, 2]), r"cm_scores must be finite"),
    ],
)
def test_bad_track2_input(fn, args, pattern):
    with pytest.raises(ValueError, match=pattern):
        getattr(metrics, fn)(*[torch.tensor(a) for a in args])


def test_a_dcf_bad_cost_model():
    with pytest.raises(ValueError, match="unknown key"):
        metrics.a_dcf(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1, 0, 2]), cost_model={"Cfa_cm": 1})
    with pytest.raises(ValueError, match=r"cost_model\['Cmiss'\] must be >= 0"):
        metrics.a_dcf(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1, 0, 2]), cost_model={"Cmiss": -1})


def dyadic_curves(rng, n_cm, n_asv):
    """Monotone curves of multiples of 1/8 (exact in float64): many exactly equal tandem
    gaps on both sides of the crossing, and flat stretches."""
    def rising(n):
        return np.sort(rng.integers(0, 9, n)) / 8.0
    cm_miss, cm_fa = rising(n_cm), rising(n_cm)[::-1].copy()
    asv_miss = rising(n_asv)
    return cm_miss, cm_fa, asv_miss, rising(n_asv)[::-1].copy(), rising(n_asv)[::-1].copy()


@pytest.mark.parametrize("seed", range(40))
def test_tandem_search_ties_and_flat_stretches(seed):
    rng = np.random.default_rng(seed)
    curves = dyadic_curves(rng, int(rng.integers(2, 60)), int(rng.integers(2, 60)))
    want = np_teer_scan(*curves)
    got = tandem._tandem_search(*[torch.from_numpy(c) for c in curves])
    if want is None:
        assert got is None
    else:
        assert (float(got[0]), int(got[1]), int(got[2])) == (float(want[0]), want[1], want[2])


@pytest.mark.parametrize("seed", range(6))
def test_coarse_to_fine_search_on_long_curves(seed):
    # curves long enough for the decimated search (steps 2 .. 4), whose answer can sit far
    # from the coarse one: the window of +-1600 points decides
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(6500, 12500))
    cm, asv, _, lab = sasv_case(n, 100 + seed, "ties")
    assert metrics.t_eer(torch.from_numpy(cm), torch.from_numpy(asv), torch.from_numpy(lab)) == np_teer(cm, asv, lab)


# ---------------------------------------------------------------------------------------
# the two details of the package's search that the tests above need not meet
# ---------------------------------------------------------------------------------------
def test_tandem_search_equal_gaps_either_side_of_the_crossing():
    # One ASV point (Pmiss 0, Pfa_non 1, Pfa_spoof 1) and a CM curve with Pfa = 1 - Pmiss:
    # the tandem gap is h = Pmiss - 0.5 (1 - Pmiss) - 0.5 Pfa = 2 Pmiss - 1 = -1, -0.5, 0.5, 1
    # (exact).  |h| is 0.5 on both sides of the crossing: np.argmin takes the earlier point
    # (i = 1), t-EER = Pfa_spoof * Pfa_cm = 0.75 (the later point would give 0.25).
    cm_miss = np.array([0.0, 0.25, 0.75, 1.0])
    curves = (cm_miss, 1 - cm_miss, np.array([0.0]), np.array([1.0]), np.array([1.0]))
    assert np_teer_scan(*curves) == (0.75, 0, 1)
    got = tandem._tandem_search(*[torch.from_numpy(c) for c in curves])
    assert (float(got[0]), int(got[1]), int(got[2])) == (0.75, 0, 1)


def test_t_eer_tiny_integer_scores():
    # a handful of trials with scores 0 .. 3: exact ties of the tandem gaps on both sides of
    # the crossing are common (seed 8: the package's 0.5 against 0.25 with the later point)
    for seed in range(200):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(4, 9))
        lab = rng.choice([TAR, NON, SPF], n)
        lab[:3] = [TAR, NON, SPF]
        cm, asv = rng.integers(0, 4, n).astype(float), rng.integers(0, 4, n).astype(float)
        want = np_teer(cm, asv, lab, exhaustive=True)
        assert metrics.t_eer(torch.from_numpy(cm), torch.from_numpy(asv), torch.from_numpy(lab)) == want, seed


class ArrayCurve:
    """Curve columns given as arrays (k = 0 .. n - 1); the threshold of point k is k + offset."""

    def __init__(self, offset, *cols):
        self.cols, self.offset, self.n = [torch.from_numpy(c) for c in cols], offset, len(cols[0])

    def columns(self, which):
        return [c[which] for c in self.cols]

    def threshold(self, k):
        return float(k) + self.offset


def np_teer_accelerated(cm_miss, cm_fa, asv_miss, asv_non, asv_spf):
    """compute_teer_accelerated on given curves: (t-EER, j, i) with the package's constants."""
    na, nc = len(asv_miss), len(cm_miss)
    da, dc = na // 3000, nc // 3000
    _, j, i = np_teer_scan(cm_miss[::dc], cm_fa[::dc], asv_miss[::da], asv_non[::da], asv_spf[::da])
    a0, a1 = max(j * da - 1600, 0), min(j * da + 1600, na)
    c0, c1 = max(i * dc - 1600, 0), min(i * dc + 1600, nc)
    v, j, i = np_teer_scan(cm_miss[c0:c1], cm_fa[c0:c1], asv_miss[a0:a1], asv_non[a0:a1], asv_spf[a0:a1])
    return v, a0 + j, c0 + i


def test_coarse_to_fine_window_is_1600_points_each_side():
    # ASV curve of 9000 points (coarse search on every 3rd), CM curve of 3000 (every point).
    # The CM curve keeps Pfa_cm / (1 - Pmiss_cm) = 1/2, so the crossing criterion of ASV
    # point j is |Pfa_non / Pfa_spoof - 1/2| = |d_j|: d = 0.2 everywhere but at three points.
    # The coarse search sees j = 4500 (|d| = 0.01); the window [4500 - 1600, 4500 + 1600)
    # then holds j = 2900 (|d| = 0.001), its first point, but not j = 6100 (d = 0), just
    # past its end (neither is on the coarse grid).  A window of 1599 points would answer
    # 4500, one of 1601 points 6100.  Pmiss_asv = 0; Pfa_spoof and Pfa_non never rise.
    n_asv, n_cm, ratio = 9000, 3000, 0.5
    d = np.full(n_asv, 0.2)
    d[[2900, 4500, 6100]] = [0.001, -0.01, 0.0]
    spf = np.ones(n_asv)
    for k in np.flatnonzero(np.diff(d) > 0):  # Pfa_non = Pfa_spoof (1/2 + d) must not rise
        spf[k + 1:] *= 0.5
    non = spf * (ratio + d)
    assert np.all(np.diff(non) <= 0) and np.all(np.diff(spf) <= 0)
    cm_miss = np.arange(n_cm) / (n_cm - 1)
    curves = (cm_miss, ratio * (1 - cm_miss), np.zeros(n_asv), non, spf)
    value, j, i = np_teer_accelerated(*curves)
    assert j == 2900
    got = tandem.t_eer_of_curves(ArrayCurve(0.5, *curves[:2]), ArrayCurve(0.25, *curves[2:]), exhaustive=False)
    assert got == (value, i + 0.5, j + 0.25)
    # the exhaustive search finds the better point the window leaves out
    full = tandem.t_eer_of_curves(ArrayCurve(0.5, *curves[:2]), ArrayCurve(0.25, *curves[2:]), exhaustive=True)
    assert full[2] == 6100.25
