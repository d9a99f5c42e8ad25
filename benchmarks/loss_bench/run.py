"""Measuring one case: each provider on the same inputs, the floors, peak memory.

Times are medians with the 20th and 80th percentiles (harness.measure); the
autograd floor and the providers are timed in interleaved rounds
(harness.measure_interleaved), so their ratios are not skewed by a machine
whose speed drifts; a recompile inside the timed loop is an error. Peak memory
is measured one provider at a time. Each provider's first output is kept to
check that the providers compute the same thing (``output_diff``).
"""

from __future__ import annotations

import gc
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

import harness

from .cases import Case, centre_count
from .inputs import floor_bytes, input_copies, make_modules
from .steps import autograd_floor_step, step_of

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
        out = record_case(self.case)
        out.update(floor_bytes=self.floor_bytes, floor_s=self.floor_s, input_copies=self.input_copies,
                   autograd_floor=self.autograd_floor.as_dict() if self.autograd_floor else None,
                   providers={name: r.as_dict() for name, r in self.providers.items()})
        return out


def run_case(case: Case, providers, device, budget, bandwidth, compiler, cache_bytes, seed, on_done) -> CaseResult:
    """Measure one case: the autograd floor (train), then each provider on the same inputs.

    ``on_done(what)`` is called after each measurement ("autograd floor" or a provider's name).
    """
    torch.manual_seed(seed)
    fused, ref = make_modules(case, device)
    copies = input_copies(case, fused, device, cache_bytes, seed)
    result = CaseResult(case, input_copies=len(copies))
    result.floor_bytes = floor_bytes(case, copies[0], fused)
    result.floor_s = result.floor_bytes / bandwidth.bytes_per_s

    def runner(step, module):
        """call(i) runs the step on copy i (cycling); reset(i) clears what step i accumulates."""

        def call(i):
            x = copies[i % len(copies)]
            return step(module, x.x, x.label, x.lengths, x.extra)

        def reset(i):  # what zero_grad(set_to_none=True) leaves before a training step
            if case.mode == "train":
                copies[i % len(copies)].x.grad = None
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
            step = compiler.step(case) if name == "compile" else step_of(case)
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


def record_case(case: Case) -> dict:
    """The case's own fields as the JSON record holds them."""
    out = asdict(case)
    out.update(family=case.family, configuration=case.configuration(), label=case.label(),
               elements=case.elements, emb_bytes=case.emb_bytes, centers=centre_count(case.loss, case.variant))
    return out
