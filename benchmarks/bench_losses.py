"""Benchmark of the spoofloss losses against the plain-PyTorch reference, eager and compiled.

    python benchmarks/bench_losses.py                 # default set (targets), local device
    python benchmarks/bench_losses.py --full          # the whole sweep (prints an estimate first)
    python benchmarks/bench_losses.py --loss oc_softmax --mode train score --batch 32 --frames 200 --dim 128
    python benchmarks/bench_losses.py --plot-only benchmarks/results/<device>/<run>.json

Every loss of spoofloss.registry.LOSSES is a case of the run without editing
this harness (loss_bench/cases.py): a case is (loss, configuration, mode, B,
T, D, dtype, lengths or not), timed for three providers on the same inputs and
the same parameter values: ``spoofloss`` (the fused module), ``eager`` (its twin
from spoofloss.reference: the ESPnet-style chain of torch ops) and ``compile``
(torch.compile of the whole step that eager runs; loss_bench/steps.py). The
first call, which compiles, is timed on its own and reported as compile time.

The floors, per case, measured in the same run: the byte floor (the bytes the
step must move, loss_bench/inputs.py, over the bandwidth of one large copy,
harness.copy_bandwidth; "% floor" is floor time / measured time) and the
autograd floor in train ("x autograd" is measured time / that time).

Output: a table on stdout, a JSON record and a PNG plot under
benchmarks/results/<device>/ (loss_bench/record.py), and a "targets" section
evaluating the project's performance targets on the cases that ran
(loss_bench/report.py).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict

import torch

try:
    import spoofloss  # noqa: F401
except ImportError:  # a checkout whose library was built in place but not installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import spoofloss  # noqa: F401

import harness
from loss_bench import cli, record, report
from loss_bench.cases import select_cases
from loss_bench.cost_model import CostModel
from loss_bench.run import run_case
from loss_bench.steps import Compiler

# inductor warns on every compile that a CPU-only machine has no CUDA runtime
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def main(argv=None) -> int:
    args = cli.parse_args(argv)
    if args.plot_only:
        record.replot(args.plot_only)
        return 0

    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    budget = harness.QUICK_BUDGET if args.quick else harness.TimingBudget()
    if args.min_time is not None or args.min_reps is not None:
        budget = harness.TimingBudget(**{**asdict(budget), **{k: v for k, v in (
            ("min_time", args.min_time), ("min_reps", args.min_reps)) if v is not None}})
    cases = select_cases(args, device)
    providers = [p for p in cli.PROVIDERS if p in (args.provider or cli.PROVIDERS)]
    if not cases:
        print("no case matches the selection (a loss whose score is its input has no score mode)", file=sys.stderr)
        return 2

    name = harness.device_name(device)
    results_dir = os.path.join(args.out_dir or record.DEFAULT_OUT_DIR, harness.device_slug(device))
    bandwidth = harness.copy_bandwidth(device, args.copy_mib << 20 if args.copy_mib else None)
    model = CostModel(device, bandwidth.bytes_per_s, budget, args.compile_shapes, results_dir)
    plan = model.plan(cases, providers, model.cold_compile_s)  # the ETA starts from the cautious one
    estimate = model.RUN_OVERHEAD_S + sum(cost for _, _, cost in plan)
    estimate_warm = model.RUN_OVERHEAD_S + sum(cost for _, _, cost in model.plan(cases, providers,
                                                                                  model.WARM_COMPILE_S))
    print(f"{name} ({device.type}, {torch.get_num_threads()} threads), torch {torch.__version__}; "
          f"copy bandwidth {bandwidth.bytes_per_s / 1e9:.1f} GB/s")
    print(f"plan: {len(cases)} cases x {len(providers)} providers ({', '.join(providers)}); "
          f"estimated {harness.format_duration(estimate)}"
          + (f" ({harness.format_duration(estimate_warm)} if inductor's cache already holds the graphs; model: "
             f"{model.cold_compile_s:.0f} s per graph cold, {model.WARM_COMPILE_S:.0f} s warm, "
             f"+{model.compile_startup_s:.0f} s start-up)" if "compile" in providers else ""))
    sys.stdout.flush()
    if args.estimate_only:
        return 0

    compiler = Compiler(args.compile_shapes, args.compile_mode)
    cache_bytes = harness.last_level_cache_bytes(device)
    progress = harness.Progress(len(plan))
    done_model_s = 0.0
    position = 0
    results = []

    def on_done(what: str) -> None:
        nonlocal done_model_s, position
        assert what == plan[position][1], "the plan and the run disagree on the order of measurements"
        done_model_s += plan[position][2]
        position += 1
        left_model_s = sum(cost for _, _, cost in plan[position:])
        # scale the model by how fast the run has really been going
        # (with a prior of 20 model-seconds at pace 1, so the first slow steps do not swing it)
        pace = (time.perf_counter() - started + 20.0) / (done_model_s + 20.0)
        running = f"now: {plan[position][0].label()} {plan[position][1]}" if position < len(plan) else "done"
        progress.update(position, running, left_model_s * pace)

    progress.update(0, f"now: {plan[0][0].label()} {plan[0][1]}", estimate)
    for index, case in enumerate(cases):
        results.append(run_case(case, providers, device, budget, bandwidth, compiler, cache_bytes,
                                args.seed + index, on_done))
    progress.close()

    run = record.make_record(args, argv, device, name, bandwidth, budget, providers, cache_bytes, results, started,
                             estimate)
    report.print_run(run)
    if not args.no_save:
        record.save(run, results_dir, plot=not args.no_plot)
    print(f"elapsed {harness.format_duration(time.perf_counter() - started)} "
          f"(estimated {harness.format_duration(estimate)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
