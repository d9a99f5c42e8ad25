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

import pytest
import torch

from conftest import (
    HAS_CUDA,
    NO_CUDA_REASON,
    assert_identical,
    assert_matches,
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
)

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


@pytest.mark.parametrize("with_lengths", [True, False], ids=["lengths", "all-frames"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("kind", ["am", "oc"])
@pytest.mark.parametrize("device,dtype", autocast_params())
def test_cosine_losses_under_autocast(kind, reduction, with_lengths, device, dtype):
    batch, frames = 12, 20
    encoder = torch.nn.Linear(FEAT, DIM).to(device)
    module = make_loss_module(kind, DIM, reduction, device)
    centres = centers_of(module)
    feats = randn(batch, frames, FEAT, device=device)
    label = make_labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device) if with_lengths else None

    def forward():
        with torch.autocast(device_type=device, dtype=dtype):
            emb = encoder(feats)
            loss = module(label, emb, lengths)
            score = module.score(emb, lengths)
        return emb, loss, score

    emb, loss, score = forward()
    assert emb.dtype == dtype, f"autocast gave the encoder output {emb.dtype}, not {dtype}"
    assert loss.dtype == F32 and score.dtype == F32, (loss.dtype, score.dtype)
    assert centres.dtype == F32
    up_loss, up_score = random_upstream(loss), random_upstream(score)
    got = cosine_step_gradients(loss, score, emb, centres, up_loss, up_score)
    assert got["d loss / d emb"].dtype == dtype and got["d score / d emb"].dtype == dtype
    assert got["d loss / d centres"].dtype == F32 and got["d score / d centres"].dtype == F32
    expected = reference_cosine_step(kind, label, emb, centres, lengths, reduction, up_loss, up_score)
    assert_step_matches(got, expected, what=f"autocast {dtype}")

    # The same through .backward(), as a training loop runs it: emb.grad (kept
    # with retain_grad) in the low precision, parameter gradients in float32.
    emb, loss, _ = forward()
    emb.retain_grad()
    loss.backward(up_loss)
    assert emb.grad.dtype == dtype and centres.grad.dtype == F32 and encoder.weight.grad.dtype == F32
    assert centres.dtype == F32, "the centres were cast"
    assert_identical(emb.grad, got["d loss / d emb"], "emb.grad vs autograd.grad")
    assert_identical(centres.grad, got["d loss / d centres"], "centres.grad vs autograd.grad")


@pytest.mark.parametrize("kind", ["am", "oc"])
@pytest.mark.parametrize("device,dtype", autocast_params())
def test_rounded_centres_would_be_caught(kind, device, dtype):
    """The loss tolerance above is tight enough to tell float32 centres from
    centres rounded to the low precision: the reference with rounded centres
    differs from the loss by more than it allows. So a matching loss shows
    that the centres reached the kernel in float32."""
    batch, frames = 32, 15
    encoder = torch.nn.Linear(FEAT, DIM).to(device)
    module = make_loss_module(kind, DIM, "none", device)
    centres = centers_of(module)
    emb = encode(encoder, randn(batch, frames, FEAT, device=device), device, dtype)
    label = make_labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device)
    with torch.autocast(device_type=device, dtype=dtype):
        loss = module(label, emb, lengths)
    up, up_score = random_upstream(loss), torch.ones(batch, dtype=F32, device=device)
    exact = reference_cosine_step(kind, label, emb, centres, lengths, "none", up, up_score)["loss"]
    assert_matches(loss, exact[0], what="loss vs float32 centres", scale=exact[1])
    rounded = reference_cosine_step(kind, label, emb, centres.detach().to(dtype), lengths, "none", up,
                                    up_score)["loss"]
    with pytest.raises(AssertionError, match="elements differ"):
        assert_matches(loss, rounded[0], what="loss vs rounded centres", scale=rounded[1])


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("device,dtype", autocast_params())
def test_binary_loss_under_autocast(reduction, device, dtype):
    batch = 40
    head = torch.nn.Linear(FEAT, 1).to(device)
    module = make_loss_module("binary", reduction=reduction)
    feats = randn(batch, FEAT, device=device)
    label = make_labels(batch).to(device)
    with torch.autocast(device_type=device, dtype=dtype):
        pred = head(feats)  # [B, 1] logits
        loss = module(pred, label)
    assert pred.dtype == dtype, f"autocast gave the head output {pred.dtype}, not {dtype}"
    assert loss.dtype == F32, loss.dtype
    assert module.score(pred) is pred
    pred.retain_grad()
    up = random_upstream(loss)
    loss.backward(up)
    assert pred.grad.dtype == dtype and head.weight.grad.dtype == F32, (pred.grad.dtype, head.weight.grad.dtype)
    expected = reference_binary_step(pred, label, reduction, up)
    assert_step_matches({"loss": loss, "d loss / d pred": pred.grad}, expected, what=f"autocast {dtype}")


@pytest.mark.parametrize("device,dtype", [p for p in autocast_params() if p.id != "cpu-float16"])
def test_autocast_inside_a_compiled_step(device, dtype):
    """torch.compile(fullgraph=True) of the three losses and their scores with
    the autocast region inside the compiled function: the fake kernels give
    the same dtypes as the real ones (float32 results from a low-precision
    emb), and results and gradients are identical to eager (same kernels on
    the same inputs; see test_compile.py). The embeddings and pred come from
    an eager encoder under autocast, so their gradients can be asked for.
    AM and OC get an embedding each: summing more than two low-precision
    gradients, eager autograd rounds after every addition while Inductor adds
    in float32 and rounds once, which is not the same number."""
    batch, frames = 8, 11
    encoder = torch.nn.Linear(FEAT, DIM).to(device)
    head = torch.nn.Linear(FEAT, 1).to(device)
    am = make_loss_module("am", DIM, "mean", device)
    oc = make_loss_module("oc", DIM, "none", device)
    binary = make_loss_module("binary", reduction="sum")
    label = make_labels(batch).to(device)
    lengths = make_lengths(batch, frames, device=device)

    def step(am_emb, oc_emb, pred, label, lengths):
        with torch.autocast(device_type=device, dtype=dtype):
            return (am(label, am_emb, lengths), am.score(am_emb, lengths), oc(label, oc_emb, lengths),
                    oc.score(oc_emb, lengths), binary(pred, label))

    am_emb = encode(encoder, randn(batch, frames, FEAT, device=device), device, dtype)
    oc_emb = encode(encoder, randn(batch, frames, FEAT, device=device), device, dtype)
    pred = encode(head, randn(batch, FEAT, device=device), device, dtype)
    inputs = (am_emb, oc_emb, pred, label, lengths)
    leaves = {"AM emb": am_emb, "OC emb": oc_emb, "pred": pred, "AM centres": am.centers, "OC centre": oc.center}
    names = ("AM loss", "AM score", "OC loss", "OC score", "binary loss")

    torch._dynamo.reset()
    try:
        compiled_out = torch.compile(step, backend="inductor", fullgraph=True)(*inputs)
        upstreams = [random_upstream(out) for out in compiled_out]

        def gradients(outputs):
            total = sum((out * up).sum() for out, up in zip(outputs, upstreams))
            return dict(zip(leaves, torch.autograd.grad(total, list(leaves.values()))))

        compiled_grads = gradients(compiled_out)
    finally:
        torch._dynamo.reset()
    eager_out = step(*inputs)
    eager_grads = gradients(eager_out)

    for name, got, want in zip(names, compiled_out, eager_out):
        assert got.dtype == F32, f"{name}: {got.dtype}"
        assert_identical(got, want, f"compiled vs eager under autocast, {name}")
    for name in leaves:
        assert compiled_grads[name].dtype == leaves[name].dtype, (name, compiled_grads[name].dtype)
        assert_identical(compiled_grads[name], eager_grads[name], f"compiled vs eager under autocast, d / d {name}")
