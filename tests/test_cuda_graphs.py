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
* the float64 reference (conftest tolerances), so that a replay that is
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

from conftest import (
    assert_identical,
    assert_step_matches,
    centers_of,
    cosine_step_gradients,
    make_labels,
    make_lengths,
    make_loss_module,
    random_upstream,
    randn,
    reference_binary_step,
    reference_cosine_step,
    requires_cuda,
)

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


# --------------------------------------------------------------------------- #
# torch.cuda.graph around the whole step
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "all-frames"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("kind", ["am", "oc"])
def test_captured_cosine_step_replays_on_new_inputs(kind, reduction, with_lengths):
    batch, frames = 24, 40
    module = make_loss_module(kind, DIM, reduction, DEVICE)
    centres = centers_of(module)
    loss_shape = (batch,) if reduction == "none" else ()

    def fresh_inputs():
        return {
            "emb": randn(batch, frames, DIM, device=DEVICE),
            "label": make_labels(batch).to(DEVICE),
            "lengths": make_lengths(batch, frames, device=DEVICE) if with_lengths else None,
            "centres": randn(*centres.shape, device=DEVICE),
            "up_loss": random_upstream(torch.empty(loss_shape, device=DEVICE)),
            "up_score": random_upstream(torch.empty(batch, device=DEVICE)),
        }

    static = fresh_inputs()
    static["emb"].requires_grad_()
    static["centres"] = centres  # the parameter itself: an optimiser updates it in place

    def step():
        loss = module(static["label"], static["emb"], static["lengths"])
        score = module.score(static["emb"], static["lengths"])
        return cosine_step_gradients(loss, score, static["emb"], centres, static["up_loss"], static["up_score"])

    graph, captured = capture(step)
    for replay in range(REPLAYS):
        fresh = fresh_inputs()
        refill(static, fresh)
        graph.replay()
        replayed = snapshot(captured)
        eager = step()
        expected = reference_cosine_step(kind, static["label"], static["emb"], centres, static["lengths"],
                                         reduction, static["up_loss"], static["up_score"])
        assert_replay_correct(replayed, eager, expected, f"{kind} {reduction}, replay {replay}")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_captured_binary_step_replays_on_new_inputs(reduction):
    batch = 300

    def fresh_inputs():
        return {"pred": 4 * randn(batch, 1, device=DEVICE), "label": make_labels(batch).to(DEVICE),
                "up": random_upstream(torch.empty((batch,) if reduction == "none" else (), device=DEVICE))}

    module = make_loss_module("binary", reduction=reduction)
    static = fresh_inputs()
    static["pred"].requires_grad_()

    def step():
        loss = module(static["pred"], static["label"])
        (grad,) = torch.autograd.grad(loss, [static["pred"]], static["up"])
        return {"loss": loss, "d loss / d pred": grad}

    graph, captured = capture(step)
    for replay in range(REPLAYS):
        refill(static, fresh_inputs())
        graph.replay()
        replayed = snapshot(captured)
        expected = reference_binary_step(static["pred"], static["label"], reduction, static["up"])
        assert_replay_correct(replayed, step(), expected, f"binary {reduction}, replay {replay}")


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
@pytest.mark.parametrize("kind", ["am", "oc"])
def test_graphed_callables(kind, reduction):
    batch, frames = 16, 33
    module = make_loss_module(kind, DIM, reduction, DEVICE)
    eager_module = copy.deepcopy(module)
    centres, eager_centres = centers_of(module), centers_of(eager_module)

    def fresh_inputs():
        emb = randn(batch, frames, DIM, device=DEVICE).requires_grad_()
        return emb, make_labels(batch).to(DEVICE), make_lengths(batch, frames, device=DEVICE)

    # Separate calls (so separate memory pools: the order of the two backward
    # passes is then free) with separate sample tensors, which become the
    # graphs' static inputs.
    loss_sample, score_sample = fresh_inputs(), fresh_inputs()
    graphed_loss = torch.cuda.make_graphed_callables(module, (loss_sample[1], loss_sample[0], loss_sample[2]))
    graphed_score = torch.cuda.make_graphed_callables(Scorer(module), (score_sample[0], score_sample[2]))

    for call in range(REPLAYS):
        emb, label, lengths = fresh_inputs()
        new_centres = randn(*centres.shape, device=DEVICE)
        with torch.no_grad():
            centres.copy_(new_centres)
            eager_centres.copy_(new_centres)
        loss = graphed_loss(label, emb, lengths)
        score = graphed_score(emb, lengths)
        up_loss, up_score = random_upstream(loss), random_upstream(score)
        replayed = snapshot(cosine_step_gradients(loss, score, emb, centres, up_loss, up_score))

        eager_emb = emb.detach().clone().requires_grad_()
        eager = cosine_step_gradients(eager_module(label, eager_emb, lengths), eager_module.score(eager_emb, lengths),
                                      eager_emb, eager_centres, up_loss, up_score)
        expected = reference_cosine_step(kind, label, emb, centres, lengths, reduction, up_loss, up_score)
        assert_replay_correct(replayed, eager, expected, f"graphed {kind} {reduction}, call {call}")


# --------------------------------------------------------------------------- #
# torch.compile(mode="reduce-overhead"): Inductor's CUDA graph trees
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", ["am", "oc", "binary"])
def test_compile_reduce_overhead(kind):
    """The loss and score compiled with CUDA graphs (forward and backward
    graphed by Inductor), run on new inputs each step. Inductor would silently
    run without graphs if it found the step unsafe to capture, so its skip
    counter must stay at zero."""
    from torch._dynamo.utils import counters

    batch, frames = 16, 21
    module = make_loss_module(kind, DIM, "mean", DEVICE)

    def step(label, x, lengths):
        if kind == "binary":
            return module(x, label), module.score(x)
        return module(label, x, lengths), module.score(x, lengths)

    torch._dynamo.reset()
    counters.clear()
    try:
        compiled = torch.compile(step, mode="reduce-overhead", fullgraph=True)
        # the first calls warm up and record, the later ones replay
        for call in range(REPLAYS + 2):
            torch.compiler.cudagraph_mark_step_begin()
            label = make_labels(batch).to(DEVICE)
            lengths = make_lengths(batch, frames, device=DEVICE)
            if kind == "binary":
                x = (4 * randn(batch, device=DEVICE)).requires_grad_()
            else:
                x = randn(batch, frames, DIM, device=DEVICE).requires_grad_()
            loss, score = compiled(label, x, lengths)
            up_loss = random_upstream(loss)
            if kind == "binary":
                (grad,) = torch.autograd.grad(loss, [x], up_loss)
                replayed = {"loss": loss.detach().clone(), "d loss / d pred": grad}
                eager_loss = module(x, label)
                eager = {"loss": eager_loss, "d loss / d pred": torch.autograd.grad(eager_loss, [x], up_loss)[0]}
                expected = reference_binary_step(x, label, "mean", up_loss)
            else:
                centres, up_score = centers_of(module), random_upstream(score)
                replayed = snapshot(cosine_step_gradients(loss, score, x, centres, up_loss, up_score))
                eager_loss, eager_score = step(label, x, lengths)
                eager = cosine_step_gradients(eager_loss, eager_score, x, centres, up_loss, up_score)
                expected = reference_cosine_step(kind, label, x, centres, lengths, "mean", up_loss, up_score)
            assert_replay_correct(replayed, eager, expected, f"reduce-overhead {kind}, call {call}")
        assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    finally:
        torch._dynamo.reset()
