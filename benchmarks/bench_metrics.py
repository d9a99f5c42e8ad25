"""Benchmark of spoofloss.metrics (EER / minDCF on 10^6 and 10^7 scores).

Compared implementations (all on the same random scores, ~10 % bona fide):

* ``spoofloss eer``        - spoofloss.metrics.eer (one stable sort + cumulative counts);
* ``spoofloss all``        - DetectionMetrics.compute(): EER, minDCF, actDCF and Cllr from
                             one sort (plus update() of the data in batches of 4096, timed
                             separately as ``update``);
* ``numpy challenge``      - the ASVspoof package's formulas in numpy float64 (concatenate,
                             argsort(kind="mergesort"), cumsum), EER + minDCF; the minDCF is
                             vectorised here (the package loops in Python, which would add
                             seconds per 10^7 trials);
* ``speechbrain-style``    - a RE-IMPLEMENTATION (not SpeechBrain's code) of SpeechBrain's
                             EER algorithm: every unique score and every midpoint between
                             two is a threshold, and a thresholds x trials comparison matrix
                             gives FRR/FAR.  It needs ~2 N^2 bytes (SpeechBrain's own code
                             needs more: it also materialises float copies), so it runs only
                             where that fits in half of the free memory; elsewhere the table
                             says how much it would need.

Each entry is the median (and min) of ``--repeats`` runs after one warm-up run.
Usage::

    python benchmarks/bench_metrics.py                    # 1e6 and 1e7 on the CPU (+ GPU if present)
    python benchmarks/bench_metrics.py --sizes 1e4 3e4 1e6 --device cpu --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

try:
    from spoofloss import metrics
except ImportError:  # the package's __init__ needs the compiled library: load the file itself
    import importlib.util

    _path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", "spoofloss", "metrics.py")
    _spec = importlib.util.spec_from_file_location("spoofloss_metrics_standalone", _path)
    metrics = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(metrics)


# ---------------------------------------------------------------------------------------
# numpy: the challenge's formulas (float64), EER + minDCF
# ---------------------------------------------------------------------------------------
def numpy_challenge(bona: np.ndarray, spoof: np.ndarray, p_spoof=0.05, c_miss=1.0, c_fa=10.0):
    nb, ns = bona.size, spoof.size
    every = np.concatenate([bona, spoof])
    is_bona = np.concatenate([np.ones(nb), np.zeros(ns)])
    order = np.argsort(every, kind="mergesort")
    bona_seen = np.cumsum(is_bona[order])
    spoof_unseen = ns - (np.arange(1, nb + ns + 1) - bona_seen)
    miss = np.concatenate([[0.0], bona_seen / nb])
    fa = np.concatenate([[1.0], spoof_unseen / ns])
    i = np.argmin(np.abs(miss - fa))
    eer = (miss[i] + fa[i]) / 2
    p_tar = 1 - p_spoof
    min_dcf = np.min(c_miss * miss * p_tar + c_fa * fa * (1 - p_tar)) / min(c_miss * p_tar, c_fa * (1 - p_tar))
    return float(eer), float(min_dcf)


# ---------------------------------------------------------------------------------------
# SpeechBrain-style thresholds x trials EER (re-implementation, see the module docstring)
# ---------------------------------------------------------------------------------------
def speechbrain_style_eer(pos: torch.Tensor, neg: torch.Tensor) -> float:
    thresholds = torch.unique(torch.cat([pos, neg]))  # sorted unique scores
    midpoints = (thresholds[:-1] + thresholds[1:]) / 2
    thresholds, _ = torch.sort(torch.cat([thresholds, midpoints]))
    frr = (pos.unsqueeze(0) <= thresholds.unsqueeze(1)).sum(1).float() / pos.numel()
    far = (neg.unsqueeze(0) > thresholds.unsqueeze(1)).sum(1).float() / neg.numel()
    i = torch.argmin(torch.abs(far - frr))
    return float((far[i] + frr[i]) / 2)


def speechbrain_style_bytes(n: int) -> int:
    # ~2n thresholds x n trials booleans
    return 2 * n * n


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


# ---------------------------------------------------------------------------------------
def timed(fn, repeats: int, device: torch.device):
    def once():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0, out

    once()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        dt, out = once()
        times.append(dt)
    return statistics.median(times), min(times), out


def make_data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.1).to(torch.int64)
    labels[0], labels[1] = 0, 1
    scores = (torch.randn(n, generator=g) + 2.0 * labels).to(torch.float32)  # float32, as a model gives
    return scores, labels


def bench(sizes, devices, repeats: int):
    rows = []
    for n in sizes:
        scores, labels = make_data(n)
        bona = scores[labels == 1].double().numpy()
        spoof = scores[labels == 0].double().numpy()
        med, best, (np_eer, np_dcf) = timed(lambda: numpy_challenge(bona, spoof), repeats, torch.device("cpu"))
        rows.append(dict(n=n, impl="numpy challenge (EER+minDCF)", device="cpu", median_s=med, min_s=best,
                         eer=np_eer, min_dcf=np_dcf))
        for dev in devices:
            device = torch.device(dev)
            s, lab = scores.to(device), labels.to(device)
            med, best, (e, _) = timed(lambda: metrics.eer(s, lab), repeats, device)
            rows.append(dict(n=n, impl="spoofloss eer", device=dev, median_s=med, min_s=best, eer=e))

            def stream():
                m = metrics.DetectionMetrics()
                for i in range(0, n, 4096):
                    m.update(s[i:i + 4096], lab[i:i + 4096])
                return m

            med, best, m = timed(stream, repeats, device)
            rows.append(dict(n=n, impl=f"DetectionMetrics.update x{(n + 4095) // 4096}", device=dev,
                             median_s=med, min_s=best))
            med, best, r = timed(m.compute, repeats, device)
            rows.append(dict(n=n, impl="spoofloss all (compute: EER, minDCF, actDCF, Cllr)", device=dev,
                             median_s=med, min_s=best, eer=r["eer"], min_dcf=r["min_dcf"]))
            need = speechbrain_style_bytes(n)
            if need < free_bytes(device) // 2:
                pos, neg = s[lab == 1], s[lab == 0]
                med, best, e = timed(lambda: speechbrain_style_eer(pos, neg), repeats, device)
                rows.append(dict(n=n, impl="speechbrain-style EER (re-impl.)", device=dev, median_s=med,
                                 min_s=best, eer=e))
            else:
                rows.append(dict(n=n, impl="speechbrain-style EER (re-impl.)", device=dev, median_s=None,
                                 min_s=None, note=f"skipped: needs ~{need / 2**30:,.0f} GiB"))
            del s, lab
    return rows


def print_table(rows, repeats):
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPU(s), torch threads {torch.get_num_threads()}, median of {repeats} runs"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    head = f"{'N':>10}  {'implementation':<52} {'device':<6} {'median s':>9} {'min s':>9}  {'EER':>10} {'minDCF':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        med = f"{r['median_s']:9.3f}" if r.get("median_s") is not None else f"{'-':>9}"
        best = f"{r['min_s']:9.3f}" if r.get("min_s") is not None else f"{'-':>9}"
        eer = f"{r['eer']:10.6f}" if "eer" in r else f"{'':>10}"
        dcf = f"{r['min_dcf']:10.6f}" if "min_dcf" in r else f"{'':>10}"
        line = f"{r['n']:>10}  {r['impl']:<52} {r['device']:<6} {med} {best}  {eer} {dcf}"
        if "note" in r:
            line += f"  {r['note']}"
        print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--device", nargs="+", default=None, help="cpu and/or cuda (default: cpu, and cuda if present)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    sizes = [int(s) for s in args.sizes]
    rows = bench(sizes, devices, args.repeats)
    print_table(rows, args.repeats)
    # the spoofloss EER must equal the challenge formula's on the same scores
    for n in sizes:
        ref = [r["eer"] for r in rows if r["n"] == n and r["impl"].startswith("numpy")][0]
        for r in rows:
            if r["n"] == n and r["impl"].startswith("spoofloss") and abs(r["eer"] - ref) > 1e-12:
                print(f"MISMATCH at N={n}: {r['impl']} on {r['device']} EER {r['eer']} != numpy {ref}")
                return 1
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
