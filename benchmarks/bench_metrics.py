"""Benchmark of spoofloss.metrics (Track 1 metrics on 10^6 and 10^7 scores, pooled and per
attack, and the command ``python -m spoofloss.metrics`` end to end on a 10^7-line score
file, with and without the per-attack table).

Compared implementations (all on the same random scores, ~10 % bona fide, the spoof
trials spread over 32 attacks), timed in interleaved rounds (round r times every
contender once), so that a machine shared with other jobs slows them alike:

* ``spoofloss eer``        - spoofloss.metrics.eer (one stable sort + cumulative counts);
* ``spoofloss all``        - DetectionMetrics.compute(): EER, minDCF, actDCF and Cllr from
                             one sort (plus update() of the data in batches of 4096, timed
                             separately as ``update``);
* ``spoofloss per attack`` - DetectionMetrics(grouping="attack").compute(): the same
                             metrics pooled and for each of the 32 attacks (all bona fide
                             trials against the attack's spoof trials);
* ``numpy challenge``      - the ASVspoof package's formulas restated in numpy float64
                             (concatenate, argsort(kind="mergesort"), cumsum): EER, minDCF,
                             actDCF and CLLR; the minDCF is vectorised here (the package loops
                             in Python, which would add seconds per 10^7 trials);
* ``numpy per attack``     - the same restatement called once per attack (what a user of
                             the package does: select, concatenate, sort again), up to
                             ``--numpy-per-attack-max`` trials (default 2e6; it takes about
                             32 pooled runs); its numbers must equal ``spoofloss per attack``;
* ``speechbrain-style``    - a RE-IMPLEMENTATION (not SpeechBrain's code) of SpeechBrain's
                             EER algorithm: every unique score and every midpoint between
                             two is a threshold, and a thresholds x trials comparison matrix
                             gives FRR/FAR.  It needs ~2 N^2 bytes (SpeechBrain's own code
                             needs more: it also materialises float copies), so it runs only
                             where that fits in half of the free memory; elsewhere the table
                             says how much it would need.

* ``command``              - ``--command N``: writes an N-line score file and its key (two
                             columns, and a second key with an attack column: 32 attacks)
                             and times ``python -m spoofloss.metrics`` end to end (process
                             start, read, parse, match, score, print), interleaved; each row
                             also gives the command's peak resident memory (VmHWM at exit).

Each entry is the median (and min) of ``--repeats`` rounds after one warm-up run.
Usage::

    python benchmarks/bench_metrics.py                    # 1e6 and 1e7 on the CPU (+ GPU if present)
    python benchmarks/bench_metrics.py --sizes 1e4 3e4 1e6 --device cpu --repeats 5
    python benchmarks/bench_metrics.py --sizes 1e7 --command 1e7 --json benchmarks/results/cpu-amd-epyc/metrics-<date>.json
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
except ImportError:  # the package's __init__ needs the compiled library: load the subpackage itself
    import importlib.util

    _dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", "spoofloss", "metrics")
    _spec = importlib.util.spec_from_file_location("spoofloss_metrics_standalone", os.path.join(_dir, "__init__.py"),
                                                   submodule_search_locations=[_dir])
    metrics = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = metrics
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
    thr = -np.log(c_miss * (1 - p_spoof) / (c_fa * p_spoof))
    act = (c_miss * (1 - p_spoof) * np.mean(bona < thr) + c_fa * p_spoof * np.mean(spoof >= thr)) / min(
        c_fa * p_spoof, c_miss * (1 - p_spoof))
    cllr = 0.5 * (np.mean(np.log1p(np.exp(-bona))) + np.mean(np.log1p(np.exp(spoof)))) / np.log(2)
    return float(eer), float(min_dcf), float(act), float(cllr)


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
def interleaved(contenders, repeats: int, device: torch.device):
    """name -> (median s, min s, last output); one warm-up each, then rounds."""
    def once(fn):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0, out

    outs = {name: once(fn)[1] for name, fn in contenders.items()}  # warm-up
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            dt, outs[name] = once(fn)
            times[name].append(dt)
    return {name: (statistics.median(times[name]), min(times[name]), outs[name]) for name in contenders}


N_ATTACKS = 32


def make_data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.1).to(torch.int64)
    labels[0], labels[1] = 0, 1
    scores = (torch.randn(n, generator=g) + 2.0 * labels).to(torch.float32)  # float32, as a model gives
    attacks = torch.randint(1, N_ATTACKS + 1, (n,), generator=g)  # read for spoof trials only
    return scores, labels, attacks


def numpy_per_attack(bona: np.ndarray, spoof: np.ndarray, spoof_attack: np.ndarray):
    """attack -> (eer, min_dcf, act_dcf, cllr), the restatement called once per attack."""
    return {int(a): numpy_challenge(bona, spoof[spoof_attack == a]) for a in np.unique(spoof_attack)}


def bench(sizes, devices, repeats: int, numpy_per_attack_max: int):
    rows = []
    for n in sizes:
        scores, labels, attacks = make_data(n)
        bona = scores[labels == 1].double().numpy()
        spoof = scores[labels == 0].double().numpy()
        spoof_attack = attacks[labels == 0].numpy()
        for dev in devices:
            device = torch.device(dev)
            s, lab, att = scores.to(device), labels.to(device), attacks.to(device)
            s64 = s.double()

            def stream():
                m = metrics.DetectionMetrics()
                for i in range(0, n, 4096):
                    m.update(s[i:i + 4096], lab[i:i + 4096])
                return m

            metric = stream()
            metric64 = metrics.DetectionMetrics()
            metric64.update(s64, lab)
            per_attack = metrics.DetectionMetrics(grouping="attack")
            per_attack.update(s, lab, groups=att)
            contenders = {
                "numpy challenge (EER, minDCF, actDCF, Cllr)": lambda: numpy_challenge(bona, spoof),
                "spoofloss eer": lambda: metrics.eer(s, lab),
                f"DetectionMetrics.update x{(n + 4095) // 4096}": stream,
                "spoofloss all Track 1 (compute: EER, minDCF, actDCF, Cllr), float32": metric.compute,
                "spoofloss all Track 1, float64 scores (as files give)": metric64.compute,
                f"spoofloss per attack ({N_ATTACKS} attacks + pooled), float32": per_attack.compute,
            }
            if n <= numpy_per_attack_max:
                contenders[f"numpy per attack ({N_ATTACKS} calls)"] = lambda: numpy_per_attack(bona, spoof, spoof_attack)
            got = interleaved(contenders, repeats, device)
            for name, (med, best, out) in got.items():
                row = dict(n=n, impl=name, device=dev if not name.startswith("numpy") else "cpu",
                           median_s=med, min_s=best)
                if name.startswith("numpy per attack"):
                    row.update(groups={a: dict(zip(("eer", "min_dcf", "act_dcf", "cllr"), v)) for a, v in out.items()})
                elif name.startswith("numpy"):
                    row.update(eer=out[0], min_dcf=out[1], act_dcf=out[2], cllr=out[3])
                elif name == "spoofloss eer":
                    row.update(eer=out[0])
                elif name.startswith("spoofloss"):
                    row.update(eer=out["eer"], min_dcf=out["min_dcf"], act_dcf=out["act_dcf"], cllr=out["cllr"])
                    if "groups" in out:
                        row.update(groups={a: {k: g[k] for k in ("eer", "min_dcf", "act_dcf", "cllr")}
                                           for a, g in out["groups"].items()})
                rows.append(row)
            need = speechbrain_style_bytes(n)
            if need < free_bytes(device) // 2:
                pos, neg = s[lab == 1], s[lab == 0]
                med, best, e = interleaved({"sb": lambda: speechbrain_style_eer(pos, neg)}, repeats, device)["sb"]
                rows.append(dict(n=n, impl="speechbrain-style EER (re-impl.)", device=dev, median_s=med,
                                 min_s=best, eer=e))
            else:
                rows.append(dict(n=n, impl="speechbrain-style EER (re-impl.)", device=dev, median_s=None,
                                 min_s=None, note=f"skipped: needs ~{need / 2**30:,.0f} GiB"))
            del s, lab, att
    return rows


def check_rows(rows, sizes) -> bool:
    """The spoofloss numbers equal the numpy restatement's on the same scores (pooled, and
    per attack where the numpy loop ran); prints the first mismatch."""
    for n in sizes:
        ref = [r for r in rows if r["n"] == n and r["impl"].startswith("numpy challenge")][0]
        ref_groups = [r["groups"] for r in rows if r["n"] == n and r["impl"].startswith("numpy per attack")]
        for r in rows:
            if r["n"] != n or not r["impl"].startswith("spoofloss"):
                continue
            pairs = [(key, r[key], ref[key]) for key in ("eer", "min_dcf", "act_dcf") if key in r]
            if "groups" in r and ref_groups:
                if sorted(r["groups"]) != sorted(ref_groups[0]):
                    print(f"MISMATCH at N={n}: {r['impl']} attacks {sorted(r['groups'])} != {sorted(ref_groups[0])}")
                    return False
                pairs += [(f"attack {a} {key}", g[key], ref_groups[0][a][key])
                          for a, g in r["groups"].items() for key in ("eer", "min_dcf", "act_dcf", "cllr")]
            for key, got, want in pairs:
                # CLLR sums in another order (sorted vs input order): equal to rounding
                tol = 1e-12 * max(1.0, abs(want)) if key.endswith("cllr") else 1e-12
                if abs(got - want) > tol:
                    print(f"MISMATCH at N={n}: {r['impl']} on {r['device']} {key} {got} != numpy {want}")
                    return False
    return True


def write_challenge_files(directory: str, n: int, seed: int = 0):
    """An n-line CM score file in random order, its key, and the key with an attack column."""
    rng = np.random.default_rng(seed)
    bona = rng.random(n) < 0.1
    score = rng.normal(size=n) + 2 * bona
    names = np.char.add("E_", np.char.zfill(np.arange(n).astype("U10"), 10))
    order = rng.permutation(n)
    paths = {k: os.path.join(directory, k + ".tsv") for k in ("scores", "key", "key_attack")}
    with open(paths["scores"], "w") as f:
        f.write("filename\tcm-score\n")
        f.write("\n".join(np.char.add(np.char.add(names[order], "\t"), np.char.mod("%.6f", score[order])).tolist()))
        f.write("\n")
    label = np.where(bona, "bonafide", "spoof")
    attack = np.where(bona, "bonafide", np.char.add("A", np.char.zfill(rng.integers(1, 33, n).astype("U2"), 2)))
    lines = np.char.add(np.char.add(names, "\t"), label)
    with open(paths["key"], "w") as f:
        f.write("filename\tcm-label\n" + "\n".join(lines.tolist()) + "\n")
    with open(paths["key_attack"], "w") as f:
        f.write("filename\tcm-label\tattack\n" + "\n".join(np.char.add(np.char.add(lines, "\t"), attack).tolist())
                + "\n")
    return paths


def bench_command(n: int, repeats: int):
    import subprocess
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = write_challenge_files(tmp, n)
        print(f"(wrote the {n:,}-line files in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python")]
            + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))

        peaks = {}
        # ``python -m spoofloss.metrics`` as -m runs it (runpy), plus an exit hook that writes
        # the process's peak resident memory (VmHWM: its own address space; ru_maxrss would
        # carry the benchmark's own peak across fork and exec)
        launcher = ("import atexit, os, runpy\n"
                    "def _peak():\n"
                    "    with open('/proc/self/status') as f, open(os.environ['SPOOFLOSS_BENCH_PEAK'], 'w') as out:\n"
                    "        out.write(next(l.split()[1] for l in f if l.startswith('VmHWM:')))\n"
                    "atexit.register(_peak)\n"
                    "runpy.run_module('spoofloss.metrics', run_name='__main__', alter_sys=True)\n")
        peak_file = os.path.join(tmp, "peak")

        def command(key):
            def run():
                done = subprocess.run([sys.executable, "-c", launcher, "--cm", paths["scores"], "--cm_key",
                                       paths[key], "--quiet"], capture_output=True, text=True,
                                      env=dict(env, SPOOFLOSS_BENCH_PEAK=peak_file))
                if done.returncode:
                    raise RuntimeError(done.stderr)
                with open(peak_file) as f:
                    peaks.setdefault(key, []).append(int(f.read()) * 1024)  # kB
                return done.stdout
            return run

        names = {"key": "command, key filename + cm-label",
                 "key_attack": f"command, key with attack column ({N_ATTACKS} attacks, per-attack table)"}
        got = interleaved({name: command(key) for key, name in names.items()}, repeats, torch.device("cpu"))
        for key, name in names.items():
            med, best, out = got[name]
            rows.append(dict(n=n, impl=f"python -m spoofloss.metrics: {name}", device="cpu", median_s=med, min_s=best,
                             peak_rss_mib=max(peaks[key]) / 2**20, summary=out.split("\n")[2:6]))
    return rows


def print_table(rows, repeats):
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPU(s), torch threads {torch.get_num_threads()}, median of {repeats} runs"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    head = f"{'N':>10}  {'implementation':<70} {'device':<6} {'median s':>9} {'min s':>9}  {'EER':>10} {'minDCF':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        med = f"{r['median_s']:9.3f}" if r.get("median_s") is not None else f"{'-':>9}"
        best = f"{r['min_s']:9.3f}" if r.get("min_s") is not None else f"{'-':>9}"
        eer = f"{r['eer']:10.6f}" if "eer" in r else f"{'':>10}"  # noqa: E501
        dcf = f"{r['min_dcf']:10.6f}" if "min_dcf" in r else f"{'':>10}"
        line = f"{r['n']:>10}  {r['impl']:<70} {r['device']:<6} {med} {best}  {eer} {dcf}"
        if "peak_rss_mib" in r:
            line += f"  peak RSS {r['peak_rss_mib']:,.0f} MiB"
        if "note" in r:
            line += f"  {r['note']}"
        print(line)


def machine():
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--device", nargs="+", default=None, help="cpu and/or cuda (default: cpu, and cuda if present)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--command", type=float, default=None, help="also time the command on files of this many lines")
    parser.add_argument("--command-repeats", type=int, default=2)
    parser.add_argument("--numpy-per-attack-max", type=float, default=2e6,
                        help="run the numpy per-attack loop up to this many trials (default 2e6)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    sizes = [int(s) for s in args.sizes]
    load_before = os.getloadavg()
    rows = bench(sizes, devices, args.repeats, int(args.numpy_per_attack_max))
    if args.command:
        rows += bench_command(int(args.command), args.command_repeats)
    print_table(rows, args.repeats)
    # the spoofloss numbers must equal the challenge formulas' on the same scores
    if not check_rows(rows, sizes):
        return 1
    if args.json:
        meta = dict(machine=machine(), cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                    torch=torch.__version__, numpy=np.__version__, python=platform.python_version(),
                    repeats=args.repeats, command_repeats=args.command_repeats,
                    load_average_before=load_before, load_average_after=os.getloadavg(),
                    note="medians of interleaved rounds; the machine is shared with other jobs (see the load averages)")
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
