"""DetectionMetrics under torch.distributed: 2 CPU processes (gloo, torch.multiprocessing
spawn) holding different numbers of trials must get exactly the single-process result."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spoofloss import metrics

WORLD = 2

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def make_data(n, seed, ties):
    rng = np.random.default_rng(seed)
    lab = (rng.random(n) < 0.3).astype(np.int64)
    lab[:2] = [0, 1]
    if ties:  # many equal scores across the classes: the tie convention must survive the gather
        s = rng.integers(0, 4, n).astype(np.float64) + lab * rng.integers(0, 2, n)
    else:
        s = rng.normal(size=n) * 3 + 2 * lab
    return torch.from_numpy(s), torch.from_numpy(lab)


# (total trials, trials on rank 0, ties?)  rank 1 gets the rest
CASES = [(1037, 1000, False), (1037, 37, True), (500, 0, False), (500, 500, True), (64, 32, True)]


def track2_data(n=1000):
    rng = np.random.default_rng(7)
    lab = rng.choice([1, 0, 2], size=n, p=[0.4, 0.25, 0.35])
    cm = np.round(rng.normal(size=n) + 2 * (lab != 2), 2)
    asv = np.round(rng.normal(size=n) + 3 * (lab == 1) + (lab == 2), 2)
    return dict(scores=torch.from_numpy(cm).float(), groups=torch.from_numpy(rng.integers(0, 5, n)),
                asv_scores=torch.from_numpy(asv), asv_labels=torch.from_numpy(lab),
                sasv_scores=torch.from_numpy(np.round(cm + asv, 2)))


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = []
        for i, (n, n0, ties) in enumerate(CASES):
            s, lab = make_data(n, i, ties)
            lo, hi = (0, n0) if rank == 0 else (n0, n)
            metric = metrics.DetectionMetrics()
            for start in range(lo, hi, 97):  # batches of up to 97, as a loader would give
                stop = min(hi, start + 97)
                metric.update(s[start:stop].float() if rank else s[start:stop], lab[start:stop])
            results.append({"local": len(metric), "result": metric.compute()})
        # Track 2 fields and attack groups, rank 0 holding 300 trials and rank 1 the rest
        t2 = track2_data()
        lo, hi = (0, 300) if rank == 0 else (300, t2["scores"].numel())
        metric = metrics.DetectionMetrics()
        metric.update(**{k: v[lo:hi] for k, v in t2.items()})
        results.append({"track2": metric.compute()})
        # an error on one rank only is reported on every rank (no rank is left waiting)
        metric = metrics.DetectionMetrics()
        bad = torch.tensor([0.2, float("nan") if rank == 1 else 0.3], dtype=torch.float64)
        metric.update(bad, torch.tensor([1, 0]))
        try:
            metric.compute()
            results.append({"error": None})
        except ValueError as exc:
            results.append({"error": str(exc)})
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for i, (n, n0, ties) in enumerate(CASES):
        s, lab = make_data(n, i, ties)
        s = s.clone()
        s[n0:] = s[n0:].float().double()  # rank 1 fed float32 scores
        single = metrics.DetectionMetrics()
        single.update(s, lab)
        want = single.compute()
        assert want["n_bonafide"] + want["n_spoof"] == n
        for r in range(WORLD):
            got = per_rank[r][i]
            assert got["local"] == (n0 if r == 0 else n - n0)
            assert got["result"] == want, (i, r)
    single = metrics.DetectionMetrics()
    single.update(**track2_data())
    want = single.compute()
    assert len(want["groups"]) == 5 and "t_eer" in want and "a_dcf" in want
    for r in range(WORLD):
        assert per_rank[r][-2]["track2"] == want, r
        assert "scores must be finite" in per_rank[r][-1]["error"]
