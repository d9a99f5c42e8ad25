"""Benchmark of the spoofloss losses against the plain-PyTorch reference, eager and compiled.

    python benchmarks/bench_losses.py                 # default set (targets), local device
    python benchmarks/bench_losses.py --full          # the whole sweep (prints an estimate first)
    python benchmarks/bench_losses.py --loss oc --mode train score --batch 32 --frames 200 --dim 128
    python benchmarks/bench_losses.py --plot-only benchmarks/results/<device>/<run>.json

What is timed, per case (loss, mode, B, T, D, dtype, lengths or not):

* modes: ``forward`` (the loss's forward with emb requiring grad, as in a
  training step, graph dropped), ``train`` (forward + ``loss.backward()``, with
  emb's and the centres' gradients reset to None before every step, as
  zero_grad(set_to_none=True) leaves them), ``score`` (module.score under
  torch.no_grad, as at inference). The binary loss has forward and train; its
  input is one logit per (utterance, frame), pred [B, T] (T = 1 is ESPnet's
  per-utterance [B, 1]), and D does not apply.
* providers, all on the same inputs and the same centre values:
  ``spoofloss`` (the fused modules), ``eager`` (spoofloss.reference modules:
  the ESPnet-style chain of torch ops) and ``compile`` (torch.compile of the
  whole step function that eager runs, the ``.backward()`` call included:
  dynamo breaks the graph there, so the forward and the backward each run as
  one inductor-compiled graph, which is as much as compile can fuse. Shapes
  are static by default, so every case gets kernels specialised to its shape,
  compile at its strongest; ``--compile-shapes dynamic`` gives the
  variable-length-training view, one graph reused across B and T.) The first
  call, which compiles, is timed on its own and reported as compile time.
* input copies are cycled so that the inputs of a small case are not
  cache-hot across repetitions (copies until they span twice the last-level
  cache, at most 256).
* lengths, when used, are drawn uniformly from [ceil(T/2), T] with one
  utterance at T (a bucketed, padded batch). Labels are int64, both classes.

The floors, per case, measured in the same run:

* byte floor: the bytes the op must move (emb's valid frames read once; in
  train, emb's gradient written once, padded frames included; the label,
  lengths, centres and, in train, their gradient; the outputs) over the
  bandwidth of one large copy (harness.copy_bandwidth). "% floor" is
  floor time / measured time.
* autograd floor (train only): ``(emb.sum() + centers.sum()).backward()``
  (binary: ``pred.sum().backward()``) on the same leaves: it reads emb,
  writes its gradient and pays autograd's fixed cost, so no loss written as a
  PyTorch op can beat it by much. "x autograd" is measured time / that time.

Output: a table on stdout, a JSON file and a PNG plot under
benchmarks/results/<device>/ (plus a stable latest.png there), and a "targets"
section evaluating the project's performance targets on the cases that ran.
"""

from __future__ import annotations

import argparse
import gc
import logging
import glob
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Optional

import torch

try:
    import spoofloss
except ImportError:  # a checkout whose library was built in place but not installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import spoofloss
from spoofloss import reference

import harness
import report

# inductor warns on every compile that a CPU-only machine has no CUDA runtime
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT_DIR = os.path.join(REPO_DIR, "benchmarks", "results")

LOSSES = ("am", "oc", "binary")
MODES = ("forward", "train", "score")
PROVIDERS = ("spoofloss", "eager", "compile")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}

SWEEP_BATCH = (1, 8, 32, 128, 512)
SWEEP_FRAMES = (1, 50, 200, 800)
SWEEP_DIM = (64, 128, 256)
SWEEP_DTYPES = ("float32", "bfloat16")

# The sizes the performance targets name (report.py); (64, 400, 256) is not on the sweep grid.
TARGET_SIZES = ((8, 50, 64), (32, 200, 128), (64, 400, 256))
# On a GPU, sizes whose float32 emb is at least 64 MiB, where the bandwidth targets apply.
GPU_LARGE_SIZES = ((128, 800, 256), (512, 800, 256))

FUSED_MODULES = {"am": spoofloss.AMSoftmaxLoss, "oc": spoofloss.OCSoftmaxLoss, "binary": spoofloss.BinaryLoss}
REFERENCE_MODULES = {"am": reference.AMSoftmaxLoss, "oc": reference.OCSoftmaxLoss, "binary": reference.BinaryLoss}

LABEL_DTYPE = torch.int64
LENGTHS_DTYPE = torch.int64
MAX_INPUT_COPIES = 256


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    loss: str
    mode: str
    dtype: str
    lengths: bool  # always False for the binary loss
    batch: int
    frames: int
    dim: int  # 1 for the binary loss

    @property
    def elements(self) -> int:
        """B*T*D: the x axis of the plot (B*T logits for the binary loss)."""
        return self.batch * self.frames * self.dim

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=DTYPES[self.dtype]).element_size()

    @property
    def emb_bytes(self) -> int:
        return self.elements * self.element_size

    def label(self) -> str:
        size = f"B={self.batch} T={self.frames}" + ("" if self.loss == "binary" else f" D={self.dim}")
        extra = "" if self.loss == "binary" else (" lengths" if self.lengths else " no-lengths")
        return f"{self.loss} {self.mode} {size} {self.dtype}{extra}"


def expand_cases(losses, modes, dtypes, lengths_options, sizes) -> list[Case]:
    """Every valid combination, once each (binary: no score, no lengths, no D)."""
    cases = set()
    for loss, mode, dtype, with_lengths, (batch, frames, dim) in itertools.product(
        losses, modes, dtypes, lengths_options, sizes
    ):
        if loss == "binary":
            if mode == "score":  # BinaryLoss.score returns pred itself: nothing to time
                continue
            with_lengths, dim = False, 1
        cases.add(Case(loss, mode, dtype, with_lengths, batch, frames, dim))
    return sorted(cases, key=lambda c: (LOSSES.index(c.loss), MODES.index(c.mode), c.dtype, not c.lengths,
                                        c.elements, c.batch, c.frames, c.dim))


def select_cases(args, device: torch.device) -> list[Case]:
    """The default set, or --full, narrowed or widened by the selection flags."""
    lengths_options = {"yes": (True,), "no": (False,), "both": (True, False)}
    sweep = args.full or any(v is not None for v in (args.batch, args.frames, args.dim))
    if sweep:
        sizes = list(itertools.product(args.batch or SWEEP_BATCH, args.frames or SWEEP_FRAMES, args.dim or SWEEP_DIM))
    else:
        sizes = list(TARGET_SIZES) + (list(GPU_LARGE_SIZES) if device.type == "cuda" else [])
    if args.full:
        defaults = dict(loss=LOSSES, mode=MODES, dtype=SWEEP_DTYPES, lengths="both")
    else:  # the targets: float32 AM and OC; train on the CPU, train and score on a GPU
        defaults = dict(loss=("am", "oc"), mode=("train", "score") if device.type == "cuda" else ("train",),
                        dtype=("float32",), lengths="yes")
    return expand_cases(
        args.loss or defaults["loss"],
        args.mode or defaults["mode"],
        args.dtype or defaults["dtype"],
        lengths_options[args.lengths or defaults["lengths"]],
        sizes,
    )


# --------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    emb: torch.Tensor  # pred for the binary loss
    label: torch.Tensor
    lengths: Optional[torch.Tensor]


def input_copies(case: Case, device: torch.device, cache_bytes: int, seed: int) -> list[Inputs]:
    """Copies of one case's inputs: distinct emb values and memory, the same label and lengths."""
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (case.batch, case.frames) if case.loss == "binary" else (case.batch, case.frames, case.dim)
    label = torch.randint(0, 2, shape if case.loss == "binary" else (case.batch,), generator=gen, device=device)
    label.view(-1)[0] = 0
    label.view(-1)[-1] = 1  # both classes present whenever there are two labels
    label = label.to(LABEL_DTYPE)
    lengths = None
    if case.lengths:
        low = math.ceil(case.frames / 2)
        lengths = torch.randint(low, case.frames + 1, (case.batch,), generator=gen, device=device)
        lengths[0] = case.frames
        lengths = lengths.to(LENGTHS_DTYPE)
    per_copy = case.emb_bytes + label.nbytes + (lengths.nbytes if lengths is not None else 0)
    count = max(1, min(MAX_INPUT_COPIES, math.ceil(2 * cache_bytes / per_copy)))
    wants_grad = case.mode != "score"
    copies = []
    for _ in range(count):
        emb = torch.randn(shape, generator=gen, device=device).to(DTYPES[case.dtype])
        copies.append(Inputs(emb.requires_grad_(wants_grad), label.clone(),
                             None if lengths is None else lengths.clone()))
    return copies


def make_modules(case: Case, device: torch.device):
    """(fused, reference) modules with the same centre values, float32 parameters."""
    if case.loss == "binary":
        return FUSED_MODULES["binary"]().to(device), REFERENCE_MODULES["binary"]().to(device)
    fused = FUSED_MODULES[case.loss](enc_dim=case.dim).to(device)
    ref = REFERENCE_MODULES[case.loss](enc_dim=case.dim).to(device)
    ref.load_state_dict(fused.state_dict())
    return fused, ref


def floor_bytes(case: Case, inputs: Inputs, module: torch.nn.Module) -> int:
    """The bytes the op cannot avoid moving (see the module docstring)."""
    params = sum(p.nbytes for p in module.parameters())
    if case.loss == "binary":
        moved = inputs.emb.nbytes + inputs.label.nbytes + 4  # pred, label in; float32 loss out
        return moved + (inputs.emb.nbytes if case.mode == "train" else 0)  # grad of pred
    frames = int(inputs.lengths.sum()) if inputs.lengths is not None else case.batch * case.frames
    moved = frames * case.dim * case.element_size + params
    moved += inputs.lengths.nbytes if inputs.lengths is not None else 0
    if case.mode == "score":
        return moved + case.batch * 4  # float32 score out
    moved += inputs.label.nbytes + 4  # label in, float32 loss out
    if case.mode == "train":
        moved += inputs.emb.nbytes + params  # gradients of emb (all frames) and the centres
    return moved


# --------------------------------------------------------------------------- steps
# Every provider runs the same step function on (module, emb, label, lengths);
# `compile` runs it through torch.compile. Modules are arguments, not closures,
# so one compiled step can serve many modules in --compile-shapes dynamic.


def forward_step(module, emb, label, lengths):
    return module(label, emb, lengths)


def train_step(module, emb, label, lengths):
    loss = module(label, emb, lengths)
    loss.backward()
    return loss.detach()


def score_step(module, emb, label, lengths):
    with torch.no_grad():
        return module.score(emb, lengths)


def binary_forward_step(module, pred, label, lengths):
    return module(pred, label)


def binary_train_step(module, pred, label, lengths):
    loss = module(pred, label)
    loss.backward()
    return loss.detach()


def autograd_floor_step(module, emb, label, lengths):
    """Read emb, write its gradient (and the centres'), through autograd: the floor of train."""
    total = emb.sum()
    for param in module.parameters():
        total = total + param.sum()
    total.backward()


STEPS = {
    ("am", "forward"): forward_step, ("am", "train"): train_step, ("am", "score"): score_step,
    ("oc", "forward"): forward_step, ("oc", "train"): train_step, ("oc", "score"): score_step,
    ("binary", "forward"): binary_forward_step, ("binary", "train"): binary_train_step,
}


class Compiler:
    """torch.compile'd step functions: a fresh one per case (static shapes), or one per
    step function reused across cases (dynamic shapes)."""

    def __init__(self, shapes: str, mode: Optional[str]):
        self.shapes, self.mode = shapes, mode
        self.compiled = {}
        if shapes == "dynamic":  # one graph per (loss, dtype, lengths, D, 0/1 sizes): more than 8
            torch._dynamo.config.recompile_limit = 512
            torch._dynamo.config.accumulated_recompile_limit = 4096

    def step(self, case: Case):
        fn = STEPS[case.loss, case.mode]
        if self.shapes == "static":
            torch._dynamo.reset()  # a clean slate: no earlier shape's graphs, no recompile limit
            return torch.compile(fn, dynamic=False, mode=self.mode)
        if fn not in self.compiled:
            self.compiled[fn] = torch.compile(fn, dynamic=True, mode=self.mode)
        return self.compiled[fn]


# --------------------------------------------------------------------------- running one case
@dataclass
class ProviderResult:
    timing: Optional[harness.Timing] = None
    peak_bytes: Optional[int] = None
    compile_s: Optional[float] = None
    wall_s: float = 0.0  # everything this provider cost the run on this case
    output_diff: Optional[float] = None  # max |out - eager's out| / max |eager's out|
    error: Optional[str] = None

    def as_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "timing"}
        if self.timing is not None:
            out.update(self.timing.as_dict())
        return out


@dataclass
class CaseResult:
    case: Case
    floor_bytes: int = 0
    floor_s: float = 0.0
    input_copies: int = 1
    autograd_floor: Optional[harness.Timing] = None
    providers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self.case)
        out.update(label=self.case.label(), elements=self.case.elements, emb_bytes=self.case.emb_bytes,
                   floor_bytes=self.floor_bytes, floor_s=self.floor_s, input_copies=self.input_copies,
                   autograd_floor=self.autograd_floor.as_dict() if self.autograd_floor else None,
                   providers={name: r.as_dict() for name, r in self.providers.items()})
        return out


def run_case(case: Case, providers, device, budget, bandwidth, compiler, cache_bytes, seed, on_done) -> CaseResult:
    """Measure one case: the autograd floor (train), then each provider on the same inputs.

    ``on_done(what)`` is called after each measurement ("autograd floor" or a provider's name).
    """
    torch.manual_seed(seed)
    fused, ref = make_modules(case, device)
    copies = input_copies(case, device, cache_bytes, seed)
    result = CaseResult(case, input_copies=len(copies))
    result.floor_bytes = floor_bytes(case, copies[0], fused)
    result.floor_s = result.floor_bytes / bandwidth.bytes_per_s

    def runner(step, module):
        """call(i) runs the step on copy i (cycling); reset(i) clears what step i accumulates."""

        def call(i):
            x = copies[i % len(copies)]
            return step(module, x.emb, x.label, x.lengths)

        def reset(i):  # what zero_grad(set_to_none=True) leaves before a training step
            if case.mode == "train":
                copies[i % len(copies)].emb.grad = None
                for param in module.parameters():
                    param.grad = None

        return call, reset

    # 1. each provider's first call: its output for the sanity check, and for
    #    `compile` the compilation (timed apart)
    outcomes = {name: ProviderResult() for name in providers}
    runners = {}
    first_outputs = {}
    for name in providers:
        started = time.perf_counter()
        try:
            step = compiler.step(case) if name == "compile" else STEPS[case.loss, case.mode]
            call, reset = runner(step, fused if name == "spoofloss" else ref)
            reset(0)
            first_outputs[name] = call(0).detach().float().reshape(-1).cpu()  # `compile` compiles here
            if name == "compile":
                outcomes[name].compile_s = time.perf_counter() - started
            runners[name] = (call, reset)
        except Exception as error:  # one provider failing (OOM, a compile error) must not end the run
            outcomes[name].error = describe_error(error)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        outcomes[name].wall_s += time.perf_counter() - started

    # 2. the timings, the autograd floor's and the providers' interleaved in rounds
    #    (harness.measure_interleaved), so their ratios compare like with like
    contenders = {}
    if case.mode == "train":
        contenders["autograd floor"] = runner(autograd_floor_step, fused)
    contenders.update(runners)
    # a recompile inside the timed loop would be timed as if it were the step: make it an error
    # (torch._dynamo is only touched for `compile`: importing it takes seconds)
    no_recompiles = torch._dynamo.config.patch(error_on_recompile=True) if "compile" in runners else nullcontext()
    started = time.perf_counter()
    with no_recompiles:
        timings = harness.measure_interleaved(contenders, device, budget)
    share = (time.perf_counter() - started) / max(1, len(contenders))
    for name in contenders:
        contenders[name][1](0)
    if case.mode == "train":
        floor = timings.pop("autograd floor")
        result.autograd_floor = floor if isinstance(floor, harness.Timing) else None
        on_done("autograd floor")

    # 3. peak memory, one provider at a time
    for name in providers:
        outcome = outcomes[name]
        started = time.perf_counter()
        timing = timings.get(name)
        if isinstance(timing, Exception):
            outcome.error = describe_error(timing)
        elif timing is not None:
            outcome.timing = timing
            call, reset = runners[name]
            try:
                with torch._dynamo.config.patch(error_on_recompile=True) if name == "compile" else nullcontext():
                    outcome.peak_bytes = harness.peak_memory(lambda: call(0), device)
            except Exception as error:  # noqa: BLE001
                outcome.error = describe_error(error)
            reset(0)
        outcome.wall_s += share + time.perf_counter() - started
        result.providers[name] = outcome
        on_done(name)

    for name, outcome in result.providers.items():
        outcome.output_diff = _relative_diff(first_outputs.get(name), first_outputs.get("eager"))
    del copies, fused, ref
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def describe_error(error: Exception) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}"[:300]


def _relative_diff(out: Optional[torch.Tensor], expected: Optional[torch.Tensor]) -> Optional[float]:
    """max |out - expected| / max |expected|: a sanity check that the providers compute the same thing."""
    if out is None or expected is None or out.shape != expected.shape:
        return None
    scale = expected.abs().max().item() or 1.0
    return (out - expected).abs().max().item() / scale


# --------------------------------------------------------------------------- cost model
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
                        case.loss, case.mode, case.dtype, case.lengths, case.dim, case.batch == 1, case.frames == 1)
                    if key not in compiled_keys:
                        cost += compile_s + (self.compile_startup_s if not compiled_keys else 0.0)
                        compiled_keys.add(key)
                items.append((case, name, cost))
        return items


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Time the spoofloss losses against the eager and compiled PyTorch reference.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    select = parser.add_argument_group("what to run (the default set unless --full; flags narrow or replace)")
    select.add_argument("--loss", nargs="+", choices=LOSSES, help="default: am oc (--full: all)")
    select.add_argument("--mode", nargs="+", choices=MODES,
                        help="default: train (CPU), train score (CUDA); --full: all")
    select.add_argument("--provider", nargs="+", choices=PROVIDERS, help="default: all")
    select.add_argument("--dtype", nargs="+", choices=tuple(DTYPES), help="default: float32 (--full: float32 bfloat16)")
    select.add_argument("--lengths", choices=("yes", "no", "both"), help="default: yes (--full: both)")
    select.add_argument("--batch", nargs="+", type=int, help=f"B values; sweep: {SWEEP_BATCH}")
    select.add_argument("--frames", nargs="+", type=int, help=f"T values; sweep: {SWEEP_FRAMES}")
    select.add_argument("--dim", nargs="+", type=int, help=f"D values; sweep: {SWEEP_DIM}")
    select.add_argument("--full", action="store_true",
                        help="the whole sweep: every loss, mode, dtype, lengths, B x T x D of the sweep lists")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="shorter measurements (>= 0.05 s or 5 reps): a quick look")
    parser.add_argument("--min-time", type=float, help="seconds of repetitions per measurement (default 0.2)")
    parser.add_argument("--min-reps", type=int, help="repetitions per measurement, at least (default 10)")
    parser.add_argument("--compile-shapes", choices=("static", "dynamic"), default="static",
                        help="static: a graph specialised to each case; dynamic: one graph reused across B and T")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's default)")
    parser.add_argument("--copy-mib", type=int, help="size of the bandwidth copy (default: 256 CPU, 1024 GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="results go to OUT_DIR/<device>/")
    parser.add_argument("--no-save", action="store_true", help="print only: no JSON, no plot")
    parser.add_argument("--no-plot", action="store_true", help="write the JSON but no PNG")
    parser.add_argument("--estimate-only", action="store_true", help="print the plan and its estimated time, then exit")
    parser.add_argument("--plot-only", metavar="FILE.json", help="re-print the table and re-plot a saved run")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plot_only:
        with open(args.plot_only) as f:
            run = json.load(f)
        report.print_run(run)
        png = os.path.splitext(args.plot_only)[0] + ".png"
        if report.plot(run, png):
            print(f"plot: {png}")
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
    providers = [p for p in PROVIDERS if p in (args.provider or PROVIDERS)]
    if not cases:
        print("no case matches the selection (the binary loss has no score mode)", file=sys.stderr)
        return 2

    name = harness.device_name(device)
    results_dir = os.path.join(args.out_dir, harness.device_slug(device))
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

    commit, dirty = harness.git_commit(REPO_DIR)
    stamp = datetime.now(timezone.utc)
    run = {
        "schema": 1,
        "device": {"type": device.type, "name": name, "slug": harness.device_slug(device)},
        "torch": torch.__version__,
        "commit": commit,
        "dirty": dirty,
        "threads": torch.get_num_threads(),
        "timestamp": stamp.isoformat(timespec="seconds"),
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
    report.print_run(run)

    if not args.no_save:
        os.makedirs(results_dir, exist_ok=True)
        stem = os.path.join(results_dir, f"{stamp.strftime('%Y%m%dT%H%M%SZ')}-{commit[:10]}")
        with open(stem + ".json", "w") as f:
            json.dump(run, f, indent=1)
        print(f"\nresults: {stem}.json")
        if not args.no_plot and report.plot(run, stem + ".png"):
            shutil.copyfile(stem + ".png", os.path.join(results_dir, "latest.png"))  # README embeds this one
            print(f"plot: {stem}.png (and latest.png)")
    print(f"elapsed {harness.format_duration(time.perf_counter() - started)} "
          f"(estimated {harness.format_duration(estimate)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
