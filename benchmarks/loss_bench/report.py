"""The loss benchmark's output: the terminal table, the performance targets, the plot.

Everything here reads the run record (record.py) that bench_losses.py saves as
JSON, so ``--plot-only`` can redo all of it from a saved file (records written
before the registry, with losses "am" / "oc" / "binary", read as well).
"""

from __future__ import annotations

import math
from typing import Optional

from harness import format_bytes, format_time

PROVIDER_ORDER = ("spoofloss", "eager", "compile")
OUTPUT_DIFF_WARNING = 1e-3  # relative difference from eager's output that deserves a warning

# The project's targets, for every cosine loss. CPU ones are speed-ups of spoofloss in
# float32 train mode, written for 2 threads; GPU ones are fractions of copy bandwidth.
# A configuration with more centres than its loss's default (e.g. 64) keeps its train
# step within CENTRES_STEP_RATIO of the default's at the same size.
CPU_SPEEDUP_TARGETS = (
    ((8, 50, 64), (("eager", 4.0),)),
    ((32, 200, 128), (("eager", 3.0), ("compile", 1.0))),
    ((64, 400, 256), (("eager", 1.8),)),
)
CPU_AUTOGRAD_FLOOR_RATIO = 1.3
CPU_TARGET_THREADS = 2
GPU_SPEEDUP_TARGETS = (((32, 200, 128), (("eager", 10.0), ("compile", 2.0))),)
GPU_BANDWIDTH_MIN_EMB_BYTES = 64 << 20  # "once emb >= 64 MB" (read as MiB)
GPU_FLOOR_FRACTION = {"train": 0.80, "score": 0.85}
CENTRES_STEP_RATIO = 1.5


def family(case: dict) -> str:
    """"cosine" or "logits" (records written before the registry have no family)."""
    return case.get("family") or ("logits" if case["loss"] == "binary" else "cosine")


def configuration(case: dict) -> str:
    return case.get("configuration") or case["loss"]


# --------------------------------------------------------------------------- numbers
def median(case: dict, provider: str) -> Optional[float]:
    result = case["providers"].get(provider)
    return result.get("median_s") if result else None


def speedup(case: dict, over: str) -> Optional[float]:
    """How many times faster spoofloss is than ``over`` on this case."""
    ours, theirs = median(case, "spoofloss"), median(case, over)
    return theirs / ours if ours and theirs else None


def floor_fraction(case: dict, provider: str) -> Optional[float]:
    t = median(case, provider)
    return case["floor_s"] / t if t else None


def autograd_ratio(case: dict, provider: str) -> Optional[float]:
    t, floor = median(case, provider), case.get("autograd_floor")
    return t / floor["median_s"] if t and floor else None


def _size(case: dict) -> tuple:
    return case["batch"], case["frames"], case["dim"]


def _fmt(value: Optional[float], pattern: str, missing: str = "-") -> str:
    return missing if value is None or not math.isfinite(value) else pattern.format(value)


# --------------------------------------------------------------------------- table
def print_run(run: dict) -> None:
    bw = run["bandwidth"]
    print()
    print(f"device {run['device']['name']} ({run['device']['type']}), {run['threads']} threads, "
          f"torch {run['torch']}, commit {run['commit'][:10]}{' (dirty)' if run.get('dirty') else ''}, "
          f"{run['timestamp']}")
    copied = format_bytes(bw["bytes_per_copy"] / 2)
    print(f"copy bandwidth {bw['bytes_per_s'] / 1e9:.1f} GB/s (read + write of {copied}, median of {bw['reps']}); "
          f"compile: {run['settings']['compile_shapes']} shapes")
    print("times: median [p20 - p80] per step; 'sl speed-up' = this provider's time / spoofloss's; "
          "'% floor' = byte-floor time / time; 'x autograd' = time / autograd floor; "
          "'peak' = bytes allocated by one step above what was live before it")
    for case in run["cases"]:
        _print_case(case)
    _print_summary(run["cases"])
    print_targets(run)


def _print_case(case: dict) -> None:
    floor = case.get("autograd_floor")
    autograd = f", autograd floor {format_time(floor['median_s'])}" if floor else ""
    print(f"\n{case['label']}: emb {format_bytes(case['emb_bytes'])}, byte floor {format_bytes(case['floor_bytes'])}"
          f" = {format_time(case['floor_s'])}{autograd}")
    print(f"  {'provider':<10} {'median':>9}  {'[p20 - p80]':<21} {'sl speed-up':>11} {'% floor':>8} "
          f"{'x autograd':>10} {'peak':>10} {'compile':>8}")
    for name in PROVIDER_ORDER:
        result = case["providers"].get(name)
        if result is None:
            continue
        if result.get("error"):
            print(f"  {name:<10} error: {result['error']}")
            continue
        spread = f"[{format_time(result['p20_s'])} - {format_time(result['p80_s'])}]"
        ratio = "" if name == "spoofloss" else _fmt(speedup(case, name), "{:.2f}x")
        fraction = _fmt(floor_fraction(case, name), "{:.0%}")
        compile_s = _fmt(result.get("compile_s"), "{:.1f} s", "")
        warning = ""
        if result.get("output_diff") is not None and result["output_diff"] > OUTPUT_DIFF_WARNING:
            warning = f"  ! output differs from eager's by {result['output_diff']:.1e} (relative)"
        print(f"  {name:<10} {format_time(result['median_s']):>9}  {spread:<21} {ratio:>11} {fraction:>8} "
              f"{_fmt(autograd_ratio(case, name), '{:.2f}'):>10} {format_bytes(result.get('peak_bytes')):>10} "
              f"{compile_s:>8}{warning}")


def _print_summary(cases: list[dict]) -> None:
    """One line per case: the comparison at a glance."""
    width = max(len(c["label"]) for c in cases)
    print("\nsummary (spoofloss speed-up = other's median / spoofloss's)")
    print(f"  {'case':<{width}} {'spoofloss':>9} {'eager':>9} {'compile':>9} {'vs eager':>9} {'vs compile':>10} "
          f"{'% floor':>8} {'x autograd':>10}")
    for case in cases:
        times = [format_time(median(case, p)) for p in PROVIDER_ORDER]
        print(f"  {case['label']:<{width}} {times[0]:>9} {times[1]:>9} {times[2]:>9} "
              f"{_fmt(speedup(case, 'eager'), '{:.2f}x'):>9} {_fmt(speedup(case, 'compile'), '{:.2f}x'):>10} "
              f"{_fmt(floor_fraction(case, 'spoofloss'), '{:.0%}'):>8} "
              f"{_fmt(autograd_ratio(case, 'spoofloss'), '{:.2f}'):>10}")


# --------------------------------------------------------------------------- targets
def evaluate_targets(run: dict) -> list[dict]:
    """Each target the run can judge, as {target, case, value, need, passed}; passed is
    None where the run lacks the case or the provider the target needs."""
    cases = [c for c in run["cases"] if family(c) == "cosine"]
    if run["device"]["type"] == "cuda":
        return _speedup_targets(cases, GPU_SPEEDUP_TARGETS, "gpu") + _bandwidth_targets(cases) + _centres_targets(cases)
    results = _speedup_targets(cases, CPU_SPEEDUP_TARGETS, "cpu") + _centres_targets(cases)
    for case in cases:
        if case["mode"] == "train" and case["dtype"] == "float32":
            ratio = autograd_ratio(case, "spoofloss")
            results.append(_target(f"cpu train: spoofloss <= {CPU_AUTOGRAD_FLOOR_RATIO}x the autograd floor",
                                   case["label"], ratio, f"<= {CPU_AUTOGRAD_FLOOR_RATIO}",
                                   None if ratio is None else ratio <= CPU_AUTOGRAD_FLOOR_RATIO))
    return results


def _speedup_targets(cases, targets, device: str) -> list[dict]:
    """Speed-up targets for the default configurations (a variant's cost is judged against them)."""
    results = []
    defaults = [c for c in cases if not c.get("variant")]
    for size, needs in targets:
        matching = [c for c in defaults if c["mode"] == "train" and c["dtype"] == "float32" and _size(c) == size]
        for other, factor in needs:
            # "faster than compile" is a speed-up above 1; the others are "at least"
            need = f"> {factor:g}x" if factor == 1.0 else f">= {factor:g}x"
            name = f"{device} train float32 B={size[0]} T={size[1]} D={size[2]}: spoofloss {need} {other}"
            if not matching:
                results.append(_target(name, None, None, need, None))
            for case in matching:
                value = speedup(case, other)
                ok = None if value is None else (value > factor if factor == 1.0 else value >= factor)
                results.append(_target(name, case["label"], value, need, ok))
    return results


def _bandwidth_targets(cases) -> list[dict]:
    results = []
    for mode, fraction in GPU_FLOOR_FRACTION.items():
        name = f"gpu {mode}, emb >= 64 MiB: spoofloss >= {fraction:.0%} of copy bandwidth"
        large = [c for c in cases if c["mode"] == mode and c["emb_bytes"] >= GPU_BANDWIDTH_MIN_EMB_BYTES]
        if not large:
            results.append(_target(name, None, None, f">= {fraction:.0%}", None))
        for case in large:
            value = floor_fraction(case, "spoofloss")
            results.append(_target(name, case["label"], value, f">= {fraction:.0%}",
                                   None if value is None else value >= fraction))
    return results


def _centres_targets(cases) -> list[dict]:
    """A variant with more centres than its loss's default: its train step against the default's."""
    results = []
    for case in cases:
        if not case.get("variant") or case["mode"] != "train" or case["dtype"] != "float32":
            continue
        default = next((c for c in cases if c["loss"] == case["loss"] and not c.get("variant")
                        and (c["mode"], c["dtype"], c["lengths"], _size(c)) ==
                        (case["mode"], case["dtype"], case["lengths"], _size(case))), None)
        if default is None or case.get("centers", 0) <= default.get("centers", 0):
            continue
        ours, theirs = median(case, "spoofloss"), median(default, "spoofloss")
        ratio = ours / theirs if ours and theirs else None
        name = (f"train: {case['configuration']} (C={case['centers']}) <= {CENTRES_STEP_RATIO}x the default "
                f"(C={default['centers']})")
        results.append(_target(name, case["label"], ratio, f"<= {CENTRES_STEP_RATIO}",
                               None if ratio is None else ratio <= CENTRES_STEP_RATIO))
    return results


def _target(name, case, value, need, passed) -> dict:
    return {"target": name, "case": case, "value": value, "need": need, "passed": passed}


def print_targets(run: dict) -> None:
    targets = run.get("targets") or evaluate_targets(run)
    device = run["device"]["type"]
    note = ""
    if device == "cpu" and run["threads"] != CPU_TARGET_THREADS:
        note = f" -- the CPU targets are set for {CPU_TARGET_THREADS} threads, this run used {run['threads']}"
    print(f"\ntargets ({device}, {run['threads']} threads{note})")
    if not targets:
        print("  none of the target cases ran")
    for t in targets:
        if t["passed"] is None:
            why = "no such case in this run" if t["case"] is None else "a provider it needs did not run"
            print(f"  n/a   {t['target']}: {why}")
            continue
        value = f"{t['value']:.0%}" if "%" in t["need"] else f"{t['value']:.2f}" + ("x" if "x" in t["need"] else "")
        print(f"  {'PASS' if t['passed'] else 'MISS'}  {t['target']}: {t['case']}: {value} (need {t['need']})")
    other = "GPU" if device == "cpu" else "CPU"
    print(f"  ({other} targets are judged on a {other} run)")


# --------------------------------------------------------------------------- plot
PROVIDER_COLORS = {"spoofloss": "tab:blue", "eager": "tab:red", "compile": "tab:orange"}
FLOOR_COLORS = {"byte floor": "0.6", "autograd floor": "0.25"}
VARIANT_STYLES = ("-", "--", ":", "-.")


def plot(run: dict, path: str) -> bool:
    """Time against B*T*D, log-log: a panel per (loss, mode); colour = provider (grey:
    the floors), line style = variant (dtype, lengths); one legend for the figure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False
    cases = [c for c in run["cases"] if any(not p.get("error") for p in c["providers"].values())]
    if not cases:
        return False
    losses = list(dict.fromkeys(configuration(c) for c in cases))
    modes = [m for m in ("forward", "train", "score") if any(c["mode"] == m for c in cases)]
    variants = sorted({(c["dtype"], c["lengths"]) for c in cases}, key=lambda v: (v[0] != "float32", not v[1]))
    style_of = {v: VARIANT_STYLES[i % len(VARIANT_STYLES)] for i, v in enumerate(variants)}
    handles = [Line2D([], [], color=PROVIDER_COLORS[p], marker="o", markersize=3, label=p) for p in PROVIDER_ORDER]
    handles += [Line2D([], [], color=c, marker="x", markersize=3, label=n) for n, c in FLOOR_COLORS.items()]
    handles += [Line2D([], [], color="black", linestyle=s, label=f"{d}" + (", lengths" if l else ", no lengths"))
                for (d, l), s in style_of.items()]
    width = max(8.0, 4.4 * len(modes))
    legend_columns = min(len(handles), int(width / 1.7))
    legend_height = 0.3 * math.ceil(len(handles) / legend_columns) + 0.2
    height = 3.3 * len(losses) + 0.4 + legend_height
    fig, axes = plt.subplots(len(losses), len(modes), figsize=(width, height), squeeze=False)
    for row, loss in enumerate(losses):
        for col, mode in enumerate(modes):
            ax = axes[row][col]
            panel = [c for c in cases if configuration(c) == loss and c["mode"] == mode]
            if not panel:
                ax.set_visible(False)
                continue
            ax.set_title(f"{loss} {mode}", fontsize=10)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.25)
            ax.margins(0.15)
            for variant, style in style_of.items():
                series = sorted((c for c in panel if (c["dtype"], c["lengths"]) == variant),
                                key=lambda c: (c["elements"], c["batch"]))
                lines = {name: [(c["elements"], median(c, name)) for c in series if median(c, name)]
                         for name in PROVIDER_ORDER}
                lines["byte floor"] = [(c["elements"], c["floor_s"]) for c in series]
                lines["autograd floor"] = [(c["elements"], c["autograd_floor"]["median_s"])
                                           for c in series if c.get("autograd_floor")]
                for name, points in lines.items():
                    if points:
                        color = PROVIDER_COLORS.get(name) or FLOOR_COLORS[name]
                        ax.plot(*zip(*points), style, color=color, marker="x" if "floor" in name else "o",
                                markersize=3, linewidth=1 if "floor" in name else 1.5)
            ax.set_xlabel("B*T logits" if family(panel[0]) == "logits" else "B*T*D", fontsize=8)
            if col == 0:
                ax.set_ylabel("seconds per step", fontsize=8)
    fig.legend(handles=handles, loc="lower center", ncol=legend_columns, fontsize=8, frameon=False)
    fig.suptitle(f"{run['device']['name']}, {run['threads']} threads, torch {run['torch']}, "
                 f"commit {run['commit'][:10]}: median time per step", fontsize=10)
    fig.tight_layout(rect=(0, legend_height / height, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
