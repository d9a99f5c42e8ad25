"""What a run will cost: the estimate printed first and the ETA of the progress line."""

from __future__ import annotations

import glob
import json
import math
import os
import statistics
from typing import Optional

from .cases import Case


class CostModel:
    """Seconds one measurement costs the run: for the estimate printed first and the ETA.

    A step is modelled as a fixed overhead plus its traffic, a multiple of the
    byte floor at the measured bandwidth; the measurement then costs what
    harness.measure will spend on such a step. `compile` adds its compile time,
    which depends on inductor's on-disk cache: cold (the median of the cold
    compiles of earlier runs on this device when there are any, else a guess)
    or warm (graphs compiled before, by any run), plus a one-off start-up for
    the first compile of the run.
    """

    STEP_OVERHEAD_S = {"spoofloss": 30e-6, "eager": 300e-6, "compile": 100e-6, "autograd floor": 40e-6}
    TRAFFIC_OVER_FLOOR = {"spoofloss": 1.5, "eager": 6.0, "compile": 3.0, "autograd floor": 1.5}
    SETUP_S = 0.05  # inputs, modules, the output check, the memory profile
    RUN_OVERHEAD_S = 5.0  # once per run: the profiler's start-up, the JSON, the plot
    WARM_COMPILE_S = 2.0  # a graph inductor's cache already holds
    COLD_COMPILE_THRESHOLD_S = 5.0  # earlier compiles above this were cache misses

    def __init__(self, device, bytes_per_s, budget, compile_shapes, results_dir):
        cuda = device.type == "cuda"
        self.bytes_per_s, self.budget, self.compile_shapes = bytes_per_s, budget, compile_shapes
        self.cold_compile_s = self._earlier_cold_compile_s(results_dir) or (10.0 if cuda else 15.0)
        self.compile_startup_s = 10.0 if cuda else 15.0

    def _earlier_cold_compile_s(self, results_dir) -> Optional[float]:
        seen = []
        for path in sorted(glob.glob(os.path.join(results_dir, "*.json")))[-5:]:
            try:
                with open(path) as f:
                    run = json.load(f)
            except (OSError, ValueError):
                continue
            compiles = [c["providers"]["compile"].get("compile_s") for c in run.get("cases", [])
                        if "compile" in c.get("providers", {})]
            # the run's first compile also paid the start-up: leave it out
            seen += [t for t in compiles[1:] if t and t > self.COLD_COMPILE_THRESHOLD_S]
        return statistics.median(seen) if seen else None

    def step_s(self, case: Case, what: str) -> float:
        traffic = case.emb_bytes * (0.75 if case.lengths else 1.0) + (case.emb_bytes if case.mode == "train" else 0)
        return self.STEP_OVERHEAD_S[what] + self.TRAFFIC_OVER_FLOOR[what] * traffic / self.bytes_per_s

    def measurement_s(self, case: Case, what: str) -> float:
        b, per_call = self.budget, self.step_s(case, what)
        reps = min(b.max_reps, max(b.min_reps, math.ceil(b.min_time / per_call)))
        if per_call * reps > b.max_time:
            reps = max(b.min_reps, int(b.max_time / per_call))
        warmup = max(b.warmup_reps * per_call, b.warmup_time)
        return self.SETUP_S + warmup + (reps + 2) * per_call

    def plan(self, cases, providers, compile_s: float) -> list[tuple[Case, str, float]]:
        """Every measurement of the run, in order, with its modelled cost (compile_s per graph)."""
        items, compiled_keys = [], set()
        for case in cases:
            if case.mode == "train":
                items.append((case, "autograd floor", self.measurement_s(case, "autograd floor")))
            for name in providers:
                cost = self.measurement_s(case, name)
                if name == "compile":
                    key = case if self.compile_shapes == "static" else (
                        case.loss, case.variant, case.mode, case.dtype, case.lengths, case.dim, case.batch == 1,
                        case.frames == 1)
                    if key not in compiled_keys:
                        cost += compile_s + (self.compile_startup_s if not compiled_keys else 0.0)
                        compiled_keys.add(key)
                items.append((case, name, cost))
        return items
