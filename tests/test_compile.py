"""torch.compile of the losses: one graph, a compiled backward, eager's results.

Each test compiles with ``fullgraph=True``, so a graph break is an error, not
a silent fallback. Compiled results are compared with eager ones bit for bit:
the compiled graph calls the same deterministic kernels on the same inputs,
and every gradient here is the sum of at most two contributions (a case's
loss and its score), which float addition gives identically in either order.
So any difference means that the graph fed a kernel something else (a size,
stride, dtype or argument) or lost or misrouted a gradient, which a tolerance
would hide. Eager itself is checked against the float64 reference in
test_losses.py. The one exception is the whole training step with an encoder
in the graph, where Inductor may do the matmul its own way (see there).

Compiling costs seconds per graph on a small CPU, so each test puts every
loss (AM-softmax, OC-softmax, binary) and many input forms into one graph,
each case with its own module and inputs so that its gradients stay its own.
"""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend

import spoofloss

from conftest import (
    LOSS_KINDS,
    assert_identical,
    assert_matches,
    centers_of,
    make_labels,
    make_lengths,
    make_loss_module,
    random_upstream,
    randn,
)

REDUCTIONS = ("none", "mean", "sum")
DIM = 16


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test starts from no compiled code and leaves none behind."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class GraphRecorder:
    """A torch.compile backend that keeps every graph Dynamo gives it, then
    compiles it with the named backend."""

    def __init__(self, backend="inductor"):
        self.compile = lookup_backend(backend)
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return self.compile(gm, example_inputs)

    def op_counts(self) -> collections.Counter:
        return collections.Counter(
            str(node.target) for gm in self.graphs for node in gm.graph.nodes if node.op == "call_function")


def compile_step(step, backend, **kwargs):
    return torch.compile(step, backend=backend, fullgraph=True, **kwargs)


# --------------------------------------------------------------------------- #
# Cases: each is one module with its own inputs; a step runs them all
# --------------------------------------------------------------------------- #

# The input forms of each loss. full=True crosses every form with every
# reduction; full=False takes each form and each reduction once (for the tests
# whose graphs are compiled with symbolic shapes, which is slower).
FORMS = {
    # emb [B, T, D] with lengths, [B, T, D] without, [B, D] with bonafide_label 0
    # and a float [B, 1] label (so those arguments travel through the graph too)
    "am": ("lengths", "all frames", "pooled"),
    "oc": ("lengths", "all frames", "pooled"),
    # logits [B, 1] with int64 labels, logits [B] with soft float targets
    "binary": ("B1 logits", "soft targets", "B1 logits"),
}


def make_case(kind, form, reduction, batch, frames, labels, lengths, soft, device):
    if kind == "binary":
        shape, label = ((batch, 1), labels) if form == "B1 logits" else ((batch,), soft)
        return dict(name=f"binary {form} {reduction}", kind=kind, module=make_loss_module(kind, reduction=reduction),
                    label=label.to(device), x=(3 * randn(*shape, device=device)).requires_grad_(), lengths=None)
    module = make_loss_module(kind, DIM, reduction, device)
    label = labels.to(device)
    if form == "pooled":
        module.bonafide_label = 0
        label = labels.to(device, torch.float32).unsqueeze(1)
    shape = (batch, DIM) if form == "pooled" else (batch, frames, DIM)
    return dict(name=f"{kind} {form} {reduction}", kind=kind, module=module, label=label,
                x=randn(*shape, device=device).requires_grad_(), lengths=lengths if form == "lengths" else None)


def make_cases(batch, frames, device, full):
    labels, soft = make_labels(batch), torch.rand(batch)
    lengths = make_lengths(batch, frames, device=device)
    cases = []
    for kind in LOSS_KINDS:
        if full:
            combos = [(form, red) for form in dict.fromkeys(FORMS[kind]) for red in REDUCTIONS]
        else:
            combos = list(zip(FORMS[kind], REDUCTIONS))
        cases += [make_case(kind, form, red, batch, frames, labels, lengths, soft, device) for form, red in combos]
    return cases


def inputs_of(cases):
    return [c["label"] for c in cases], [c["x"] for c in cases], [c["lengths"] for c in cases]


def make_step(modules):
    """step(labels, xs, lengths) -> [loss, score, loss, score, ...], one pair per module."""

    def step(labels, xs, lengths):
        outputs = []
        for module, label, x, lens in zip(modules, labels, xs, lengths):
            if isinstance(module, spoofloss.BinaryLoss):
                outputs += [module(x, label), module.score(x)]
            else:
                outputs += [module(label, x, lens), module.score(x, lens)]
        return outputs

    return step


def leaves_of(cases):
    """(name, tensor) of every tensor whose gradient is checked: inputs, then centres."""
    return [(f"{c['name']}: d / d input", c["x"]) for c in cases] + [
        (f"{c['name']}: d / d centres", centers_of(c["module"])) for c in cases if c["kind"] != "binary"]


def run_and_differentiate(step, cases, upstreams):
    """Outputs of ``step`` and the gradients of sum(output * upstream) for every leaf."""
    outputs = step(*inputs_of(cases))
    total = sum((out * up).sum() for out, up in zip(outputs, upstreams))
    grads = torch.autograd.grad(total, [leaf for _, leaf in leaves_of(cases)])
    return outputs, grads


def assert_same_as_eager(cases, compiled, eager):
    (compiled_outputs, compiled_grads), (eager_outputs, eager_grads) = compiled, eager
    output_names = [f"{c['name']}: {what}" for c in cases for what in ("loss", "score")]
    for name, got, want in zip(output_names, compiled_outputs, eager_outputs, strict=True):
        assert_identical(got, want, f"compiled vs eager, {name}")
    grad_names = [name for name, _ in leaves_of(cases)]
    for name, got, want in zip(grad_names, compiled_grads, eager_grads, strict=True):
        assert_identical(got, want, f"compiled vs eager, {name}")


# --------------------------------------------------------------------------- #
# Tests
# --------------------------------------------------------------------------- #


def test_compiled_losses_match_eager(device):
    """Inductor, static shapes: loss and score of each loss, for every input
    form with every reduction, in one graph; the backward is AOTAutograd's
    compiled one; everything identical to eager."""
    cases = make_cases(batch=6, frames=9, device=device, full=True)
    step = make_step([c["module"] for c in cases])
    recorder = GraphRecorder("inductor")
    compiled = compile_step(step, recorder)

    outputs = compiled(*inputs_of(cases))
    for case, loss, score in zip(cases, outputs[0::2], outputs[1::2]):
        # a binary score is pred itself: no node of its own
        for out in (loss,) if case["kind"] == "binary" else (loss, score):
            assert out.grad_fn is not None and out.grad_fn.name() == "CompiledFunctionBackward", (
                f"{case['name']}: gradient node {out.grad_fn}, not the compiled backward")
    upstreams = [random_upstream(out) for out in outputs]
    assert_same_as_eager(cases, run_and_differentiate(compiled, cases, upstreams),
                         run_and_differentiate(step, cases, upstreams))

    assert len(recorder.graphs) == 1, f"{len(recorder.graphs)} graphs: the step was recompiled"
    kinds = collections.Counter(c["kind"] for c in cases)
    expected = {
        "spoofloss.cosine_margin_loss.default": kinds["am"] + kinds["oc"],
        "spoofloss.cosine_score.default": kinds["am"] + kinds["oc"],
        "spoofloss.binary_cross_entropy.default": kinds["binary"],
    }
    counts = recorder.op_counts()
    assert {op: counts[op] for op in expected} == expected, counts


def test_dynamic_shapes_compile_once(device):
    """dynamic=True: the graph compiled for the first shape serves two more
    batch sizes and lengths of time without recompiling (the backward op takes
    emb's sizes as SymInt[]), identical to eager each time.

    A recompilation is caught with error_on_recompile rather than by counting
    graphs: dynamic=True also traces the modules' float hyper-parameters as
    symbols, which the ops' float arguments then specialise, so Dynamo restarts
    its first trace once and the backend is handed that first graph twice."""
    modules, compiled, step = None, None, None
    for call, (batch, frames) in enumerate([(6, 9), (4, 5), (9, 7)]):
        cases = make_cases(batch, frames, device, full=False)
        if modules is None:
            modules = [c["module"] for c in cases]
            step = make_step(modules)
            compiled = compile_step(step, "inductor", dynamic=True)
        for case, module in zip(cases, modules):  # the same parameters for every shape
            case["module"] = module
        upstreams = [random_upstream(out) for out in step(*inputs_of(cases))]
        with torch._dynamo.config.patch(error_on_recompile=call > 0):
            compiled_result = run_and_differentiate(compiled, cases, upstreams)
        assert_same_as_eager(cases, compiled_result, run_and_differentiate(step, cases, upstreams))


def test_backward_graph_calls_the_fused_backward(device):
    """What AOTAutograd makes of the ops, with symbolic shapes (dynamic=True,
    aot_eager-style compilers that keep the graphs): the forward graph calls
    the fused forward ops, the backward graph the fused backward op once per
    differentiated forward op, and emb's batch and time sizes reach the cosine
    backward op as graph values, not as the sizes of the first call."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    graphs = {"forward": [], "backward": []}

    def keep(which):
        def compiler(gm, example_inputs):
            graphs[which].append(gm)
            return make_boxed_func(gm.forward)
        return compiler

    cases = make_cases(batch=5, frames=8, device=device, full=False)
    step = make_step([c["module"] for c in cases])
    compiled = compile_step(step, aot_autograd(fw_compiler=keep("forward"), bw_compiler=keep("backward")),
                            dynamic=True)
    upstreams = [random_upstream(out) for out in step(*inputs_of(cases))]
    assert_same_as_eager(cases, run_and_differentiate(compiled, cases, upstreams),
                         run_and_differentiate(step, cases, upstreams))
    # the last forward/backward pair: the restart described above may leave an earlier one
    forward, backward = graphs["forward"][-1], graphs["backward"][-1]

    def calls(gm, op):
        return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is op]

    ops = torch.ops.spoofloss
    n_cosine = sum(c["kind"] != "binary" for c in cases)
    n_binary = len(cases) - n_cosine
    assert len(calls(forward, ops.cosine_margin_loss.default)) == n_cosine, forward.code
    assert len(calls(forward, ops.cosine_score.default)) == n_cosine, forward.code
    assert len(calls(forward, ops.binary_cross_entropy.default)) == n_binary, forward.code
    assert len(calls(backward, ops._binary_cross_entropy_backward.default)) == n_binary, backward.code
    cosine_backward = calls(backward, ops._cosine_margin_loss_backward.default)
    assert len(cosine_backward) == 2 * n_cosine, backward.code  # the loss's and the score's
    for node in cosine_backward:
        emb_sizes = node.args[7]  # after grad_loss, grad_score, pooled, centers, label, lengths, center_index
        # D is fixed by the centres' shape, so it may be a constant
        assert all(isinstance(size, torch.fx.Node) for size in emb_sizes[:-1]), (
            f"emb_sizes {emb_sizes} in {node.format_node()} were specialised")


@pytest.mark.skipif(not hasattr(torch._dynamo.config, "trace_autograd_ops"),
                    reason="this torch has no torch._dynamo.config.trace_autograd_ops (backward traced into the graph)")
def test_training_step_with_backward_in_the_graph(device):
    """A whole step in one graph: encoder, all three losses, their scores and
    loss.backward() (traced with Dynamo's trace_autograd_ops, off by default).
    Inductor may compute the encoder's matmul with another kernel or summation
    order than eager, so emb can differ from eager's in its last bits: results
    are compared with conftest's float32 tolerance (atol from each eager
    tensor's largest magnitude), not bit for bit."""
    batch, frames, feat = 6, 9, 12
    encoder = torch.nn.Linear(feat, DIM).to(device)
    head = torch.nn.Linear(DIM, 1).to(device)
    am = make_loss_module("am", DIM, "mean", device)
    oc = make_loss_module("oc", DIM, "sum", device)
    binary = make_loss_module("binary", reduction="mean")
    compiled_modules = (encoder, head, am, oc)
    eager_modules = copy.deepcopy(compiled_modules)
    feats = randn(batch, frames, feat, device=device)
    label = make_labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device)

    def step(encoder, head, am, oc, feats, label, lengths):
        emb = encoder(feats)
        pred = head(emb.mean(dim=1))
        loss = am(label, emb, lengths) + oc(label, emb, lengths) + binary(pred, label)
        scores = (am.score(emb, lengths), oc.score(emb, lengths), binary.score(pred))
        loss.backward()
        return (loss.detach(),) + tuple(s.detach() for s in scores)

    recorder = GraphRecorder("inductor")
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled_out = compile_step(step, recorder)(*compiled_modules, feats, label, lengths)
    eager_out = step(*eager_modules, feats, label, lengths)
    assert len(recorder.graphs) == 1

    for name, got, want in zip(("loss", "AM score", "OC score", "binary score"), compiled_out, eager_out):
        assert_matches(got, want.double(), what=f"compiled step vs eager, {name}")

    def named_parameters(modules):
        return [(f"{label}.{name}", p) for label, module in zip(("encoder", "head", "AM", "OC"), modules)
                for name, p in module.named_parameters()]

    for (name, param), (_, twin) in zip(named_parameters(compiled_modules), named_parameters(eager_modules),
                                        strict=True):
        assert param.grad is not None, f"{name} got no gradient from the compiled step"
        assert_matches(param.grad, twin.grad.double(), what=f"compiled step vs eager, d loss / d {name}")
