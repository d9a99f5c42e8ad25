"""Measurement utilities of the loss benchmark: timing, peak memory, bandwidth, device facts.

Nothing here knows about losses. bench_losses.py builds the calls; this module
times them the same way for every provider:

* ``measure`` warms a call up, then repeats it until a time budget and a
  repetition count are both met, and returns the median with the 20th and 80th
  percentiles. Each repetition is timed on its own: on the CPU with
  ``time.perf_counter`` around the call, on CUDA with a pair of events around
  it, read after one synchronisation at the end (no host clock ever times GPU
  work). The events are recorded back to back with no flush in between, so a
  step that is bound by host launch overhead is timed as the GPU sees it, gaps
  included, which is what a training loop waits on. (triton's do_bench would
  hide that overhead behind its L2-flush kernel, flattering the many-kernel
  eager chain, so it is not used.)
* ``peak_memory`` runs a call once and returns the highest number of bytes it
  had allocated above what was live when it started. CUDA: the caching
  allocator's max_memory_allocated after reset_peak_memory_stats. CPU: the CPU
  allocator has no statistics, so the call runs under torch.profiler with
  profile_memory=True and the allocation and free events it records are
  replayed in time order to the peak of live bytes.
* ``copy_bandwidth`` measures the machine's streaming bandwidth with one large
  copy (bytes read + bytes written over the median time), the yardstick of the
  byte floors.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch


# --------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class TimingBudget:
    """How long to measure: repeat until both ``min_time`` seconds and ``min_reps``
    repetitions are reached, but never more than ``max_reps`` repetitions or (for
    very slow calls) ``max_time`` seconds once ``min_reps`` are in."""

    warmup_reps: int = 3
    warmup_time: float = 0.05
    min_time: float = 0.2
    min_reps: int = 10
    max_reps: int = 20_000
    max_time: float = 3.0


QUICK_BUDGET = TimingBudget(warmup_reps=1, warmup_time=0.01, min_time=0.05, min_reps=5, max_time=1.0)


@dataclass(frozen=True)
class Timing:
    median_s: float
    p20_s: float
    p80_s: float
    reps: int

    def as_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of an already sorted list."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def summarise(samples: list[float]) -> Timing:
    ordered = sorted(samples)
    return Timing(statistics.median(ordered), percentile(ordered, 20), percentile(ordered, 80), len(ordered))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    call: Callable[[int], object],
    device: torch.device,
    budget: TimingBudget,
    between: Optional[Callable[[int], None]] = None,
) -> Timing:
    """Time ``call(i)`` for i = 0, 1, 2, ... (the caller cycles its input copies by i).

    ``between(i)`` runs before call i, outside the timed region: the train mode
    resets gradients there, as zero_grad(set_to_none=True) would.
    """
    timing = measure_interleaved({"call": (call, between)}, device, budget, rounds=1)["call"]
    if isinstance(timing, Exception):
        raise timing
    return timing


def _warm_up_and_size(call, between, device: torch.device, budget: TimingBudget) -> tuple[int, int]:
    """Warm-up calls, which also estimate one call's cost: (calls made, repetitions to time)."""
    synchronize(device)
    step, start = 0, time.perf_counter()
    while step < budget.warmup_reps or time.perf_counter() - start < budget.warmup_time:
        between(step)
        call(step)
        step += 1
        synchronize(device)
    per_call = (time.perf_counter() - start) / step
    reps = int(min(budget.max_reps, max(budget.min_reps, math.ceil(budget.min_time / max(per_call, 1e-9)))))
    if per_call * reps > budget.max_time:
        reps = max(budget.min_reps, int(budget.max_time / per_call))
    return step, reps


def measure_interleaved(
    contenders: dict,
    device: torch.device,
    budget: TimingBudget,
    rounds: int = 5,
) -> dict:
    """``measure`` for several calls at once, in ``rounds`` alternating rounds.

    ``contenders`` maps a name to ``(call, between)`` as ``measure`` takes them.
    Each round gives every contender an equal share of its repetitions, one
    after the other, and the samples of all rounds are pooled. A ratio of two
    contenders (spoofloss over the autograd floor, say) is then taken over the
    same stretch of time, not over two stretches a second apart on a machine
    whose speed drifts (a shared VM's does, by tens of percent). A contender
    whose call raises is dropped; its name maps to the exception.
    """
    plans = {}
    results: dict = {}
    for name, (call, between) in contenders.items():
        between = between or (lambda i: None)
        try:
            step, reps = _warm_up_and_size(call, between, device, budget)
        except Exception as error:  # noqa: BLE001 -- reported per contender by the caller
            results[name] = error
            continue
        plans[name] = [call, between, step, max(1, math.ceil(reps / rounds)), []]
    for _ in range(rounds):
        for name, plan in list(plans.items()):
            call, between, step, reps, samples = plan
            try:
                if device.type == "cuda":
                    samples.extend(_cuda_samples(call, between, step, reps))
                else:
                    for k in range(reps):
                        between(step + k)
                        t0 = time.perf_counter()
                        call(step + k)
                        samples.append(time.perf_counter() - t0)
            except Exception as error:  # noqa: BLE001
                results[name] = error
                del plans[name]
                continue
            plan[2] = step + reps
    for name, plan in plans.items():
        results[name] = summarise(plan[4])
    return results


def _cuda_samples(call, between, step: int, reps: int) -> list:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for k in range(reps):
        between(step + k)
        starts[k].record()
        call(step + k)
        ends[k].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]


# --------------------------------------------------------------------------- memory
def peak_memory(call: Callable[[], object], device: torch.device) -> Optional[int]:
    """Peak bytes allocated by one call above what was live before it (None if unknown).

    What the call returns is kept alive until the measurement ends (a train
    step's gradients stay alive on the leaves anyway).
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = call()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return peak
    return _cpu_peak_memory(call)


def _cpu_peak_memory(call: Callable[[], object]) -> Optional[int]:
    # torch.autograd.profiler.profile, not torch.profiler.profile: the same kineto
    # events, without the latter's seconds-long first start-up on a machine without a GPU.
    try:
        from torch._C._profiler import _EventType
        from torch.autograd.profiler import profile
    except ImportError:  # pragma: no cover - private profiler API moved
        return None
    # kineto logs every profiler start and stop to stderr unless told otherwise (6: nothing)
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    try:
        with profile(profile_memory=True) as prof:
            out = call()
        del out
        # Every allocation (positive size) and free (negative) the CPU allocator
        # reported, wherever it sits in the tree of op events.
        events = []
        pending = list(prof.kineto_results.experimental_event_tree())
        while pending:
            node = pending.pop()
            pending.extend(node.children)
            if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
                events.append((node.start_time_ns, node.extra_fields.alloc_size))
    except Exception:  # the profiler's internals are private: report "unknown", never crash the run
        return None
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


# --------------------------------------------------------------------------- bandwidth
@dataclass(frozen=True)
class Bandwidth:
    bytes_per_copy: int  # bytes read + bytes written by one copy
    timing: Timing

    @property
    def bytes_per_s(self) -> float:
        return self.bytes_per_copy / self.timing.median_s

    def as_dict(self) -> dict:
        return {"bytes_per_copy": self.bytes_per_copy, "bytes_per_s": self.bytes_per_s, **self.timing.as_dict()}


def copy_bandwidth(device: torch.device, nbytes: Optional[int] = None, reps: int = 9) -> Bandwidth:
    """Streaming bandwidth: dst.copy_(src) of ``nbytes`` (256 MiB CPU, 1 GiB GPU by
    default, far beyond any cache), counted as nbytes read + nbytes written."""
    nbytes = nbytes or ((1 << 30) if device.type == "cuda" else (256 << 20))
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    budget = TimingBudget(warmup_reps=2, warmup_time=0.0, min_time=0.0, min_reps=reps, max_reps=reps)
    timing = measure(lambda i: dst.copy_(src), device, budget)
    return Bandwidth(2 * src.numel() * src.element_size(), timing)


# --------------------------------------------------------------------------- device facts
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def device_slug(device: torch.device) -> str:
    name = slug(device_name(device))
    return name if device.type == "cuda" else f"cpu-{name}"


def last_level_cache_bytes(device: torch.device) -> int:
    """L2 of the GPU, the largest CPU cache level (32 MiB when it cannot be read)."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20))
    largest = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in os.listdir(base):
            with open(os.path.join(base, index, "size")) as f:
                text = f.read().strip()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            largest = max(largest, int(text.rstrip("KMG")) * scale)
    except (OSError, ValueError):
        pass
    return largest or (32 << 20)


def git_commit(repo_dir: str) -> tuple[str, bool]:
    """(commit hash, working tree has uncommitted changes); ("unknown", False) outside git."""
    try:
        commit = subprocess.run(["git", "-C", repo_dir, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", repo_dir, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True, timeout=10).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


# --------------------------------------------------------------------------- progress
class Progress:
    """A one-line progress bar on stderr (a line per update when stderr is not a terminal)."""

    def __init__(self, total: int, width: int = 24, stream=sys.stderr):
        self.total, self.width, self.stream = max(total, 1), width, stream
        self.done = 0
        self.start = time.perf_counter()
        self.interactive = stream.isatty()

    def update(self, done: int, label: str, remaining_s: Optional[float] = None) -> None:
        self.done = done
        filled = int(self.width * done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        eta = f" eta {format_duration(remaining_s)}" if remaining_s is not None else ""
        line = f"[{bar}] {done}/{self.total} {format_duration(elapsed)}{eta}  {label}"
        if self.interactive:
            columns = _terminal_columns()
            self.stream.write("\r\x1b[2K" + line[: columns - 1])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _terminal_columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        return 120


# --------------------------------------------------------------------------- formatting
def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_time(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(nbytes: Optional[float]) -> str:
    if nbytes is None:
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"
