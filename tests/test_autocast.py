"""The losses under torch.autocast (mixed-precision training).

Under autocast an encoder produces float16 / bfloat16 embeddings while the
losses' centres remain float32 parameters. The contract: each loss computes
in float32 from the low-precision input, returns a float32 loss and score,
sends the gradient back in the input's dtype, and leaves the centres (and
their gradient) in float32.

The spoofloss ops register no autocast kernel, on purpose: autocast lets an
op without one through untouched, so the kernels receive the low-precision emb
and the float32 centres as they are and accumulate in float32 themselves.
An autocast kernel that cast emb to float32 first would only add a copy of
the whole [B, T, D] tensor; one that cast to the low-precision type would
round the centres. These tests check the contract, compare every element with
the float64 reference computed from the very low-precision values the loss
saw, and check that the tolerance would catch centres rounded to the low
precision.
"""

from __future__ import annotations

import copy

import pytest
import torch

from spoofloss.registry import LOSSES

from helpers.devices import HAS_CUDA, NO_CUDA_REASON
from helpers.inputs import make_labels, make_lengths, random_upstream, randn
from helpers.losses import LossCall, build, centres_of, configurations, names, spec_of
from helpers.steps import assert_step_matches, expected_step, step_outputs
from helpers.tolerance import assert_identical, assert_matches

F32 = torch.float32
DIM, FEAT = 24, 20


def autocast_params():
    """(device, low-precision dtype) pairs autocast supports: CPU bfloat16 and
    float16, CUDA float16 and bfloat16 (skipped without a GPU, and bfloat16
    also on a GPU without it)."""
    cuda = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)]
    no_bf16 = not HAS_CUDA or not torch.cuda.is_bf16_supported()
    return [
        pytest.param("cpu", torch.bfloat16, id="cpu-bfloat16"),
        pytest.param("cpu", torch.float16, id="cpu-float16"),
        pytest.param("cuda", torch.float16, id="cuda-float16", marks=cuda),
        pytest.param("cuda", torch.bfloat16, id="cuda-bfloat16", marks=cuda + [
            pytest.mark.skipif(no_bf16, reason="this GPU has no bfloat16 support" if HAS_CUDA else NO_CUDA_REASON)]),
    ]


def encode(encoder, feats, device, dtype):
    """The encoder's output under autocast: emb in the low-precision dtype."""
    with torch.autocast(device_type=device, dtype=dtype):
        emb = encoder(feats)
    assert emb.dtype == dtype, f"autocast gave the encoder output {emb.dtype}, not {dtype}"
    return emb


def extra_inputs(module, batch, device) -> dict:
    spec = spec_of(module)
    extra = spec.make_inputs(module, batch, None) if spec.make_inputs else {}
    return {k: v.to(device) for k, v in extra.items()}


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "all-frames"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name,variant", configurations("cosine", variants=False))
@pytest.mark.parametrize("device,dtype", autocast_params())
def test_cosine_losses_under_autocast(name, variant, reduction, with_lengths, device, dtype):
    batch, frames = 12, 20
    encoder = torch.nn.Linear(FEAT, DIM).to(device)
    module, twin = build(name, variant, enc_dim=DIM, device=device, reduction=reduction)
    centres = centres_of(module)
    feats = randn(batch, frames, FEAT, device=device)
    label = make_labels(batch, LOSSES[name].label_classes(module)).to(device)
    lengths = make_lengths(batch, frames, device=device) if with_lengths else None
    extra = extra_inputs(module, batch, device)

    def forward():
        with torch.autocast(device_type=device, dtype=dtype):
            call = LossCall("cosine", encoder(feats), label, lengths, extra)
            loss, score = call.forward(module), call.score(module)
        return call, loss, score

    call, loss, score = forward()
    assert call.x.dtype == dtype, f"autocast gave the encoder output {call.x.dtype}, not {dtype}"
    assert loss.dtype == F32 and score.dtype == F32, (loss.dtype, score.dtype)
    assert centres.dtype == F32
    up_loss, up_score = random_upstream(loss), random_upstream(score)
    got = step_outputs(module, call, loss, score, up_loss, up_score)
    for name_, value in got.items():
        if name_.startswith("d "):
            assert value.dtype == (dtype if name_.endswith("/ d emb") else F32), (name_, value.dtype)
    assert_step_matches(got, expected_step(module, twin, call, up_loss, up_score), what=f"autocast {dtype}")

    # The same through .backward(), as a training loop runs it: emb.grad (kept
    # with retain_grad) in the low precision, parameter gradients in float32.
    call, loss, _ = forward()
    call.x.retain_grad()
    loss.backward(up_loss)
    assert call.x.grad.dtype == dtype and centres.grad.dtype == F32 and encoder.weight.grad.dtype == F32
    assert centres.dtype == F32, "the centres were cast"
    assert_identical(call.x.grad, got["d loss / d emb"], "emb.grad vs autograd.grad")
    centres_name = next(n for n, p in module.named_parameters() if p is centres)
    assert_identical(centres.grad, got[f"d loss / d {centres_name}"], "centres.grad vs autograd.grad")


@pytest.mark.parametrize("name,variant", configurations("cosine", variants=False))
@pytest.mark.parametrize("device,dtype", autocast_params())
def test_rounded_centres_would_be_caught(name, variant, device, dtype):
    """The loss tolerance above is tight enough to tell float32 centres from
    centres rounded to the low precision: the reference with rounded centres
    differs from the loss by more than it allows. So a matching loss shows
    that the centres reached the kernel in float32."""
    batch, frames = 32, 15
    encoder = torch.nn.Linear(FEAT, DIM).to(device)
    module, twin = build(name, variant, enc_dim=DIM, device=device, reduction="none")
    with torch.no_grad():  # centres that rounding moves (SAMO's initial one-hot rows would not move)
        centres_of(module).copy_(randn(*centres_of(module).shape, device=device))
    emb = encode(encoder, randn(batch, frames, FEAT, device=device), device, dtype)
    label = make_labels(batch, LOSSES[name].label_classes(module)).to(device)
    call = LossCall("cosine", emb, label, make_lengths(batch, frames, device=device),
                    extra_inputs(module, batch, device))
    with torch.autocast(device_type=device, dtype=dtype):
        loss = call.forward(module)
    up, up_score = random_upstream(loss), torch.ones(batch, dtype=F32, device=device)
    exact = expected_step(module, twin, call, up, up_score)["loss"]
    assert_matches(loss, exact[0], what="loss vs float32 centres", scale=exact[1])
    rounded_module = copy.deepcopy(module)
    with torch.no_grad():
        centres_of(rounded_module).copy_(centres_of(module).to(dtype))
    rounded = expected_step(rounded_module, twin, call, up, up_score)["loss"]
    with pytest.raises(AssertionError, match="elements differ"):
        assert_matches(loss, rounded[0], what="loss vs rounded centres", scale=rounded[1])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name,variant", configurations("logits", variants=False))
@pytest.mark.parametrize("device,dtype", autocast_params())
def test_logit_losses_under_autocast(name, variant, reduction, device, dtype):
    batch = 40
    head = torch.nn.Linear(FEAT, 1).to(device)
    module, twin = build(name, variant, device=device, reduction=reduction)
    feats = randn(batch, FEAT, device=device)
    label = make_labels(batch, LOSSES[name].label_classes(module)).to(device)
    with torch.autocast(device_type=device, dtype=dtype):
        call = LossCall("logits", head(feats), label, None, extra_inputs(module, batch, device))  # [B, 1] logits
        loss = call.forward(module)
    assert call.x.dtype == dtype, f"autocast gave the head output {call.x.dtype}, not {dtype}"
    assert loss.dtype == F32, loss.dtype
    call.x.retain_grad()
    up = random_upstream(loss)
    loss.backward(up)
    assert call.x.grad.dtype == dtype and head.weight.grad.dtype == F32, (call.x.grad.dtype, head.weight.grad.dtype)
    score = call.score(module)
    expected = expected_step(module, twin, call, up, torch.ones_like(score))
    got = {"loss": loss, "d loss / d pred": call.x.grad}
    assert_step_matches(got, {k: expected[k] for k in got}, what=f"autocast {dtype}")


@pytest.mark.parametrize("device,dtype", [p for p in autocast_params() if p.id != "cpu-float16"])
def test_autocast_inside_a_compiled_step(device, dtype):
    """torch.compile(fullgraph=True) of every registered loss and its score
    with the autocast region inside the compiled function: the fake kernels
    give the same dtypes as the real ones (float32 results from a
    low-precision input), and results and gradients are identical to eager
    (same kernels on the same inputs; see test_compile.py). The inputs come
    from an eager encoder (or head) under autocast, so their gradients can be
    asked for. Each loss gets an input of its own: summing more than two
    low-precision gradients, eager autograd rounds after every addition while
    Inductor adds in float32 and rounds once, which is not the same number."""
    batch, frames = 8, 11
    encoder = torch.nn.Linear(FEAT, DIM).to(device)
    head = torch.nn.Linear(FEAT, 1).to(device)
    losses = [build(name, None, enc_dim=DIM, device=device, reduction=("mean", "none", "sum")[i % 3])[0]
              for i, name in enumerate(names())]
    calls = []
    for name, module in zip(names(), losses):
        label = make_labels(batch, LOSSES[name].label_classes(module)).to(device)
        if LOSSES[name].family == "logits":
            x = encode(head, randn(batch, FEAT, device=device), device, dtype)
            calls.append(LossCall("logits", x, label, None, extra_inputs(module, batch, device)))
        else:
            x = encode(encoder, randn(batch, frames, FEAT, device=device), device, dtype)
            calls.append(LossCall("cosine", x, label, make_lengths(batch, frames, device=device),
                                  extra_inputs(module, batch, device)))

    def step(xs):
        outputs = []
        with torch.autocast(device_type=device, dtype=dtype):
            for module, call, x in zip(losses, calls, xs):
                call = call.with_input(x)
                outputs.append(call.forward(module))
                if call.family == "cosine":
                    outputs.append(call.score(module))
        return outputs

    xs = [call.x for call in calls]
    leaves = {f"{name} input": x for name, x in zip(names(), xs)}
    leaves.update({f"{name} {p}": param for name, module in zip(names(), losses)
                   for p, param in module.named_parameters()})

    torch._dynamo.reset()
    try:
        compiled_out = torch.compile(step, backend="inductor", fullgraph=True)(xs)
        upstreams = [random_upstream(out) for out in compiled_out]

        def gradients(outputs):
            total = sum((out * up).sum() for out, up in zip(outputs, upstreams))
            return dict(zip(leaves, torch.autograd.grad(total, list(leaves.values()))))

        compiled_grads = gradients(compiled_out)
    finally:
        torch._dynamo.reset()
    eager_out = step(xs)
    eager_grads = gradients(eager_out)

    for index, (got, want) in enumerate(zip(compiled_out, eager_out, strict=True)):
        assert got.dtype == F32, f"output {index}: {got.dtype}"
        assert_identical(got, want, f"compiled vs eager under autocast, output {index}")
    for name in leaves:
        assert compiled_grads[name].dtype == leaves[name].dtype, (name, compiled_grads[name].dtype)
        assert_identical(compiled_grads[name], eager_grads[name], f"compiled vs eager under autocast, d / d {name}")
