"""DetectionMetrics with groups and with Track 2 fields: every per-group result equals a
single call on that group's trials; streaming in batches equals one update; update() never
synchronises."""

import math

import numpy as np
import pytest
import torch

from spoofloss import metrics

TAR, NON, SPF = 1, 0, 2
TOL = 1e-12

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]),
]


def cm_case(n, seed, ties):
    rng = np.random.default_rng(seed)
    lab = (rng.random(n) < rng.uniform(0.1, 0.6)).astype(np.int64)
    lab[:2] = [0, 1]
    s = rng.normal(size=n) + 1.5 * lab
    if ties:
        s = np.round(s * 2) / 2
    attack = rng.integers(0, 7, n) * 3 + 5  # sparse ids 5, 8, ... 23
    return s, lab, attack


def single(s, lab):
    ts, tl = torch.from_numpy(s), torch.from_numpy(lab)
    e, et = metrics.eer(ts, tl)
    d, dt = metrics.min_dcf(ts, tl)
    a, at = metrics.act_dcf(ts, tl)
    return dict(eer=e, eer_threshold=et, min_dcf=d, min_dcf_threshold=dt, act_dcf=a, act_dcf_threshold=at,
                cllr=metrics.cllr(ts, tl), n_bonafide=int(lab.sum()), n_spoof=int((1 - lab).sum()))


def assert_same(got, want):
    assert set(want) <= set(got)
    for k, v in want.items():
        if k == "cllr":  # sums in another order: equal to rounding
            assert abs(got[k] - v) <= TOL * max(1.0, abs(v)), k
        else:
            assert got[k] == v, (k, got[k], v)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, ties", [(50, True), (3000, False), (20000, True)])
def test_attack_groups_equal_single_calls(device, n, ties):
    s, lab, attack = cm_case(n, n, ties)
    metric = metrics.DetectionMetrics(grouping="attack")
    metric.update(torch.from_numpy(s).to(device), torch.from_numpy(lab).to(device),
                  groups=torch.from_numpy(attack).to(device))
    out = metric.compute()
    assert_same(out, single(s, lab))  # pooled keys unchanged by grouping
    spoof_attacks = sorted(set(attack[lab == 0].tolist()))
    assert list(out["groups"]) == spoof_attacks
    for a in spoof_attacks:
        keep = (lab == 1) | (attack == a)  # every bona fide trial + this attack's spoofs
        assert_same(out["groups"][a], single(s[keep], lab[keep]))


@pytest.mark.parametrize("n, ties", [(60, True), (5000, False)])
def test_condition_groups_equal_single_calls(n, ties):
    s, lab, codec = cm_case(n, n + 1, ties)
    metric = metrics.DetectionMetrics(grouping="condition")
    metric.update(torch.from_numpy(s), torch.from_numpy(lab), groups=torch.from_numpy(codec))
    out = metric.compute()
    for c in sorted(set(codec.tolist())):
        keep = codec == c
        if lab[keep].min() == lab[keep].max():  # a class missing: NaN, counts kept
            assert math.isnan(out["groups"][c]["eer"])
            continue
        assert_same(out["groups"][c], single(s[keep], lab[keep]))


def test_condition_group_lacking_a_class_is_nan():
    s = torch.tensor([0.1, 0.9, 0.3, 0.2, 0.8])
    lab = torch.tensor([0, 1, 0, 0, 1])
    groups = torch.tensor([0, 0, 1, 1, 0])  # group 1 holds spoof trials only
    metric = metrics.DetectionMetrics(grouping="condition")
    metric.update(s, lab, groups)
    out = metric.compute()["groups"]
    assert math.isnan(out[1]["eer"]) and math.isnan(out[1]["min_dcf"])
    assert (out[1]["n_bonafide"], out[1]["n_spoof"]) == (0, 2)
    assert out[0]["eer"] == metrics.eer(s[groups == 0], lab[groups == 0])[0]


def sasv_case(n, seed):
    rng = np.random.default_rng(seed)
    lab = rng.choice([TAR, NON, SPF], size=n, p=[0.35, 0.3, 0.35])
    lab[:3] = [TAR, NON, SPF]
    cm = np.round(rng.normal(size=n) + 2 * (lab != SPF), 3)
    asv = np.round(rng.normal(size=n) + 3 * (lab == TAR) + 1.2 * (lab == SPF), 3)
    sasv = np.round(0.5 * cm + 0.5 * asv, 3)
    attack = rng.integers(0, 4, n)
    return cm, asv, sasv, lab, attack


def track2_single(cm, asv, sasv, lab):
    t = torch.from_numpy
    a, a_thr = metrics.a_dcf(t(sasv), t(lab))
    tdcf, tdcf_thr = metrics.min_tdcf(t(cm), t((lab != SPF).astype(np.int64)), **metrics.ASVSPOOF5_ASV_ERROR_RATES)
    te, te_cm, te_asv = metrics.t_eer(t(cm), t(asv), t(lab))
    return dict(a_dcf=a, a_dcf_threshold=a_thr, min_tdcf=tdcf, min_tdcf_threshold=tdcf_thr, t_eer=te,
                t_eer_cm_threshold=te_cm, t_eer_asv_threshold=te_asv, n_target=int((lab == TAR).sum()),
                n_nontarget=int((lab == NON).sum()), n_spoof=int((lab == SPF).sum()))


@pytest.mark.parametrize("n", [40, 4000, 13000])
def test_track2_pooled_and_per_attack_equal_single_calls(n):
    cm, asv, sasv, lab, attack = sasv_case(n, n)
    metric = metrics.DetectionMetrics()
    t = torch.from_numpy
    # in batches, with the CM labels left to the ASV labels
    for i in range(0, n, 997):
        sl = slice(i, i + 997)
        metric.update(t(cm[sl]), groups=t(attack[sl]), asv_scores=t(asv[sl]), asv_labels=t(lab[sl]),
                      sasv_scores=t(sasv[sl]))
    out = metric.compute()
    assert_same(out, track2_single(cm, asv, sasv, lab))
    assert_same(out, single(cm, (lab != SPF).astype(np.int64)))
    for a in sorted(set(attack[lab == SPF].tolist())):
        keep = (lab != SPF) | (attack == a)
        assert_same(out["groups"][a], track2_single(cm[keep], asv[keep], sasv[keep], lab[keep]))


def test_track2_sasv_only_and_label_checks():
    cm, asv, sasv, lab, _ = sasv_case(300, 9)
    metric = metrics.DetectionMetrics()
    metric.update(sasv_scores=torch.from_numpy(sasv), asv_labels=torch.from_numpy(lab))
    out = metric.compute()
    assert (out["a_dcf"], out["a_dcf_threshold"]) == metrics.a_dcf(torch.from_numpy(sasv), torch.from_numpy(lab))
    assert "eer" not in out and "t_eer" not in out
    # CM labels that contradict the ASV labels are named
    metric = metrics.DetectionMetrics()
    cm_lab = (lab != SPF).astype(np.int64)
    cm_lab[7] = 1 - cm_lab[7]
    metric.update(torch.from_numpy(cm), torch.from_numpy(cm_lab), asv_labels=torch.from_numpy(lab))
    with pytest.raises(ValueError, match=r"disagree on trial 7"):
        metric.compute()
    # hard CM decisions: min t-DCF NaN (the package refuses them), the rest computed
    metric = metrics.DetectionMetrics()
    metric.update(torch.from_numpy((lab != SPF).astype(np.float64)), asv_labels=torch.from_numpy(lab))
    out = metric.compute()
    assert math.isnan(out["min_tdcf"]) and out["eer"] == 0.0


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(scores=torch.zeros(3)), r"give scores and labels"),
        (dict(scores=torch.zeros(3), labels=torch.zeros(3), sasv_scores=torch.zeros(3)), r"sasv_scores need asv_labels"),
        (dict(asv_scores=torch.zeros(3), asv_labels=torch.zeros(3, dtype=torch.long), sasv_scores=torch.zeros(3)),
         r"also needs the CM scores"),
        (dict(scores=torch.zeros(3), labels=torch.zeros(3), groups=torch.zeros(3)), r"groups must hold integer"),
        (dict(scores=torch.zeros(3), labels=torch.zeros(3), groups=torch.zeros(2, dtype=torch.long)),
         r"scores and groups must have the same number of elements"),
    ],
)
def test_update_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        metrics.DetectionMetrics().update(**kwargs)


def test_update_fields_must_not_change():
    metric = metrics.DetectionMetrics()
    metric.update(torch.zeros(3), torch.zeros(3), groups=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="every update must give the same fields"):
        metric.update(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="grouping must be one of"):
        metrics.DetectionMetrics(grouping="codec")


def test_update_with_groups_and_track2_does_not_synchronise(monkeypatch):
    metric = metrics.DetectionMetrics()
    cm, asv, sasv, lab, attack = sasv_case(256, 3)
    t = torch.from_numpy

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation in update()")

    with monkeypatch.context() as mp:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero"):
            mp.setattr(torch.Tensor, name, forbidden)
        mp.setattr(torch, "nonzero", forbidden)
        for i in range(0, 256, 64):
            sl = slice(i, i + 64)
            metric.update(t(cm[sl]).float(), groups=t(attack[sl]), asv_scores=t(asv[sl]), asv_labels=t(lab[sl]),
                          sasv_scores=t(sasv[sl]))
    out = metric.compute()
    assert out["a_dcf"] == metrics.a_dcf(t(sasv), t(lab))[0]
    assert out["eer"] == metrics.eer(t(cm).float(), t((lab != SPF).astype(np.int64)))[0]
