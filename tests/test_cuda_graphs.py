"""CUDA graphs: forward, backward and score captured once, replayed on new inputs.

Capture needs ops that never synchronise with the host and never read a
device value on the host; replay must then read the current contents of the
static tensors, whatever they held at capture. So every test here captures a
step once and replays it several times after copying fresh embeddings,
labels, lengths, centres (as an optimiser's in-place update would) and
upstream gradients into the captured tensors, and compares every element of
each replay with

* the same step run eagerly on the same tensors, bit for bit: the replay runs
  the same deterministic kernels on the same inputs, so any difference means
  that a kernel saw something from capture time (a stale value, a host-side
  copy of a length) rather than the new inputs;
* the float64 reference (helpers.tolerance), so that a replay that is
  identical to a wrong eager result still fails.

The poison fixture makes every uninitialised allocation NaN, also inside the
capture (its fill is captured and replayed), so an element a kernel forgets
to write shows up. Warm-up runs on a side stream before capture, as
torch.cuda.graph's documentation requires (lazy initialisation must not be
captured). Skipped without a GPU.
"""

from __future__ import annotations

import copy

import pytest
import torch

from spoofloss.registry import LOSSES

from helpers.devices import requires_cuda
from helpers.inputs import make_labels, make_lengths, random_upstream, randn
from helpers.losses import LossCall, build, centres_of, configurations, spec_of
from helpers.steps import assert_step_matches, expected_step, step_outputs
from helpers.tolerance import assert_identical

pytestmark = [pytest.mark.cuda, requires_cuda, pytest.mark.usefixtures("poison")]

DEVICE = "cuda"
DIM = 48
REPLAYS = 3


def capture(step):
    """Warm ``step`` up on a side stream, then capture one call of it in a
    CUDA graph. Returns the graph and the step's (static) outputs."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = step()
    return graph, outputs


def refill(static: dict, fresh: dict) -> None:
    """Copy fresh values into the captured tensors (in place, without autograd)."""
    with torch.no_grad():
        for name, value in fresh.items():
            if value is not None:
                static[name].copy_(value)


def snapshot(outputs: dict) -> dict:
    """Copies of a replay's outputs (the next replay overwrites the originals)."""
    return {name: value.detach().clone() for name, value in outputs.items()}


def assert_replay_correct(replayed: dict, eager: dict, expected: dict, what: str) -> None:
    for name in expected:
        assert_identical(replayed[name], eager[name], f"{what}, replay vs eager: {name}")
    assert_step_matches(replayed, expected, what=f"{what}, replay vs reference:")


def extra_inputs(module, batch) -> dict:
    spec = spec_of(module)
    extra = spec.make_inputs(module, batch, None) if spec.make_inputs else {}
    return {k: v.to(DEVICE) for k, v in extra.items()}


def labels_for(module, batch):
    return make_labels(batch, spec_of(module).label_classes(module)).to(DEVICE)


# --------------------------------------------------------------------------- #
# torch.cuda.graph around the whole step
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "all-frames"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name,variant", configurations("cosine", variants=False))
def test_captured_cosine_step_replays_on_new_inputs(name, variant, reduction, with_lengths):
    batch, frames = 24, 40
    module, twin = build(name, variant, enc_dim=DIM, device=DEVICE, reduction=reduction)
    centres = centres_of(module)
    loss_shape = (batch,) if reduction == "none" else ()

    def fresh_inputs():
        return {
            "emb": randn(batch, frames, DIM, device=DEVICE),
            "label": labels_for(module, batch),
            "lengths": make_lengths(batch, frames, device=DEVICE) if with_lengths else None,
            "centres": randn(*centres.shape, device=DEVICE),
            "up_loss": random_upstream(torch.empty(loss_shape, device=DEVICE)),
            "up_score": random_upstream(torch.empty(batch, device=DEVICE)),
            **extra_inputs(module, batch),
        }

    static = fresh_inputs()
    static["emb"].requires_grad_()
    static["centres"] = centres  # the parameter itself: an optimiser updates it in place
    extra_names = [k for k in static if k not in ("emb", "label", "lengths", "centres", "up_loss", "up_score")]

    def call():
        return LossCall("cosine", static["emb"], static["label"], static["lengths"],
                        {k: static[k] for k in extra_names})

    def step():
        loss, score = call().forward(module), call().score(module)
        return step_outputs(module, call(), loss, score, static["up_loss"], static["up_score"])

    graph, captured = capture(step)
    for replay in range(REPLAYS):
        refill(static, fresh_inputs())
        graph.replay()
        replayed = snapshot(captured)
        eager = step()
        expected = expected_step(module, twin, call(), static["up_loss"], static["up_score"])
        assert_replay_correct(replayed, eager, expected, f"{name} {reduction}, replay {replay}")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name,variant", configurations("logits", variants=False))
def test_captured_logits_step_replays_on_new_inputs(name, variant, reduction):
    batch = 300
    module, twin = build(name, variant, device=DEVICE, reduction=reduction)

    def fresh_inputs():
        return {"pred": 4 * randn(batch, 1, device=DEVICE), "label": labels_for(module, batch),
                "up": random_upstream(torch.empty((batch,) if reduction == "none" else (), device=DEVICE)),
                **extra_inputs(module, batch)}

    static = fresh_inputs()
    static["pred"].requires_grad_()
    extra_names = [k for k in static if k not in ("pred", "label", "up")]

    def call():
        return LossCall("logits", static["pred"], static["label"], None, {k: static[k] for k in extra_names})

    def step():
        loss = call().forward(module)
        (grad,) = torch.autograd.grad(loss, [static["pred"]], static["up"])
        return {"loss": loss, "d loss / d pred": grad}

    graph, captured = capture(step)
    for replay in range(REPLAYS):
        refill(static, fresh_inputs())
        graph.replay()
        replayed = snapshot(captured)
        expected = expected_step(module, twin, call(), static["up"], torch.ones(batch, 1, device=DEVICE))
        expected = {k: expected[k] for k in replayed}
        assert_replay_correct(replayed, step(), expected, f"{name} {reduction}, replay {replay}")


# --------------------------------------------------------------------------- #
# torch.cuda.make_graphed_callables: the loss module and its score
# --------------------------------------------------------------------------- #


class Scorer(torch.nn.Module):
    """The score as a module of its own (make_graphed_callables graphs forward
    and takes a module's parameters, the centres, as inputs)."""

    def __init__(self, loss_module):
        super().__init__()
        self.loss_module = loss_module

    def forward(self, emb, lengths):
        return self.loss_module.score(emb, lengths)


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("name,variant", [p for p in configurations("cosine", variants=False)
                                          if LOSSES[p.values[0]].make_inputs is None])
def test_graphed_callables(name, variant, reduction):
    batch, frames = 16, 33
    module, twin = build(name, variant, enc_dim=DIM, device=DEVICE, reduction=reduction)
    eager_module = copy.deepcopy(module)
    centres, eager_centres = centres_of(module), centres_of(eager_module)

    def fresh_inputs():
        emb = randn(batch, frames, DIM, device=DEVICE).requires_grad_()
        return emb, labels_for(module, batch), make_lengths(batch, frames, device=DEVICE)

    # Separate calls (so separate memory pools: the order of the two backward
    # passes is then free) with separate sample tensors, which become the
    # graphs' static inputs.
    loss_sample, score_sample = fresh_inputs(), fresh_inputs()
    graphed_loss = torch.cuda.make_graphed_callables(module, (loss_sample[1], loss_sample[0], loss_sample[2]))
    graphed_score = torch.cuda.make_graphed_callables(Scorer(module), (score_sample[0], score_sample[2]))

    for replay in range(REPLAYS):
        emb, label, lengths = fresh_inputs()
        new_centres = randn(*centres.shape, device=DEVICE)
        with torch.no_grad():
            centres.copy_(new_centres)
            eager_centres.copy_(new_centres)
        call = LossCall("cosine", emb, label, lengths)
        loss = graphed_loss(label, emb, lengths)
        score = graphed_score(emb, lengths)
        up_loss, up_score = random_upstream(loss), random_upstream(score)
        replayed = snapshot(step_outputs(module, call, loss, score, up_loss, up_score))

        eager_call = call.with_input(emb.detach().clone().requires_grad_())
        eager = step_outputs(eager_module, eager_call, eager_call.forward(eager_module), eager_call.score(eager_module),
                             up_loss, up_score)
        expected = expected_step(module, twin, call, up_loss, up_score)
        assert_replay_correct(replayed, eager, expected, f"graphed {name} {reduction}, call {replay}")


# --------------------------------------------------------------------------- #
# torch.compile(mode="reduce-overhead"): Inductor's CUDA graph trees
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name,variant", configurations(variants=False))
def test_compile_reduce_overhead(name, variant):
    """The loss and score compiled with CUDA graphs (forward and backward
    graphed by Inductor), run on new inputs each step. Inductor would silently
    run without graphs if it found the step unsafe to capture, so its skip
    counter must stay at zero."""
    from torch._dynamo.utils import counters

    batch, frames = 16, 21
    module, twin = build(name, variant, enc_dim=DIM, device=DEVICE, reduction="mean")
    family = LOSSES[name].family

    def step(label, x, lengths, extra):
        call = LossCall(family, x, label, lengths, extra)
        return call.forward(module), call.score(module)

    torch._dynamo.reset()
    counters.clear()
    try:
        compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
        # the first calls warm up and record, the later ones replay
        for replay in range(REPLAYS + 2):
            torch.compiler.cudagraph_mark_step_begin()
            label = labels_for(module, batch)
            lengths = make_lengths(batch, frames, device=DEVICE) if family == "cosine" else None
            if family == "logits":
                x = (4 * randn(batch, device=DEVICE)).requires_grad_()
            else:
                x = randn(batch, frames, DIM, device=DEVICE).requires_grad_()
            extra = extra_inputs(module, batch)
            call = LossCall(family, x, label, lengths, extra)
            loss, score = compiled(label, x, lengths, extra)
            up_loss, up_score = random_upstream(loss), random_upstream(score)
            replayed = snapshot(step_outputs(module, call, loss, score, up_loss, up_score))
            eager_loss, eager_score = step(label, x, lengths, extra)
            eager = step_outputs(module, call, eager_loss, eager_score, up_loss, up_score)
            expected = expected_step(module, twin, call, up_loss, up_score)
            assert_replay_correct(replayed, eager, expected, f"reduce-overhead {name}, call {replay}")
        assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    finally:
        torch._dynamo.reset()
