"""The run's record: one JSON file (and its plot) per run under
benchmarks/results/<device>/, named <UTC time>-<commit>.json / .png.

README embeds a committed run's own PNG by its name, so no copy of the latest
plot is kept beside them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone

import torch

import spoofloss

import harness

from . import report

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT_DIR = os.path.join(REPO_DIR, "benchmarks", "results")


def make_record(args, argv, device, name, bandwidth, budget, providers, cache_bytes, results, started, estimate):
    """The JSON-serialisable record of a finished run, targets evaluated."""
    commit, dirty = harness.git_commit(REPO_DIR)
    run = {
        "schema": 2,
        "device": {"type": device.type, "name": name, "slug": harness.device_slug(device)},
        "torch": torch.__version__,
        "commit": commit,
        "dirty": dirty,
        "threads": torch.get_num_threads(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "spoofloss_build": spoofloss.build_info(),
        "bandwidth": bandwidth.as_dict(),
        "settings": {"budget": asdict(budget), "compile_shapes": args.compile_shapes,
                     "compile_mode": args.compile_mode, "providers": providers, "seed": args.seed,
                     "last_level_cache_bytes": cache_bytes, "argv": sys.argv[1:] if argv is None else list(argv)},
        "cases": [r.as_dict() for r in results],
    }
    run["targets"] = report.evaluate_targets(run)
    run["elapsed_s"] = time.perf_counter() - started
    run["estimated_s"] = estimate
    return run


def save(run: dict, results_dir: str, plot: bool) -> None:
    """Write the record (and, with ``plot``, its PNG) and say where."""
    os.makedirs(results_dir, exist_ok=True)
    stamp = datetime.fromisoformat(run["timestamp"])
    stem = os.path.join(results_dir, f"{stamp.strftime('%Y%m%dT%H%M%SZ')}-{run['commit'][:10]}")
    with open(stem + ".json", "w") as f:
        json.dump(run, f, indent=1)
    print(f"\nresults: {stem}.json")
    if plot and report.plot(run, stem + ".png"):
        print(f"plot: {stem}.png")


def replot(path: str) -> None:
    """--plot-only: the table, the targets and the plot again from a saved record."""
    with open(path) as f:
        run = json.load(f)
    report.print_run(run)
    png = os.path.splitext(path)[0] + ".png"
    if report.plot(run, png):
        print(f"plot: {png}")
