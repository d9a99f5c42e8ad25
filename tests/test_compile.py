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
registered loss (spoofloss.registry.LOSSES) and many input forms into one
graph, each case with its own module and inputs so that its gradients stay
its own.
"""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend
from torch.utils._python_dispatch import TorchDispatchMode

from spoofloss.registry import LOSSES

from helpers.inputs import make_labels, make_lengths, random_upstream, randn
from helpers.losses import accepted, build, logits_per_utterance, names
from helpers.tolerance import assert_identical, assert_matches

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


class SpooflossOpCounter(TorchDispatchMode):
    """Counts the torch.ops.spoofloss ops that run under it, by name."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "spoofloss":
            self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def compile_step(step, backend, **kwargs):
    return torch.compile(step, backend=backend, fullgraph=True, **kwargs)


# --------------------------------------------------------------------------- #
# Cases: each is one module with its own inputs; a step runs them all
# --------------------------------------------------------------------------- #

# The input forms of each family, so that every argument travels through the graph:
# cosine: emb [B, T, D] with lengths, [B, T, D] without, [B, D] with float [B, 1] labels;
# logits: [B, 1] logits with int64 labels, [B] logits with float labels.
FORMS = {"cosine": ("lengths", "all frames", "pooled"), "logits": ("B1 logits", "float labels")}


def make_case(name, variant, form, reduction, batch, frames, lengths, device):
    spec = LOSSES[name]
    module = build(name, variant, enc_dim=DIM, device=device, reduction=reduction)[0]
    labels = make_labels(batch, spec.label_classes(module))
    extra = spec.make_inputs(module, batch, None) if spec.make_inputs else {}
    extra = {k: v.to(device) for k, v in extra.items()}
    title = f"{name}{'' if variant is None else '-' + variant} {form} {reduction}"
    if spec.family == "logits":
        shape, label = ((batch, 1), labels) if form == "B1 logits" else ((batch,), labels.float())
        if logits_per_utterance(name, variant) == 2:
            shape = (batch, 2)  # the two logits of each utterance: pred [B, 2], labels [B]
        x = (3 * randn(*shape, device=device)).requires_grad_()
        return dict(name=title, family="logits", module=module, label=label.to(device), x=x, lengths=None,
                    extra=extra)
    label = labels.to(device, torch.float32).unsqueeze(1) if form == "pooled" else labels.to(device)
    shape = (batch, DIM) if form == "pooled" else (batch, frames, DIM)
    return dict(name=title, family="cosine", module=module, label=label, x=randn(*shape, device=device).requires_grad_(),
                lengths=lengths if form == "lengths" else None, extra=extra)


def make_cases(batch, frames, device, full):
    """Every registered loss in every form of its family. full=True: every form
    with every reduction, and each registered variant once; full=False: each form
    and each reduction once (for the tests whose graphs are compiled with
    symbolic shapes, which is slower)."""
    lengths = make_lengths(batch, frames, device=device)
    cases = []
    for name in names():
        forms = FORMS[LOSSES[name].family]
        if full:
            combos = [(None, form, red) for form in forms for red in REDUCTIONS]
            combos += [(variant, forms[i % len(forms)], REDUCTIONS[i % len(REDUCTIONS)])
                       for i, variant in enumerate(LOSSES[name].variants)]
        else:
            combos = [(None, form, red) for form, red in zip(forms * 2, REDUCTIONS)]
        cases += [make_case(name, variant, form, red, batch, frames, lengths, device) for variant, form, red in combos]
    return cases


def inputs_of(cases):
    return ([c["label"] for c in cases], [c["x"] for c in cases], [c["lengths"] for c in cases],
            [c["extra"] for c in cases])


def make_step(cases):
    """step(labels, xs, lengths, extras) -> [loss, score, loss, score, ...], one pair per case's module."""
    plans = [(c["module"], c["family"], list(accepted(c["module"].score, c["extra"]))) for c in cases]

    def step(labels, xs, lengths, extras):
        outputs = []
        for (module, family, score_keys), label, x, lens, extra in zip(plans, labels, xs, lengths, extras):
            score_extra = {k: extra[k] for k in score_keys}
            if family == "logits":
                outputs += [module(x, label, **extra), module.score(x, **score_extra)]
            else:
                outputs += [module(label, x, lens, **extra), module.score(x, lens, **score_extra)]
        return outputs

    return step


def leaves_of(cases):
    """(name, tensor) of every tensor whose gradient is checked: inputs, then parameters."""
    return [(f"{c['name']}: d / d input", c["x"]) for c in cases] + [
        (f"{c['name']}: d / d {n}", p) for c in cases for n, p in c["module"].named_parameters()]


def run_and_differentiate(step, cases, upstreams):
    """Outputs of ``step`` and the gradients of sum(output * upstream) for every leaf."""
    outputs = step(*inputs_of(cases))
    total = sum((out * up).sum() for out, up in zip(outputs, upstreams))
    grads = torch.autograd.grad(total, [leaf for _, leaf in leaves_of(cases)], allow_unused=True,
                                materialize_grads=True)
    return outputs, grads


def assert_same_as_eager(cases, compiled, eager):
    (compiled_outputs, compiled_grads), (eager_outputs, eager_grads) = compiled, eager
    output_names = [f"{c['name']}: {what}" for c in cases for what in ("loss", "score")]
    for name, got, want in zip(output_names, compiled_outputs, eager_outputs, strict=True):
        assert_identical(got, want, f"compiled vs eager, {name}")
    grad_names = [name for name, _ in leaves_of(cases)]
    for name, got, want in zip(grad_names, compiled_grads, eager_grads, strict=True):
        assert_identical(got, want, f"compiled vs eager, {name}")


def eager_op_counts(step, cases, upstreams) -> tuple[collections.Counter, collections.Counter]:
    """The spoofloss ops an eager forward and its backward run (what a graph of the step must hold)."""
    with SpooflossOpCounter() as forward:
        outputs = step(*inputs_of(cases))
    total = sum((out * up).sum() for out, up in zip(outputs, upstreams))
    with SpooflossOpCounter() as backward:
        torch.autograd.grad(total, [leaf for _, leaf in leaves_of(cases)], allow_unused=True)
    return forward.counts, backward.counts


# --------------------------------------------------------------------------- #
# Tests
# --------------------------------------------------------------------------- #


def test_compiled_losses_match_eager(device):
    """Inductor, static shapes: loss and score of every registered loss, for
    every input form with every reduction and each variant, in one graph; the
    backward is AOTAutograd's compiled one; everything identical to eager, and
    the graph holds the spoofloss ops an eager step runs."""
    cases = make_cases(batch=6, frames=9, device=device, full=True)
    step = make_step(cases)
    recorder = GraphRecorder("inductor")
    compiled = compile_step(step, recorder)

    outputs = compiled(*inputs_of(cases))
    for case, loss, score in zip(cases, outputs[0::2], outputs[1::2]):
        # a score that is the input itself or a view of it (BinaryLoss's pred, or its bona fide column)
        # has no node of its own
        eager_score = case["module"].score(case["x"]) if case["family"] == "logits" else None
        returns_input = eager_score is not None and (eager_score is case["x"] or eager_score._base is case["x"])
        for out in (loss,) if returns_input else (loss, score):
            assert out.grad_fn is not None and out.grad_fn.name() == "CompiledFunctionBackward", (
                f"{case['name']}: gradient node {out.grad_fn}, not the compiled backward")
    upstreams = [random_upstream(out) for out in outputs]
    assert_same_as_eager(cases, run_and_differentiate(compiled, cases, upstreams),
                         run_and_differentiate(step, cases, upstreams))

    assert len(recorder.graphs) == 1, f"{len(recorder.graphs)} graphs: the step was recompiled"
    expected, _ = eager_op_counts(step, cases, upstreams)
    assert expected, "the eager step ran no spoofloss op"
    counts = recorder.op_counts()
    assert {op: counts[op] for op in expected} == dict(expected), counts


def test_dynamic_shapes_compile_once(device):
    """dynamic=True: the graph compiled for the first shape serves two more
    batch sizes and lengths of time without recompiling (the backward op takes
    emb's sizes as SymInt[]), identical to eager each time.

    A recompilation is caught with error_on_recompile rather than by counting
    graphs: dynamic=True also traces the modules' float hyper-parameters as
    symbols, which the ops' float arguments then specialise, so Dynamo restarts
    its first trace once and the backend is handed that first graph twice."""
    first, compiled, step = None, None, None
    for call, (batch, frames) in enumerate([(6, 9), (4, 5), (9, 7)]):
        cases = make_cases(batch, frames, device, full=False)
        if first is None:
            first = cases
            step = make_step(cases)
            compiled = compile_step(step, "inductor", dynamic=True)
        for case, kept in zip(cases, first, strict=True):  # the same modules and parameters for every shape
            case["module"] = kept["module"]
        upstreams = [random_upstream(out) for out in step(*inputs_of(cases))]
        with torch._dynamo.config.patch(error_on_recompile=call > 0):
            compiled_result = run_and_differentiate(compiled, cases, upstreams)
        assert_same_as_eager(cases, compiled_result, run_and_differentiate(step, cases, upstreams))


def test_backward_graph_calls_the_fused_backward(device):
    """What AOTAutograd makes of the ops, with symbolic shapes (dynamic=True,
    aot_eager-style compilers that keep the graphs): the forward graph calls
    the fused forward ops and the backward graph the fused backward ops, as
    many of each as an eager step runs, and emb's batch and time sizes reach
    the backward ops (their emb_sizes argument) as graph values, not as the
    sizes of the first call."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    graphs = {"forward": [], "backward": []}

    def keep(which):
        def compiler(gm, example_inputs):
            graphs[which].append(gm)
            return make_boxed_func(gm.forward)
        return compiler

    cases = make_cases(batch=5, frames=8, device=device, full=False)
    step = make_step(cases)
    compiled = compile_step(step, aot_autograd(fw_compiler=keep("forward"), bw_compiler=keep("backward")),
                            dynamic=True)
    upstreams = [random_upstream(out) for out in step(*inputs_of(cases))]
    assert_same_as_eager(cases, run_and_differentiate(compiled, cases, upstreams),
                         run_and_differentiate(step, cases, upstreams))
    # the last forward/backward pair: the restart described above may leave an earlier one
    forward, backward = graphs["forward"][-1], graphs["backward"][-1]
    eager_forward, eager_backward = eager_op_counts(step, cases, upstreams)

    def spoofloss_calls(gm):
        return [n for n in gm.graph.nodes if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
                and n.target.namespace == "spoofloss"]

    for graph, eager in ((forward, eager_forward), (backward, eager_backward)):
        counts = collections.Counter(str(n.target) for n in spoofloss_calls(graph))
        assert counts == eager, f"{counts} != eager's {eager}:\n{graph.code}"
    sized = [n for n in spoofloss_calls(backward) if "emb_sizes" in [a.name for a in n.target._schema.arguments]]
    assert sized, backward.code
    for node in sized:
        position = [a.name for a in node.target._schema.arguments].index("emb_sizes")
        emb_sizes = node.args[position]
        # D is fixed by the centres' shape, so it may be a constant
        assert all(isinstance(size, torch.fx.Node) for size in emb_sizes[:-1]), (
            f"emb_sizes {emb_sizes} in {node.format_node()} were specialised")


@pytest.mark.skipif(not hasattr(torch._dynamo.config, "trace_autograd_ops"),
                    reason="this torch has no torch._dynamo.config.trace_autograd_ops (backward traced into the graph)")
def test_training_step_with_backward_in_the_graph(device):
    """A whole step in one graph: encoder, every registered loss, their scores
    and loss.backward() (traced with Dynamo's trace_autograd_ops, off by
    default). Inductor may compute the encoder's matmul with another kernel or
    summation order than eager, so emb can differ from eager's in its last
    bits: results are compared with the float32 tolerance (atol from each
    eager tensor's largest magnitude), not bit for bit."""
    batch, frames, feat = 6, 9, 12
    encoder = torch.nn.Linear(feat, DIM).to(device)
    head = torch.nn.Linear(DIM, 1).to(device)
    losses = torch.nn.ModuleList(build(name, None, enc_dim=DIM, device=device, reduction=("mean", "sum")[i % 2])[0]
                                 for i, name in enumerate(names()))
    families = [LOSSES[name].family for name in names()]
    extras = [{k: v.to(device) for k, v in (LOSSES[n].make_inputs(m, batch, None) if LOSSES[n].make_inputs
                                            else {}).items()} for n, m in zip(names(), losses)]
    compiled_modules = (encoder, head, losses)
    eager_modules = copy.deepcopy(compiled_modules)
    feats = randn(batch, frames, feat, device=device)
    label = make_labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device)

    def step(encoder, head, losses, feats, label, lengths):
        emb = encoder(feats)
        pred = head(emb.mean(dim=1))
        total, scores = 0, []
        for family, loss_fn, extra in zip(families, losses, extras):
            if family == "logits":
                total = total + loss_fn(pred, label, **extra)
                scores.append(loss_fn.score(pred))
            else:
                total = total + loss_fn(label, emb, lengths, **extra)
                scores.append(loss_fn.score(emb, lengths))
        total.backward()
        return (total.detach(),) + tuple(s.detach() for s in scores)

    recorder = GraphRecorder("inductor")
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled_out = compile_step(step, recorder)(*compiled_modules, feats, label, lengths)
    eager_out = step(*eager_modules, feats, label, lengths)
    assert len(recorder.graphs) == 1

    for name, got, want in zip(["loss"] + [f"{n} score" for n in names()], compiled_out, eager_out, strict=True):
        assert_matches(got, want.double(), what=f"compiled step vs eager, {name}")
    compiled_params = list(torch.nn.ModuleList(compiled_modules).named_parameters())
    eager_params = list(torch.nn.ModuleList(eager_modules).named_parameters())
    for (name, param), (_, twin) in zip(compiled_params, eager_params, strict=True):
        assert param.grad is not None, f"{name} got no gradient from the compiled step"
        assert_matches(param.grad, twin.grad.double(), what=f"compiled step vs eager, d loss / d {name}")
