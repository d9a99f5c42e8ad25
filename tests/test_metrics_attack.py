"""Per-attack results (grouping="attack", metrics/attack.py) bit for bit against the same
metrics on materialised groups: every attack's group built as its own set of trials (all
bona fide trials + that attack's spoof trials) and scored as a *condition* group, whose
code sorts each group's own trials (the way per-attack results were computed before,
with the bona fide trials repeated once per attack).  Random, tied, tiny, imbalanced and
degenerate sets; then the building blocks (range minima, the crossing search) against
brute force."""

import math

import numpy as np
import pytest
import torch

from spoofloss import metrics
from spoofloss.metrics import attack

TAR, NON, SPF = 1, 0, 2

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]),
]


def same(got, want, where):
    """Every key of ``want`` equal in ``got``, bit for bit (NaN equals NaN)."""
    assert set(got) == set(want), where
    for k, v in want.items():
        g = got[k]
        if isinstance(v, float) and math.isnan(v):
            assert isinstance(g, float) and math.isnan(g), (where, k, g)
        else:
            assert g == v and type(g) is type(v), (where, k, g, v)


def materialised(fields, labels_bf, attack_ids):
    """(fields, groups) with every attack's group as its own trials: the shared trials
    repeated once per attack, then that attack's spoof trials; ``groups`` its attack id."""
    names = sorted(set(attack_ids[~labels_bf].tolist()))
    parts, groups = {k: [] for k in fields}, []
    for a in names:
        keep = labels_bf | (attack_ids == a)
        for k, v in fields.items():
            parts[k].append(v[keep])
        groups.append(np.full(int(keep.sum()), a))
    return {k: np.concatenate(v) for k, v in parts.items()}, np.concatenate(groups)


def per_attack_both_ways(fields, labels_bf, attack_ids, device="cpu", **kwargs):
    t = lambda x: torch.from_numpy(x).to(device)  # noqa: E731
    metric = metrics.DetectionMetrics(grouping="attack", **kwargs)
    metric.update(groups=t(attack_ids), **{k: t(v) for k, v in fields.items()})
    got = metric.compute()
    rep_fields, rep_groups = materialised(fields, labels_bf, attack_ids)
    metric = metrics.DetectionMetrics(grouping="condition", **kwargs)
    metric.update(groups=t(rep_groups), **{k: t(v) for k, v in rep_fields.items()})
    want = metric.compute()
    return got, want


# ---------------------------------------------------------------------------------------
# Track 1
# ---------------------------------------------------------------------------------------
def track1_case(seed, kind):
    rng = np.random.default_rng(seed)
    n = {"tiny": int(rng.integers(3, 12)), "large": 20000}.get(kind, int(rng.integers(30, 3000)))
    p_bf = {"few_bonafide": 0.02, "few_spoof": 0.97}.get(kind, rng.uniform(0.1, 0.7))
    lab = rng.random(n) < p_bf
    lab[:2] = [False, True]
    s = rng.normal(size=n) + rng.uniform(0, 3) * lab
    if kind in ("ties", "large"):
        s = np.round(s * 4) / 4
    elif kind == "heavy_ties":  # a handful of values, shared by both classes
        s = np.round(s)
    elif kind == "constant":
        s = np.zeros(n)
    n_attacks = int(rng.choice([1, 2, 5, 32]))
    ids = rng.integers(0, n_attacks, n) * 7 - 20  # sparse, negative ids
    if kind == "single_spoof":  # one attack with exactly one spoof trial
        ids[np.flatnonzero(~lab)[0]] = 999
    elif kind == "wide_ids":  # ids far apart: found by a sort, not a table
        ids = rng.choice(np.array([-2**40, 5, 2**41]), n)
    return s, lab, ids


KINDS1 = ("continuous", "ties", "heavy_ties", "tiny", "few_bonafide", "few_spoof", "constant", "single_spoof",
          "wide_ids")


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("kind", KINDS1)
@pytest.mark.parametrize("seed", range(3))
def test_track1_per_attack_equals_materialised_groups(kind, seed, dtype):
    s, lab, ids = track1_case(seed * 31 + len(kind), kind)
    s = s.astype(dtype)
    got, want = per_attack_both_ways(dict(scores=s, labels=lab.astype(np.int64)), lab, ids)
    assert list(got["groups"]) == list(want["groups"]) == sorted(set(ids[~lab].tolist()))
    for a in got["groups"]:
        same(got["groups"][a], want["groups"][a], (kind, a))
    plain = metrics.DetectionMetrics()
    plain.update(torch.from_numpy(s), torch.from_numpy(lab))
    same({k: v for k, v in got.items() if k != "groups"}, plain.compute(), "pooled")


@pytest.mark.parametrize("device", DEVICES)
def test_track1_per_attack_large_and_on_device(device):
    s, lab, ids = track1_case(5, "large")
    got, want = per_attack_both_ways(dict(scores=s.astype(np.float32), labels=lab.astype(np.int64)), lab, ids,
                                     device=device)
    for a in got["groups"]:
        same(got["groups"][a], want["groups"][a], a)


def test_track1_per_attack_hand_case():
    # bona fide 1, 2, 3, 4; attack 7: spoof 2 (tied with a bona fide trial); attack 8:
    # spoofs 0.5 and 4.5.  Attack 7 sorted 1b 2b 2s 3b 4b, points (miss, fa): k0 (0, 1)
    # k1 (1/4, 1) k2 (1/2, 1) k3 (1/2, 0) k4 (3/4, 0) k5 (1, 0).  |miss - fa| is 1/2 at k2
    # and k3: the earlier wins, EER (1/2 + 1)/2 at 2 (the tied bona fide trial).  The cost
    # 0.95 miss + 0.5 fa is smallest at k3 (0.475): minDCF about 0.475 / 0.5 at 2 (the spoof).
    s = torch.tensor([1.0, 2.0, 3.0, 4.0, 2.0, 0.5, 4.5])
    lab = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    metric = metrics.DetectionMetrics(grouping="attack")
    metric.update(s, lab, groups=torch.tensor([0, 0, 0, 0, 7, 8, 8]))
    out = metric.compute()["groups"]
    assert (out[7]["eer"], out[7]["eer_threshold"]) == (0.75, 2.0)
    p_tar = 1 - 0.05  # compute_mindcf: Cmiss miss p_target + Cfa fa (1 - p_target), / min(...)
    want = (1 * 0.5 * p_tar + 10 * 0.0 * (1 - p_tar)) / min(1 * p_tar, 10 * (1 - p_tar))
    assert (out[7]["min_dcf"], out[7]["min_dcf_threshold"]) == (want, 2.0)
    assert (out[7]["n_bonafide"], out[7]["n_spoof"]) == (4, 1)
    # attack 8 sorted 0.5s 1b 2b 3b 4b 4.5s: k1 (0, 1/2) k2 (1/4, 1/2) k3 (1/2, 1/2): EER 1/2 at 2
    assert (out[8]["eer"], out[8]["eer_threshold"]) == (0.5, 2.0)


def test_act_dcf_per_attack_scores_on_the_bayes_threshold():
    # compute_actDCF: bona fide missed below t, spoof accepted at or above t = -log(1.9)
    t = -math.log(1 * (1 - 0.05) / (10 * 0.05))
    s = torch.tensor([t, 2.0, -3.0, 1.0, t, -2.0, t - 1e-12], dtype=torch.float64)
    lab = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    metric = metrics.DetectionMetrics(grouping="attack")
    metric.update(s, lab, groups=torch.tensor([0, 0, 0, 0, 4, 4, 9]))
    out = metric.compute()["groups"]
    norm = min(10 * 0.05, 1 * (1 - 0.05))
    # attack 4: 1 of 4 bona fide missed (-3), 1 of 2 spoofs accepted (the one on t)
    assert out[4]["act_dcf"] == (1 * (1 - 0.05) * (1 / 4) + 10 * 0.05 * (1 / 2)) / norm
    # attack 9: its spoof just below t is rejected
    assert out[9]["act_dcf"] == (1 * (1 - 0.05) * (1 / 4) + 10 * 0.05 * 0.0) / norm
    for a, keep in ((4, [0, 1, 2, 3, 4, 5]), (9, [0, 1, 2, 3, 6])):
        assert (out[a]["act_dcf"], out[a]["act_dcf_threshold"]) == metrics.act_dcf(s[keep], lab[keep])


def test_min_dcf_per_attack_tie_with_the_first_point():
    # p_spoof 1/2, c_miss = c_fa = 1: rejecting everything (the last point) costs what
    # accepting everything (k = 0) costs.  Attack 5 outscores the bona fide trials, so no
    # point is cheaper: the first minimum is k = 0, threshold below the smallest score.
    s = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.5, 2.5])
    lab = torch.tensor([1, 1, 0, 0, 0, 0])
    metric = metrics.DetectionMetrics(grouping="attack", p_spoof=0.5, c_miss=1.0, c_fa=1.0)
    metric.update(s, lab, groups=torch.tensor([0, 0, 5, 5, 6, 6]))
    out = metric.compute()["groups"]
    assert (out[5]["min_dcf"], out[5]["min_dcf_threshold"]) == (1.0, 1.0 - 0.001)
    for a, keep in ((5, [0, 1, 2, 3]), (6, [0, 1, 4, 5])):
        want = metrics.min_dcf(s[keep], lab[keep], p_spoof=0.5, c_miss=1.0, c_fa=1.0)
        assert (out[a]["min_dcf"], out[a]["min_dcf_threshold"]) == want


def test_a_dcf_per_attack_tie_with_the_first_point():
    # a cost model where rejecting everything (w_miss = 0.5) costs what accepting
    # everything (w_fa + w_spoof = 0.25 + 0.25) costs, in exact binary fractions.  Attack
    # 3 sorted 0t 1t 2s 4t 4n: costs 1, 4/3, 5/3, 7/6, 3/2, 1: the first point (k = 0) wins.
    model = dict(Ptar=0.5, Pnon=0.25, Pspoof=0.25, Cmiss=1, Cfa=1, Cfa_spoof=1)
    sasv = torch.tensor([1.0, 0.0, 4.0, 4.0, 2.0, 5.0])
    lab = torch.tensor([TAR, TAR, TAR, NON, SPF, SPF])
    metric = metrics.DetectionMetrics(a_dcf_cost_model=model)
    metric.update(groups=torch.tensor([0, 0, 0, 0, 3, 8]), asv_labels=lab, sasv_scores=sasv)
    out = metric.compute()["groups"]
    assert (out[3]["a_dcf"], out[3]["a_dcf_threshold"]) == (1.0, 0.0 - 1e-8)
    for a, keep in ((3, [0, 1, 2, 3, 4]), (8, [0, 1, 2, 3, 5])):
        assert (out[a]["a_dcf"], out[a]["a_dcf_threshold"]) == metrics.a_dcf(sasv[keep], lab[keep], cost_model=model)


# ---------------------------------------------------------------------------------------
# Track 2
# ---------------------------------------------------------------------------------------
def track2_case(seed, kind, n=None):
    rng = np.random.default_rng(seed)
    n = n or int(rng.choice([12, 60, 400, 2500]))
    p = rng.dirichlet([2, 2, 2]) * 0.9 + 0.1 / 3
    if kind == "imbalanced":
        p = np.array([0.9, 0.02, 0.08])
    lab = rng.choice([TAR, NON, SPF], size=n, p=p)
    lab[:3] = [TAR, NON, SPF]
    cm = rng.normal(size=n) + 2 * (lab != SPF)
    asv = rng.normal(size=n) + 3 * (lab == TAR) + 1.2 * (lab == SPF)
    if kind == "ties":
        cm, asv = np.round(cm * 2) / 2, np.round(asv * 2) / 2
    elif kind == "heavy_ties":
        cm, asv = np.round(cm), np.round(asv)
    sasv = np.round(0.5 * cm + 0.5 * asv, 1 if kind != "continuous" else 6)
    ids = rng.integers(0, int(rng.choice([1, 3, 9])), n)
    return dict(scores=cm, asv_scores=asv, sasv_scores=sasv, asv_labels=lab), lab != SPF, ids


@pytest.mark.parametrize("exhaustive", [False, True])
@pytest.mark.parametrize("kind", ["continuous", "ties", "heavy_ties", "imbalanced"])
@pytest.mark.parametrize("seed", range(3))
def test_track2_per_attack_equals_materialised_groups(kind, seed, exhaustive):
    fields, shared, ids = track2_case(seed * 13 + len(kind), kind)
    got, want = per_attack_both_ways(fields, shared, ids, t_eer_exhaustive=exhaustive)
    for a in got["groups"]:
        same(got["groups"][a], want["groups"][a], (kind, a))


@pytest.mark.parametrize("seed", range(2))
def test_track2_per_attack_coarse_to_fine_t_eer(seed):
    # groups of ~8000 trials: curves searched on every (n // 3000)-th point, then a window
    fields, shared, ids = track2_case(50 + seed, "ties", n=14000)
    ids = ids % 2
    got, want = per_attack_both_ways(fields, shared, ids)
    for a in got["groups"]:
        same(got["groups"][a], want["groups"][a], a)


def test_track2_sasv_only_per_attack():
    fields, shared, ids = track2_case(7, "ties", n=3000)
    fields = dict(sasv_scores=fields["sasv_scores"], asv_labels=fields["asv_labels"])
    got, want = per_attack_both_ways(fields, shared, ids)
    for a in got["groups"]:
        same(got["groups"][a], want["groups"][a], a)


def test_min_tdcf_per_attack_counts_each_group_distinct_scores():
    # CM scores: bona fide 0 or 1; attack 0's spoofs tie with them (2 distinct values in
    # its group: NaN), attack 1 has a third value (3 distinct: a number)
    rng = np.random.default_rng(3)
    lab = np.array([TAR] * 40 + [NON] * 30 + [SPF] * 30)
    cm = rng.integers(0, 2, lab.size).astype(np.float64)
    ids = np.zeros(lab.size, np.int64)
    ids[85:] = 1
    cm[85:] = 0.5
    fields = dict(scores=cm, asv_labels=lab)
    got, want = per_attack_both_ways(fields, lab != SPF, ids)
    assert math.isnan(got["groups"][0]["min_tdcf"]) and not math.isnan(got["groups"][1]["min_tdcf"])
    for a in got["groups"]:
        same(got["groups"][a], want["groups"][a], a)


def test_a_dcf_per_attack_rounding_ties():
    # 99 targets and 10 non-targets: with the Track 2 weights a target step (w_miss / 99)
    # and a non-target step (w_fa / 10) are equal in real arithmetic, so distinct points
    # of a run have shared costs that differ by rounding only; the first point whose
    # *rounded* cost is the minimum is the package's (not the first minimum of the shared
    # part before the spoof term is added).  About 1 seed in 50 has such a group.
    t = torch.from_numpy
    for seed in range(300):
        rng = np.random.default_rng(seed)
        lab = np.array([TAR] * 99 + [NON] * 10 + [SPF] * int(rng.integers(1, 6)))
        sasv = np.round(rng.normal(size=lab.size) + 1.0 * (lab == TAR), 1)
        ids = rng.integers(0, 2, lab.size)
        metric = metrics.DetectionMetrics()
        metric.update(groups=t(ids), asv_labels=t(lab), sasv_scores=t(sasv))
        out = metric.compute()["groups"]
        for a, r in out.items():
            keep = (lab != SPF) | (ids == a)
            assert (r["a_dcf"], r["a_dcf_threshold"]) == metrics.a_dcf(t(sasv[keep]), t(lab[keep])), (seed, a)


@pytest.mark.parametrize("batches", [1, 3])
def test_compute_twice_leaves_the_recorded_trials_intact(batches):
    fields, _, ids = track2_case(11, "ties", n=600)
    metric = metrics.DetectionMetrics()
    for part in np.array_split(np.arange(600), batches):
        metric.update(groups=torch.from_numpy(ids[part]), **{k: torch.from_numpy(v[part]) for k, v in fields.items()})
    recorded = {k: [x.clone() for x in v] for k, v in metric._data.items()}
    first, second = metric.compute(), metric.compute()
    for a in first["groups"]:
        same(second["groups"][a], first["groups"][a], a)
    for k, v in metric._data.items():
        assert all(torch.equal(x, y) for x, y in zip(v, recorded[k])), k


# ---------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 33, 100, 1000])
def test_range_min_against_brute_force(n):
    rng = np.random.default_rng(n)
    values = rng.integers(-5, 6, n).astype(np.float64)  # many equal values
    rmq = attack.RangeMin(torch.from_numpy(values))
    if n <= 40:
        pairs = np.array([(lo, hi) for lo in range(n) for hi in range(lo, n)])
    else:
        lo = rng.integers(0, n, 3000)
        pairs = np.stack([lo, lo + (rng.random(3000) ** 3 * (n - lo)).astype(np.int64)], 1)
        pairs[:, 1] = np.minimum(pairs[:, 1], n - 1)
    lo, hi = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    want = np.array([values[a:b + 1].min() for a, b in pairs])
    assert np.array_equal(rmq(lo, hi).numpy(), want)
    # the first index in each range whose value is at most a bound met in the range
    bound = torch.from_numpy(np.array([values[rng.integers(a, b + 1)] for a, b in pairs]))
    got = rmq.first_at_most(lo, hi, lambda x, rows: x <= bound[rows])
    want_first = np.array([a + int(np.flatnonzero(values[a:b + 1] <= c)[0]) for (a, b), c in zip(pairs, bound.numpy())])
    assert np.array_equal(got.numpy(), want_first)


@pytest.mark.parametrize("m", [1, 2, 3, 7, 10, 99, 1000, 12345])
def test_first_at_least_equals_searchsorted(m):
    miss = torch.arange(m + 1, dtype=torch.float64).div_(float(m))
    rng = np.random.default_rng(m)
    fa = [torch.from_numpy(rng.random(500)), miss, torch.tensor([0.0, 1.0, 0.5, 1 / 3, 2 / 3])]
    for n_spoof in (1, 2, 3, 7, 10, 99, m, 3 * m + 1):  # the rates a spoof count takes
        s = torch.arange(n_spoof + 1, dtype=torch.float64)
        fa.append(torch.sub(float(n_spoof), s).div_(float(n_spoof)))
    fa = torch.cat(fa)
    assert torch.equal(attack.first_at_least(fa, float(m)), torch.searchsorted(miss, fa))


def test_floor_log2():
    x = torch.tensor([1, 2, 3, 4, 7, 8, 9, 2**31 - 1, 2**31, 2**52 - 1, 2**52])
    assert attack.floor_log2(x).tolist() == [int(v).bit_length() - 1 for v in x.tolist()]
