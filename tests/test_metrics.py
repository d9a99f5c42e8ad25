"""Tests of spoofloss.metrics.

Three kinds of checks:
* hand-made cases whose answers are worked out in the comments;
* an independent float64 numpy implementation of the ASVspoof definitions (written here
  from the formulas of the evaluation packages) on random data of many sizes, equal to
  1e-12 (in practice bit for bit);
* the streaming accumulator against one call on everything, and its no-sync contract.

Label convention: 1 = bona fide, 0 = spoof; higher score = more bona fide.
"""

import math

import numpy as np
import pytest
import torch

from spoofloss import metrics

TOL = 1e-12

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]),
]

# ASVspoof 5 DCF defaults: p_spoof 0.05, c_miss 1, c_fa 10 -> p_target 0.95,
# cost(k) = 0.95 * miss(k) + 0.5 * fa(k); normaliser c_def = min(0.95, 0.5) = 0.5.


def t(x, dtype=torch.float64, device="cpu"):
    return torch.tensor(x, dtype=dtype, device=device)


# ---------------------------------------------------------------------------------------
# independent numpy reference (float64), from the challenge definitions
# ---------------------------------------------------------------------------------------
def np_det_curve(bona, spoof):
    """Package DET curve: bona fide scores first, then spoof, stable (merge) sort;
    after the first k trials: miss = bona fide among them / Nb, fa = spoof not among them / Ns."""
    bona = np.asarray(bona, dtype=np.float64)
    spoof = np.asarray(spoof, dtype=np.float64)
    nb, ns = bona.size, spoof.size
    every = np.concatenate([bona, spoof])
    is_bona = np.concatenate([np.ones(nb), np.zeros(ns)])
    order = np.argsort(every, kind="mergesort")
    bona_seen = np.cumsum(is_bona[order])
    k = np.arange(1, nb + ns + 1)
    spoof_unseen = ns - (k - bona_seen)
    miss = np.concatenate([[0.0], bona_seen / nb])
    fa = np.concatenate([[1.0], spoof_unseen / ns])
    thr = np.concatenate([[every[order[0]] - 0.001], every[order]])
    return miss, fa, thr


def np_eer(bona, spoof):
    miss, fa, thr = np_det_curve(bona, spoof)
    i = int(np.argmin(np.abs(miss - fa)))
    return float(np.mean([miss[i], fa[i]])), float(thr[i])


def np_min_dcf(bona, spoof, p_spoof=0.05, c_miss=1, c_fa=10):
    miss, fa, thr = np_det_curve(bona, spoof)
    p_tar = 1 - p_spoof
    cost = c_miss * miss * p_tar + c_fa * fa * (1 - p_tar)
    i = int(np.argmin(cost))
    return float(cost[i] / min(c_miss * p_tar, c_fa * (1 - p_tar))), float(thr[i])


def np_act_dcf(bona, spoof, p_spoof=0.05, c_miss=1, c_fa=10):
    bona = np.asarray(bona, dtype=np.float64)
    spoof = np.asarray(spoof, dtype=np.float64)
    thr = -np.log(c_miss * (1 - p_spoof) / (c_fa * p_spoof))
    p_miss = np.sum(bona < thr) / bona.size
    p_fa = np.sum(spoof >= thr) / spoof.size
    cost = c_miss * (1 - p_spoof) * p_miss + c_fa * p_spoof * p_fa
    return float(cost / min(c_fa * p_spoof, c_miss * (1 - p_spoof))), float(thr)


def np_cllr(bona, spoof):
    bona = np.asarray(bona, dtype=np.float64)
    spoof = np.asarray(spoof, dtype=np.float64)
    # -log sigmoid(x) = log(1 + exp(-x))
    return float(0.5 * (np.mean(np.logaddexp(0.0, -bona)) + np.mean(np.logaddexp(0.0, spoof))) / np.log(2))


def np_asv_rates(tar, non, spoof):
    _, thr = np_eer(tar, non)
    tar, non, spoof = (np.asarray(x, dtype=np.float64) for x in (tar, non, spoof))
    return dict(
        threshold=thr,
        pfa_asv=np.sum(non >= thr) / non.size,
        pmiss_asv=np.sum(tar < thr) / tar.size,
        pmiss_spoof_asv=np.sum(spoof < thr) / spoof.size,
        pfa_spoof_asv=np.sum(spoof >= thr) / spoof.size,
    )


def np_min_tdcf(bona, spoof, pfa_asv, pmiss_asv, pmiss_spoof_asv, pfa_spoof_asv, version):
    miss, fa, thr = np_det_curve(bona, spoof)
    p_spoof = 0.05
    p_tar, p_non = (1 - p_spoof) * 0.99, (1 - p_spoof) * 0.01
    if version == "2019":  # Cmiss_asv = Cmiss_cm = 1, Cfa_asv = Cfa_cm = 10
        c1 = p_tar * (1 - 1 * pmiss_asv) - p_non * 10 * pfa_asv
        c2 = 10 * p_spoof * (1 - pmiss_spoof_asv)
        curve = (c1 * miss + c2 * fa) / min(c1, c2)
    else:  # Cmiss = 1, Cfa = 10, Cfa_spoof = 10
        c0 = p_tar * 1 * pmiss_asv + p_non * 10 * pfa_asv
        c1 = p_tar * 1 - (p_tar * 1 * pmiss_asv + p_non * 10 * pfa_asv)
        c2 = p_spoof * 10 * pfa_spoof_asv
        curve = (c0 + c1 * miss + c2 * fa) / (c0 + min(c1, c2))
    i = int(np.argmin(curve))
    return float(curve[i]), float(thr[i])


def brute_min_cost(bona, spoof, w_miss, w_fa, const=0.0):
    """min over every threshold t in {-inf} U scores of const + w_miss P(bona <= t) +
    w_fa P(spoof > t); tie-free definition (intermediate tie points never win)."""
    bona = np.asarray(bona, dtype=np.float64)
    spoof = np.asarray(spoof, dtype=np.float64)
    best = const + w_fa  # t = -inf: nothing missed, every spoof accepted
    for th in np.unique(np.concatenate([bona, spoof])):
        best = min(best, const + w_miss * np.mean(bona <= th) + w_fa * np.mean(spoof > th))
    return best


def split(scores, labels, bonafide_label=1):
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    return s[lab == bonafide_label], s[lab != bonafide_label]


# ---------------------------------------------------------------------------------------
# hand-made cases
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_perfect_separation(device):
    # bona fide {2, 3}, spoof {0, 1}. Sorted: 0s 1s 2b 3b.
    # k=0: miss 0, fa 1   k=1: miss 0, fa 1/2   k=2: miss 0, fa 0  -> |miss-fa| = 0 at k=2
    # EER = 0, threshold = 2nd smallest score = 1.  minDCF: cost(k=2) = 0 -> 0, threshold 1.
    s, lab = t([2.0, 0.0, 3.0, 1.0], device=device), t([1, 0, 1, 0], torch.int64, device)
    assert metrics.eer(s, lab) == (0.0, 1.0)
    assert metrics.min_dcf(s, lab) == (0.0, 1.0)


def test_reversed_separation():
    # bona fide {0, 1}, spoof {2, 3}. Sorted: 0b 1b 2s 3s.
    # k=0: (0, 1) diff 1; k=1: (1/2, 1) diff 1/2; k=2: (1, 1) diff 0 -> EER = 1, threshold 1.
    # minDCF: cost k=0: 0.5*1 = 0.5; k=1: 0.475+0.5; k=2: 1.45; k=3: 0.95+0.25; k=4: 0.95.
    # min 0.5 at k=0 -> 0.5/0.5 = 1, threshold = 0 - 0.001.
    s, lab = t([0.0, 1.0, 2.0, 3.0]), t([1, 1, 0, 0])
    assert metrics.eer(s, lab) == (1.0, 1.0)
    assert metrics.min_dcf(s, lab) == (1.0, -0.001)


def test_all_scores_equal():
    # 2 bona fide, 3 spoof, every score 0.5.  The stable sort keeps bona fide first:
    # k=0: (0, 1); k=1: (1/2, 1); k=2: (1, 1) -> diff 0 -> EER = (1+1)/2 = 1.0 at threshold 0.5.
    # (the package's pessimistic tie convention: ties count against the system).
    # minDCF: k=0 cost 0.5 (the best; every later point has miss > 0 and fa >= 0) -> 1.0,
    # threshold 0.5 - 0.001.
    s, lab = t([0.5] * 5), t([0, 1, 0, 1, 0])
    assert metrics.eer(s, lab) == (1.0, 0.5)
    assert metrics.min_dcf(s, lab) == (1.0, 0.499)


def test_ties_across_classes():
    # bona fide {1, 2, 2}, spoof {0, 2, 3}; the tie at 2 holds 2 bona fide and 1 spoof.
    # Package order (bona fide first within a tie): 0s 1b 2b 2b 2s 3s
    # bona fide seen: 0 1 2 3 3 3; spoof not seen: 2 2 2 2 1 0
    # curve: k0 (0, 1)  k1 (0, 2/3)  k2 (1/3, 2/3)  k3 (2/3, 2/3)  k4 (1, 2/3) ...
    # first zero difference at k=3 -> EER = 2/3, threshold = 3rd smallest = 2.
    # (an implementation evaluating only real thresholds would give (1, 1/3) at t=2.)
    s = t([2.0, 0.0, 2.0, 1.0, 2.0, 3.0])
    lab = t([1, 0, 0, 1, 1, 0])
    e, thr = metrics.eer(s, lab)
    assert e == 2 / 3 and thr == 2.0
    # the order of the trials in the input does not matter
    for seed in range(5):
        p = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
        assert metrics.eer(s[p], lab[p]) == (e, thr)
    # minDCF: cost = 0.95 miss + 0.5 fa: k0 0.5, k1 1/3, k2 0.95/3+1/3 ... k1 is the minimum:
    # (1/3)/0.5 = 2/3 at threshold 0.
    d, dthr = metrics.min_dcf(s, lab)
    assert abs(d - 2 / 3) < TOL and dthr == 0.0


def test_single_bonafide_trial():
    # bona fide {0.5}, spoof {0.1, 0.4, 0.7, 0.9}. Sorted: .1s .4s .5b .7s .9s
    # k: 0 (0, 1) | 1 (0, 3/4) | 2 (0, 1/2) | 3 (1, 1/2) | 4 (1, 1/4) | 5 (1, 0)
    # |diff|: 1, 3/4, 1/2, 1/2, 3/4, 1 -> first minimum k=2: EER = 1/4, threshold 0.4.
    # minDCF: 0.95 miss + 0.5 fa: 0.5, 0.375, 0.25, 1.2, 1.075, 0.95 -> 0.25/0.5 = 0.5 at 0.4.
    s, lab = t([0.1, 0.4, 0.5, 0.7, 0.9]), t([0, 0, 1, 0, 0])
    assert metrics.eer(s, lab) == (0.25, 0.4)
    assert metrics.min_dcf(s, lab) == (0.5, 0.4)


def test_bonafide_label_zero_flips_classes():
    # Same data as test_single_bonafide_trial with the labels written 0 = bona fide.
    s, lab = t([0.1, 0.4, 0.5, 0.7, 0.9]), t([1, 1, 0, 1, 1])
    assert metrics.eer(s, lab, bonafide_label=0) == (0.25, 0.4)
    # with the default convention the single "1" trials are now the spoof class: different
    assert metrics.eer(s, lab) != (0.25, 0.4)


def test_act_dcf_hand():
    # threshold = -ln(beta), beta = 1 * 0.95 / (10 * 0.05) = 1.9 -> -0.6419
    # bona fide {-1, 0, 1}: -1 < thr -> miss 1/3; spoof {-2, -0.5, 3}: -0.5, 3 >= thr -> fa 2/3
    # cost = 0.95/3 + 0.5 * 2/3 = 0.65 -> / min(0.5, 0.95) = 1.3
    s, lab = t([-1.0, 0.0, 1.0, -2.0, -0.5, 3.0]), t([1, 1, 1, 0, 0, 0])
    v, thr = metrics.act_dcf(s, lab)
    assert abs(v - 1.3) < TOL
    assert thr == -math.log(1.9)


def test_act_dcf_float32_score_next_to_the_threshold():
    # A float32 score just below the float64 Bayes threshold t is a miss (bona fide) and not
    # a false alarm (spoof); comparing in float32 would round t onto the score.  Pick a
    # p_spoof whose t rounds *down* in float32, so that float32(t) < t.
    for p in (0.05, 0.01, 0.02, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8):
        thr = -math.log((1 - p) / (10 * p))
        s32 = np.float32(thr)
        if float(s32) < thr:
            break
    else:  # pragma: no cover
        pytest.fail("no threshold rounds down")
    # bona fide {s32, 100}: s32 < t -> missed: miss 1/2; spoof {s32, -100}: none >= t: fa 0
    sc = torch.tensor([s32, 100.0, s32, -100.0], dtype=torch.float32)
    lab = t([1, 1, 0, 0])
    v, vt = metrics.act_dcf(sc, lab, p_spoof=p)
    assert vt == thr
    assert v == np_act_dcf([float(s32), 100.0], [float(s32), -100.0], p_spoof=p)[0]
    assert abs(v - (1 - p) * 0.5 / min(10 * p, 1 - p)) < TOL


def test_cllr_hand():
    # LLR 0 for every trial: each term is log(1 + e^0) = ln 2 -> 0.5 (ln2 + ln2) / ln2 = 1 bit
    assert abs(metrics.cllr(t([0.0, 0.0, 0.0]), t([1, 0, 0])) - 1.0) < TOL
    # bona fide ln 3, spoof -ln 3: ln(1 + 1/3) each -> log2(4/3)
    v = metrics.cllr(t([math.log(3), -math.log(3)]), t([1, 0]))
    assert abs(v - math.log2(4 / 3)) < TOL
    # large confident LLRs do not overflow: bona fide 800 -> ~0; spoof 800 -> 800/ln2/2 bits
    v = metrics.cllr(t([800.0, 800.0]), t([1, 0]))
    assert abs(v - 0.5 * 800 / math.log(2)) < 1e-9
    # moderately large LLRs keep their exponential tail: both trials wrong by 25 ->
    # (25 + log1p(e^-25)) / ln 2; a softplus that turns linear above 20 loses 2e-11 here
    v = metrics.cllr(t([-25.0, 25.0]), t([1, 0]))
    assert abs(v - (25 + math.log1p(math.exp(-25))) / math.log(2)) < TOL


def test_asv_error_rates_hand():
    # target {2, 3, 4}, non-target {0, 1, 2.5}. Sorted: 0n 1n 2t 2.5n 3t 4t
    # miss: 0 0 0 1/3 1/3 2/3 1;  fa: 1 2/3 1/3 1/3 0 0 0 -> first |diff| = 0 at k=3:
    # ASV threshold = 3rd smallest = 2.
    # Pfa_asv = #(non >= 2)/3 = 1/3, Pmiss_asv = #(tar < 2)/3 = 0,
    # spoof {1.5, 3.5}: Pmiss_spoof = 1/2, Pfa_spoof = 1/2
    r = metrics.asv_error_rates(t([2.0, 3.0, 4.0]), t([0.0, 1.0, 2.5]), t([1.5, 3.5]))
    assert r == dict(threshold=2.0, pfa_asv=1 / 3, pmiss_asv=0.0, pmiss_spoof_asv=0.5, pfa_spoof_asv=0.5)


def test_min_tdcf_hand():
    # CM: data of test_single_bonafide_trial, curve (Pmiss_cm, Pfa_cm) =
    # (0,1) (0,3/4) (0,1/2) (1,1/2) (1,1/4) (1,0) with thresholds -0.001+.1, .1, .4, .5, .7, .9
    # ASV: Pmiss_asv 0.1, Pfa_asv 0.05, Pfa_spoof_asv 0.4 (Pmiss_spoof_asv 0.6)
    # Ptar = 0.95*0.99 = 0.9405, Pnon = 0.95*0.01 = 0.0095
    # 2021: C0 = 0.9405*0.1 + 0.0095*10*0.05 = 0.0988; C1 = 0.9405 - 0.0988 = 0.8417;
    #       C2 = 0.05*10*0.4 = 0.2; norm = C0 + min(C1, C2) = 0.2988
    #       best point (0, 1/2): (0.0988 + 0.1) / 0.2988 = 0.1988 / 0.2988
    # 2019: C1 = 0.9405*(1 - 0.1) - 0.0095*10*0.05 = 0.8417; C2 = 10*0.05*(1 - 0.6) = 0.2
    #       best point (0, 1/2): 0.2*0.5/0.2 = 0.5
    s, lab = t([0.1, 0.4, 0.5, 0.7, 0.9]), t([0, 0, 1, 0, 0])
    v, thr = metrics.min_tdcf(s, lab, pfa_asv=0.05, pmiss_asv=0.1, pfa_spoof_asv=0.4)
    assert abs(v - 0.1988 / 0.2988) < TOL and thr == 0.4
    v, thr = metrics.min_tdcf(s, lab, pfa_asv=0.05, pmiss_asv=0.1, pmiss_spoof_asv=0.6, version="2019")
    assert abs(v - 0.5) < TOL and thr == 0.4
    # the legacy form also accepts Pfa_spoof_asv = 1 - Pmiss_spoof_asv
    v19, _ = metrics.min_tdcf(s, lab, pfa_asv=0.05, pmiss_asv=0.1, pfa_spoof_asv=0.4, version="2019")
    assert abs(v19 - 0.5) < TOL
    # and the default cost models are the challenge's
    assert metrics.tdcf_cost_model("2019") == dict(
        Pspoof=0.05, Ptar=0.95 * 0.99, Pnon=0.95 * 0.01, Cmiss_asv=1, Cfa_asv=10, Cmiss_cm=1, Cfa_cm=10)
    assert metrics.tdcf_cost_model("2021") == dict(
        Pspoof=0.05, Ptar=0.95 * 0.99, Pnon=0.95 * 0.01, Cmiss=1, Cfa=10, Cfa_spoof=10)


def test_min_tdcf_from_raw_asv_scores_hand():
    # ASV scores of test_asv_error_rates_hand -> Pfa 1/3, Pmiss 0, Pfa_spoof 1/2.
    # 2021: C0 = 0.0095*10/3 = 0.031667; C1 = 0.9405 - C0 = 0.908833; C2 = 0.05*10*0.5 = 0.25
    # CM of test_single_bonafide_trial: best point (0, 1/2): (C0 + 0.125) / (C0 + 0.25)
    c0 = 0.95 * 0.01 * 10 * (1 / 3)
    s, lab = t([0.1, 0.4, 0.5, 0.7, 0.9]), t([0, 0, 1, 0, 0])
    v, thr = metrics.min_tdcf(
        s, lab, asv_target_scores=t([2.0, 3.0, 4.0]), asv_nontarget_scores=t([0.0, 1.0, 2.5]),
        asv_spoof_scores=t([1.5, 3.5]))
    assert abs(v - (c0 + 0.125) / (c0 + 0.25)) < TOL and thr == 0.4


def test_signed_zero_and_extreme_float32_scores():
    # -0.0 and +0.0 are equal scores: a tie across the classes, bona fide first either way.
    # bona fide {-0.0}, spoof {+0.0}: k1 (1, 1) -> EER 1 at threshold 0; and swapped signs too.
    for dtype in (torch.float32, torch.float64):
        assert metrics.eer(torch.tensor([-0.0, 0.0], dtype=dtype), t([1, 0])) == (1.0, 0.0)
        assert metrics.eer(torch.tensor([0.0, -0.0], dtype=dtype), t([1, 0])) == (1.0, 0.0)
    # order across the whole float32 range: negatives, subnormals, huge values
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    big = float(np.finfo(np.float32).max)
    vals = [-big, -1e30, -3.5, -1.0, -tiny, -0.0, 0.0, tiny, 1e-30, 1.0, 3.5, 1e30, big]
    rng = np.random.default_rng(0)
    for _ in range(20):
        sc = np.array(rng.choice(vals, 40), dtype=np.float32)
        lab = rng.integers(0, 2, 40)
        lab[:2] = [0, 1]
        b, sp = split(sc, lab)
        e32 = metrics.eer(torch.from_numpy(sc), torch.from_numpy(lab))
        assert e32 == np_eer(b, sp)
        assert e32 == metrics.eer(torch.from_numpy(sc.astype(np.float64)), torch.from_numpy(lab))
        assert metrics.min_dcf(torch.from_numpy(sc), torch.from_numpy(lab)) == np_min_dcf(b, sp)
        miss, fa, thr = metrics.det_curve(torch.from_numpy(sc), torch.from_numpy(lab))
        rmiss, rfa, rthr = np_det_curve(b, sp)
        assert miss.tolist() == rmiss.tolist() and fa.tolist() == rfa.tolist()
        assert thr.tolist() == rthr.tolist()


def test_det_curve_hand():
    miss, fa, thr = metrics.det_curve(t([2.0, 0.0, 2.0, 1.0, 2.0, 3.0]), t([1, 0, 0, 1, 1, 0]))
    assert miss.dtype == torch.float64 and fa.dtype == torch.float64
    assert miss.tolist() == [0, 0, 1 / 3, 2 / 3, 1, 1, 1]
    assert fa.tolist() == [1, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1 / 3, 0]
    assert thr.tolist() == [-0.001, 0, 1, 2, 2, 2, 3]


# ---------------------------------------------------------------------------------------
# input forms
# ---------------------------------------------------------------------------------------
def test_label_shapes_and_dtypes():
    s = t([0.1, 0.4, 0.5, 0.7, 0.9])
    ref = metrics.eer(s, t([0, 0, 1, 0, 0]))
    for lab in (
        torch.tensor([0, 0, 1, 0, 0]),
        torch.tensor([[0], [0], [1], [0], [0]]),
        torch.tensor([False, False, True, False, False]),
        torch.tensor([0, 0, 1, 0, 0], dtype=torch.uint8),
        torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float32),
        [0, 0, 1, 0, 0],
        np.array([0, 0, 1, 0, 0]),
    ):
        assert metrics.eer(s, lab) == ref
    # bool labels with bonafide_label=0: False is bona fide
    assert metrics.eer(s, torch.tensor([True, True, False, True, True]), bonafide_label=0) == ref
    # scores [B, 1], float32, float16 (exactly representable values -> same answer)
    s2 = t([0.0, 1.0, 2.0, 3.0, 4.0])
    ref2 = metrics.eer(s2, t([0, 0, 1, 0, 0]))
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int64):
        assert metrics.eer(s2.to(dtype).reshape(-1, 1), t([0, 0, 1, 0, 0])) == ref2


def test_float32_scores_match_float64_reference():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(1000, generator=g, dtype=torch.float32)
    lab = (torch.rand(1000, generator=g) < 0.3).long()
    b, sp = split(s.double().numpy(), lab.numpy())
    assert metrics.eer(s, lab) == np_eer(b, sp)
    assert metrics.min_dcf(s, lab) == np_min_dcf(b, sp)
    assert metrics.act_dcf(s, lab)[0] == np_act_dcf(b, sp)[0]


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "scores, labels, kwargs, pattern",
    [
        ([0.1, float("nan"), 0.3], [1, 0, 0], {}, r"scores.*NaN/Inf.*scores\[1\] = nan"),
        ([0.1, 0.2, float("inf")], [1, 0, 0], {}, r"scores.*scores\[2\] = inf"),
        ([0.1, 0.2, -float("inf")], [1, 0, 0], {}, r"scores.*-inf"),
        ([0.1, 0.2, 0.3], [1, 0], {}, r"scores.*labels.*\(3,\).*\(2,\)"),
        ([0.1, 0.2, 0.3], [1, 2, 0], {}, r"labels must be 0 or 1.*labels\[1\] = 2"),
        ([0.1, 0.2, 0.3], [1, -1, 0], {}, r"labels.*labels\[1\] = -1"),
        ([0.1, 0.2, 0.3], [1.0, 0.5, 0.0], {}, r"labels.*labels\[1\] = 0.5"),
        ([0.1, 0.2, 0.3], [0, 0, 0], {}, r"no bona fide.*bonafide_label=1"),
        ([0.1, 0.2, 0.3], [1, 1, 1], {}, r"no spoof.*bonafide_label=1"),
        ([0.1, 0.2, 0.3], [1, 1, 1], {"bonafide_label": 0}, r"no bona fide.*bonafide_label=0"),
        ([0.1, 0.2, 0.3], [1, 0, 0], {"bonafide_label": 2}, r"bonafide_label must be 0 or 1, got 2"),
        ([], [], {}, r"scores is empty"),
    ],
)
@pytest.mark.parametrize("fn", ["eer", "min_dcf", "act_dcf", "cllr", "det_curve"])
def test_bad_input(fn, scores, labels, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        getattr(metrics, fn)(torch.tensor(scores, dtype=torch.float64), torch.tensor(labels), **kwargs)


def test_bad_dcf_parameters():
    s, lab = t([0.1, 0.5]), t([0, 1])
    with pytest.raises(ValueError, match=r"p_spoof.*1\.5"):
        metrics.min_dcf(s, lab, p_spoof=1.5)
    with pytest.raises(ValueError, match=r"c_fa=-1"):
        metrics.act_dcf(s, lab, c_fa=-1)


def test_bad_tdcf_input():
    s, lab = t([0.1, 0.4, 0.5]), t([0, 0, 1])
    with pytest.raises(ValueError, match="version"):
        metrics.min_tdcf(s, lab, pfa_asv=0.1, pmiss_asv=0.1, pfa_spoof_asv=0.5, version="2017")
    with pytest.raises(ValueError, match="exactly one of pfa_spoof_asv and pmiss_spoof_asv"):
        metrics.min_tdcf(s, lab, pfa_asv=0.1, pmiss_asv=0.1)
    with pytest.raises(ValueError, match=r"pmiss_asv must be a rate in \[0, 1\], got 1.5"):
        metrics.min_tdcf(s, lab, pfa_asv=0.1, pmiss_asv=1.5, pfa_spoof_asv=0.5)
    with pytest.raises(ValueError, match="asv_spoof_scores=None"):
        metrics.min_tdcf(s, lab, asv_target_scores=[1.0], asv_nontarget_scores=[0.0])
    with pytest.raises(ValueError, match=r"asv_nontarget_scores.*nan"):
        metrics.min_tdcf(s, lab, asv_target_scores=[1.0], asv_nontarget_scores=[float("nan")],
                         asv_spoof_scores=[0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.min_tdcf(s, lab, pfa_asv=0.1, pmiss_asv=0.1, pfa_spoof_asv=0.5, cost_model={"Pspoof": 0.5})
    with pytest.raises(ValueError, match=r"unknown key.*Cfa_cm"):
        metrics.min_tdcf(s, lab, pfa_asv=0.1, pmiss_asv=0.1, pfa_spoof_asv=0.5, cost_model={"Cfa_cm": 1})
    # 2019: C1 = 0.9405 (1 - 1) - ... < 0 when the ASV misses every target
    with pytest.raises(ValueError, match=r"C1=-"):
        metrics.min_tdcf(s, lab, pfa_asv=0.5, pmiss_asv=1.0, pmiss_spoof_asv=0.5, version="2019")
    with pytest.raises(ValueError, match=r"labels.*labels\[0\] = 3"):
        metrics.min_tdcf(s, t([3, 0, 1]), pfa_asv=0.1, pmiss_asv=0.1, pfa_spoof_asv=0.5)


# ---------------------------------------------------------------------------------------
# against the numpy reference on random data
# ---------------------------------------------------------------------------------------
SIZES = [2, 3, 4, 5, 7, 10, 16, 31, 64, 100, 257, 1000, 4099, 20000, 100003]


def random_case(n, seed, kind):
    rng = np.random.default_rng(seed)
    p_bona = rng.uniform(0.05, 0.95)
    lab = (rng.random(n) < p_bona).astype(np.int64)
    lab[0], lab[-1] = 1, 0  # both classes present
    rng.shuffle(lab)
    if kind == "continuous":
        s = rng.normal(size=n) + rng.uniform(0, 3) * lab
    elif kind == "ties":  # few distinct values: many ties across the classes
        s = rng.integers(0, rng.integers(1, 6), size=n) + lab * rng.integers(0, 2, size=n)
        s = s.astype(np.float64)
    else:  # "llr": scaled log-likelihood-ratio-like scores with some rounding ties
        s = np.round(rng.normal(size=n) * 12 + 6 * (2 * lab - 1), 1)
    return s, lab


CASES = [(n, seed, kind) for n in SIZES for seed, kind in enumerate(("continuous", "ties", "llr"))]


@pytest.mark.parametrize("n, seed, kind", CASES)
def test_against_numpy_reference(n, seed, kind):
    s, lab = random_case(n, 1000 * n + seed, kind)
    b, sp = split(s, lab)
    ts, tl = torch.from_numpy(s), torch.from_numpy(lab)

    e, et = metrics.eer(ts, tl)
    re, ret = np_eer(b, sp)
    assert abs(e - re) <= TOL and et == ret

    d, dt = metrics.min_dcf(ts, tl)
    rd, rdt = np_min_dcf(b, sp)
    assert abs(d - rd) <= TOL and dt == rdt

    d2, _ = metrics.min_dcf(ts, tl, p_spoof=0.3, c_miss=2.0, c_fa=3.0)
    assert abs(d2 - np_min_dcf(b, sp, 0.3, 2.0, 3.0)[0]) <= TOL

    a, at = metrics.act_dcf(ts, tl)
    ra, rat = np_act_dcf(b, sp)
    assert abs(a - ra) <= TOL and abs(at - rat) <= TOL

    assert abs(metrics.cllr(ts, tl) - np_cllr(b, sp)) <= TOL

    # the same data with 0 = bona fide
    assert metrics.eer(ts, 1 - tl, bonafide_label=0) == (e, et)

    # float32 scores take another sort (int64 keys): same definitions on the rounded values
    s32 = s.astype(np.float32)
    b32, sp32 = split(s32, lab)
    assert metrics.eer(torch.from_numpy(s32), tl) == np_eer(b32, sp32)
    assert metrics.min_dcf(torch.from_numpy(s32), tl) == np_min_dcf(b32, sp32)

    if n <= 1000:  # tie-free brute-force definition of minDCF over every threshold
        assert abs(d * 0.5 - brute_min_cost(b, sp, 0.95, 0.5)) <= TOL


@pytest.mark.parametrize("n, seed, kind", [c for c in CASES if c[0] >= 5])
@pytest.mark.parametrize("version", ["2019", "2021"])
def test_min_tdcf_against_numpy_reference(n, seed, kind, version):
    s, lab = random_case(n, 7 * n + seed, kind)
    b, sp = split(s, lab)
    rng = np.random.default_rng(n + seed)
    m = max(n // 3, 2)
    tar = rng.normal(3.0, 1.0, m)
    non = rng.normal(0.0, 1.0, m + 1)
    spf = rng.normal(rng.uniform(0.5, 2.5), 1.0, m + 2)
    r = np_asv_rates(tar, non, spf)
    got = metrics.asv_error_rates(torch.from_numpy(tar), torch.from_numpy(non), torch.from_numpy(spf))
    assert got == pytest.approx(r, abs=0) and got["threshold"] == r["threshold"]

    if np.unique(s).size < 3:  # hard decisions: the package stops with an error, so do we
        with pytest.raises(ValueError, match=f"only {np.unique(s).size} distinct score"):
            metrics.min_tdcf(torch.from_numpy(s), torch.from_numpy(lab), pfa_asv=r["pfa_asv"],
                             pmiss_asv=r["pmiss_asv"], pfa_spoof_asv=r["pfa_spoof_asv"], version=version)
        return
    ref, ref_thr = np_min_tdcf(b, sp, r["pfa_asv"], r["pmiss_asv"], r["pmiss_spoof_asv"], r["pfa_spoof_asv"], version)
    v, thr = metrics.min_tdcf(
        torch.from_numpy(s), torch.from_numpy(lab), asv_target_scores=torch.from_numpy(tar),
        asv_nontarget_scores=torch.from_numpy(non), asv_spoof_scores=torch.from_numpy(spf), version=version)
    assert abs(v - ref) <= TOL and thr == ref_thr
    # the same through the rates
    spoof_rate = {"pmiss_spoof_asv": r["pmiss_spoof_asv"]} if version == "2019" else {"pfa_spoof_asv": r["pfa_spoof_asv"]}
    v2, thr2 = metrics.min_tdcf(torch.from_numpy(s), torch.from_numpy(lab), pfa_asv=r["pfa_asv"],
                                pmiss_asv=r["pmiss_asv"], version=version, **spoof_rate)
    assert (v2, thr2) == (v, thr)
    if n <= 1000:  # tie-free brute force
        p_tar, p_non = 0.95 * 0.99, 0.95 * 0.01
        if version == "2021":
            c0 = p_tar * r["pmiss_asv"] + p_non * 10 * r["pfa_asv"]
            c1, c2 = p_tar - c0, 0.05 * 10 * r["pfa_spoof_asv"]
            assert abs(v * (c0 + min(c1, c2)) - brute_min_cost(b, sp, c1, c2, c0)) <= TOL
        else:
            c1 = p_tar * (1 - r["pmiss_asv"]) - p_non * 10 * r["pfa_asv"]
            c2 = 10 * 0.05 * (1 - r["pmiss_spoof_asv"])
            assert abs(v * min(c1, c2) - brute_min_cost(b, sp, c1, c2)) <= TOL


def test_min_tdcf_versions_differ():
    s, lab = random_case(500, 11, "continuous")
    kw = dict(pfa_asv=0.02, pmiss_asv=0.03, pfa_spoof_asv=0.4)
    v19, _ = metrics.min_tdcf(torch.from_numpy(s), torch.from_numpy(lab), version="2019", **kw)
    v21, _ = metrics.min_tdcf(torch.from_numpy(s), torch.from_numpy(lab), version="2021", **kw)
    assert v19 != v21


# ---------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------
def expected_dict(s, lab, bonafide_label=1):
    ts, tl = torch.as_tensor(s), torch.as_tensor(lab)
    e, et = metrics.eer(ts, tl, bonafide_label)
    d, dt = metrics.min_dcf(ts, tl, bonafide_label=bonafide_label)
    a, at = metrics.act_dcf(ts, tl, bonafide_label=bonafide_label)
    n_b = int((tl.reshape(-1) == bonafide_label).sum())
    return dict(eer=e, eer_threshold=et, min_dcf=d, min_dcf_threshold=dt, act_dcf=a,
                act_dcf_threshold=at, cllr=metrics.cllr(ts, tl, bonafide_label),
                n_bonafide=n_b, n_spoof=tl.numel() - n_b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, kind", [(37, "ties"), (1000, "continuous"), (5001, "llr"), (20000, "ties")])
def test_streaming_equals_one_call(device, n, kind):
    s, lab = random_case(n, n, kind)
    rng = np.random.default_rng(n)
    metric = metrics.DetectionMetrics()
    start = 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, 300)))
        sc = torch.from_numpy(s[start:stop]).to(device=device, dtype=torch.float32 if start % 2 else torch.float64)
        lb = torch.from_numpy(lab[start:stop]).to(device)
        if start % 3 == 0:
            lb = lb.reshape(-1, 1)
        elif start % 3 == 1:
            lb = lb.bool()
        metric.update(sc, lb)
        start = stop
    assert len(metric) == n
    got = metric.compute()
    # half of the batches went through float32: compare with the same rounding
    s_used = s.copy()
    start, rng = 0, np.random.default_rng(n)
    while start < n:
        stop = min(n, start + int(rng.integers(1, 300)))
        if start % 2:
            s_used[start:stop] = s_used[start:stop].astype(np.float32)
        start = stop
    want = expected_dict(s_used, lab)
    assert got == want
    b, sp = split(s_used, lab)
    assert got["eer"] == np_eer(b, sp)[0]
    # compute() does not consume the data; reset() does
    assert metric.compute() == got
    metric.reset()
    assert len(metric) == 0
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
    s2, lab2 = random_case(300, 5, "continuous")
    metric.update(torch.from_numpy(s2).to(device), torch.from_numpy(lab2).to(device))
    assert metric.compute() == expected_dict(s2, lab2)


def test_streaming_float32_batches():
    s, lab = random_case(3000, 9, "ties")
    s32 = (s / 7).astype(np.float32)
    metric = metrics.DetectionMetrics()
    for i in range(0, 3000, 128):
        dtype = torch.float16 if i == 0 else torch.float32
        metric.update(torch.from_numpy(s32[i:i + 128]).to(dtype), torch.from_numpy(lab[i:i + 128]))
    s32[:128] = s32[:128].astype(np.float16)
    assert metric.gather()[0].dtype == torch.float32
    b, sp = split(s32, lab)
    got = metric.compute()
    assert (got["eer"], got["eer_threshold"]) == np_eer(b, sp)
    assert (got["min_dcf"], got["min_dcf_threshold"]) == np_min_dcf(b, sp)
    assert got == expected_dict(s32.astype(np.float64), lab)


def test_streaming_bonafide_label_zero_and_dcf_parameters():
    s, lab = random_case(999, 2, "llr")
    metric = metrics.DetectionMetrics(bonafide_label=0, p_spoof=0.2, c_miss=1.0, c_fa=4.0)
    for i in range(0, 999, 100):
        metric.update(torch.from_numpy(s[i:i + 100]), torch.from_numpy(1 - lab[i:i + 100]))
    got = metric.compute()
    b, sp = split(s, lab)
    assert got["eer"] == np_eer(b, sp)[0]
    assert abs(got["min_dcf"] - np_min_dcf(b, sp, 0.2, 1.0, 4.0)[0]) <= TOL
    assert abs(got["act_dcf"] - np_act_dcf(b, sp, 0.2, 1.0, 4.0)[0]) <= TOL


def test_streaming_copies_its_input():
    metric = metrics.DetectionMetrics()
    buf_s, buf_l = t([0.1, 0.9]), t([0, 1])
    metric.update(buf_s, buf_l)
    buf_s.copy_(t([0.9, 0.1]))  # caller reuses its buffer: the recorded batch must not change
    metric.update(buf_s, t([0, 1]))
    # recorded: bona fide {0.9, 0.1}, spoof {0.1, 0.9}
    b, sp = [0.9, 0.1], [0.1, 0.9]
    assert metric.compute()["eer"] == np_eer(b, sp)[0]


def test_streaming_errors():
    metric = metrics.DetectionMetrics()
    with pytest.raises(ValueError, match=r"\(4,\).*\(3,\)"):
        metric.update(torch.zeros(4), torch.zeros(3))
    for bad in (-1, 2, True, 1.0):  # the losses' validator: an index, not a bool or a float
        with pytest.raises(ValueError, match=f"bonafide_label must be 0 or 1, got {bad!r}"):
            metrics.DetectionMetrics(bonafide_label=bad)
        with pytest.raises(ValueError, match=f"bonafide_label must be 0 or 1, got {bad!r}"):
            metrics.eer(t([0.1, 0.2]), t([1, 0]), bonafide_label=bad)
    # value errors surface at compute() (update never looks at values)
    metric.update(t([0.1, float("nan"), 0.3]), t([1, 0, 0]))
    with pytest.raises(ValueError, match=r"scores\[1\] = nan"):
        metric.compute()
    metric.reset()
    metric.update(t([0.1, 0.2]), t([1, 0]))
    metric.update(t([0.1, 0.2]), t([1, 7]))
    with pytest.raises(ValueError, match=r"labels\[3\] = 7"):
        metric.compute()
    metric.reset()  # integer labels keep their value: 256 is not 0 (as int8 would make it)
    metric.update(t([0.1, 0.2]), torch.tensor([1, 256]))
    with pytest.raises(ValueError, match=r"labels\[1\] = 256"):
        metric.compute()
    metric.reset()
    metric.update(t([0.1, 0.2]), t([1, 1]))
    with pytest.raises(ValueError, match="no spoof"):
        metric.compute()


def test_update_does_not_synchronise(monkeypatch):
    """update() must not read any value back to the host: every Tensor -> Python
    conversion raises while it runs."""
    metric = metrics.DetectionMetrics()
    batches = [(torch.randn(64, dtype=torch.float32), torch.randint(0, 2, (64, 1))) for _ in range(4)]

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation in update()")

    with monkeypatch.context() as mp:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero"):
            mp.setattr(torch.Tensor, name, forbidden)
        mp.setattr(torch, "nonzero", forbidden)
        for sc, lb in batches:
            metric.update(sc, lb)
    # the guard works: the same patching makes compute() fail
    with monkeypatch.context() as mp:
        mp.setattr(torch.Tensor, "tolist", forbidden)
        with pytest.raises(AssertionError, match="host synchronisation"):
            metric.compute()
    got = metric.compute()
    s = torch.cat([b[0] for b in batches]).double()
    lab = torch.cat([b[1] for b in batches]).reshape(-1)
    assert got["eer"] == metrics.eer(s, lab)[0]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_update_no_sync_cuda():
    metric = metrics.DetectionMetrics()
    s = torch.randn(1000, device="cuda")
    lab = torch.randint(0, 2, (1000,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(0, 1000, 100):
            metric.update(s[i:i + 100], lab[i:i + 100])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert metric.compute()["eer"] == metrics.eer(s.cpu(), lab.cpu())[0]
