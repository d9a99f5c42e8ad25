"""Arguments on different devices are refused by every op, fake and real
(issue 10, item 1).

With one argument on the meta device the Meta dispatch key wins, so the
Python fake kernel runs on real inputs: it used to allocate the outputs on
emb's device and return uninitialised memory as the loss, score and
gradients (a module built under torch.device("meta") and never materialised,
called on CPU inputs, trained on garbage). Now every op refuses, naming the
argument and both devices with the library's message, for every tensor
argument of every op (backward ops and optional lengths included), on each
path a call can take:

* through the dispatcher (a meta argument reaches the fake kernel; on a GPU
  machine a CUDA argument reaches the CUDA kernel);
* straight into the CPU kernel (redispatched to the CPU key), which is what
  the C++ checks (csrc/validation.cpp) stand guard over;
* on a GPU machine, straight into the CUDA kernel.

The fake kernels also return their outputs on the device the real kernel
would use (emb's, pooled's or pred's).
"""

from __future__ import annotations

import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from spoofloss.registry import LOSSES

from helpers.devices import HAS_CUDA, NO_CUDA_REASON
from helpers.inputs import make_labels, make_lengths, randn
from helpers.losses import centres_of, names
from helpers.op_args import OPS, call_op, device_message

OTHER_DEVICES = [
    pytest.param("meta", id="meta"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)]),
]


def moved(args, names, device):
    return {k: v.to(device) if k in names and isinstance(v, torch.Tensor) else v for k, v in args.items()}


def expected_message(op_name, arg, arg_device, rest_device):
    """The message when ``arg`` is on arg_device and every other tensor on rest_device."""
    _, tensor_args, owner = OPS[op_name]
    if arg != owner:
        return device_message(arg, arg_device, owner, rest_device)
    # the owner itself moved: the first argument compared with it is named
    return rf"spoofloss: ({'|'.join(a for a in tensor_args if a != owner)}) is on {re.escape(str(rest_device))}" \
           rf"(:0)? but {owner} is on {re.escape(str(arg_device))}(:0)?; move them to one device"


def redispatch(op_name, args, key):
    op = getattr(torch.ops.spoofloss, op_name).default
    return op.redispatch(torch._C.DispatchKeySet(key), *[args[a.name] for a in op._schema.arguments])


CASES = [(op, arg) for op, (_, tensor_args, _) in OPS.items() for arg in tensor_args]
CASE_IDS = [f"{op}-{arg}" for op, arg in CASES]


@pytest.mark.parametrize("path", ["dispatcher", "cpu-kernel", "cuda-kernel"])
@pytest.mark.parametrize("direction", ["one-moved", "others-moved"])
@pytest.mark.parametrize("other", OTHER_DEVICES)
@pytest.mark.parametrize("op_name,arg", CASES, ids=CASE_IDS)
def test_mixed_devices_refused(op_name, arg, other, direction, path):
    if path == "cuda-kernel" and not HAS_CUDA:
        pytest.skip(NO_CUDA_REASON)
    builder, tensor_args, _ = OPS[op_name]
    args = builder()
    if direction == "one-moved":
        args, arg_device, rest_device = moved(args, {arg}, other), other, "cpu"
    else:
        args, arg_device, rest_device = moved(args, set(tensor_args) - {arg}, other), "cpu", other
    message = expected_message(op_name, arg, torch.device(arg_device), torch.device(rest_device))
    with pytest.raises(RuntimeError, match=message):
        if path == "dispatcher":
            call_op(op_name, args)
        elif path == "cpu-kernel":
            redispatch(op_name, args, torch._C.DispatchKey.CPU)
        else:
            redispatch(op_name, args, torch._C.DispatchKey.CUDA)


@pytest.mark.parametrize("other", OTHER_DEVICES)
def test_mixed_devices_refused_with_autograd(other):
    """The same refusal through the autograd kernels, when inputs require grad."""
    for op_name in ("cosine_margin_loss", "cosine_score", "binary_cross_entropy"):
        builder, tensor_args, owner = OPS[op_name]
        args = builder()
        args[owner] = args[owner].requires_grad_()
        for arg in tensor_args:
            if arg == owner:
                continue
            bad = moved(args, {arg}, other)
            with pytest.raises(RuntimeError, match=device_message(arg, other, owner, "cpu")):
                call_op(op_name, bad)


@pytest.mark.parametrize("op_name", list(OPS))
def test_fake_outputs_on_the_real_kernels_device(op_name):
    """Under FakeTensorMode (torch.compile's tracing) and with every input on
    meta, the outputs lie where the real kernel puts them."""
    builder, _, owner = OPS[op_name]
    args = builder()
    real = call_op(op_name, args)
    real = real if isinstance(real, tuple) else (real,)
    with FakeTensorMode() as mode:
        fake_args = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        fake = call_op(op_name, fake_args)
    fake = fake if isinstance(fake, tuple) else (fake,)
    meta = call_op(op_name, moved(args, set(args), "meta"))
    meta = meta if isinstance(meta, tuple) else (meta,)
    for r, f, m in zip(real, fake, meta, strict=True):
        assert f.device == args[owner].device and m.device.type == "meta"
        assert f.shape == r.shape == m.shape and f.dtype == r.dtype == m.dtype


# --------------------------------------------------------------------------- #
# modules built under torch.device("meta") and never materialised
# --------------------------------------------------------------------------- #


def meta_module(name, **kwargs):
    """A registered loss built under torch.device("meta") and never materialised."""
    if LOSSES[name].family == "cosine":
        kwargs["enc_dim"] = 8
    with torch.device("meta"):
        return LOSSES[name].module(**kwargs)


@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["nolen", "len"])
@pytest.mark.parametrize("name", names("cosine"))
def test_meta_module_on_real_inputs(name, with_lengths, requires_grad):
    loss = meta_module(name)
    emb = randn(4, 5, 8).requires_grad_(requires_grad)
    label = make_labels(4)
    lengths = make_lengths(4, 5) if with_lengths else None
    message = device_message("centers", "meta", "emb", "cpu")
    with pytest.raises(RuntimeError, match=message):
        loss(label, emb, lengths)
    with pytest.raises(RuntimeError, match=message):
        loss.score(emb, lengths)
    with pytest.raises(RuntimeError, match=message):
        loss.forward_and_score(label, emb, lengths)


@pytest.mark.parametrize("name", names("cosine"))
def test_meta_label_or_lengths(name):
    loss = LOSSES[name].build(None, enc_dim=8)[0]
    emb = randn(4, 5, 8).requires_grad_()
    with pytest.raises(RuntimeError, match=device_message("label", "meta", "emb", "cpu")):
        loss(make_labels(4).to("meta"), emb)
    with pytest.raises(RuntimeError, match=device_message("lengths", "meta", "emb", "cpu")):
        loss(make_labels(4), emb, make_lengths(4, 5).to("meta"))
    with pytest.raises(RuntimeError, match=device_message("lengths", "meta", "emb", "cpu")):
        loss.score(emb, make_lengths(4, 5).to("meta"))


@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("name", names("logits"))
def test_logits_meta_label(name, requires_grad):
    loss = meta_module(name)
    pred = randn(6).requires_grad_(requires_grad)
    with pytest.raises(RuntimeError, match=device_message("label", "meta", "pred", "cpu")):
        loss(pred, make_labels(6).to("meta"))
    with pytest.raises(RuntimeError, match=device_message("label", "cpu", "pred", "meta")):
        loss(pred.detach().to("meta"), make_labels(6))


@pytest.mark.parametrize("name", names())
def test_meta_module_on_meta_inputs(name):
    """All on meta is consistent, so it runs: shapes and dtypes only (shape
    inference), a backward included."""
    loss = meta_module(name, reduction="none")
    if LOSSES[name].family == "logits":
        pred = torch.empty(6, 1, device="meta", requires_grad=True)
        out = loss(pred, torch.empty(6, device="meta"))
        assert out.device.type == "meta" and out.shape == (6,)
        out.sum().backward()
        assert pred.grad.device.type == "meta" and pred.grad.shape == pred.shape
        return
    emb = torch.empty(4, 5, 8, device="meta", requires_grad=True)
    label = torch.empty(4, dtype=torch.long, device="meta")
    lengths = torch.empty(4, dtype=torch.long, device="meta")
    out = loss(label, emb, lengths)
    score = loss.score(emb, lengths)
    assert out.device.type == "meta" and out.shape == (4,) and score.shape == (4,) and score.device.type == "meta"
    (out.sum() + score.sum()).backward()
    centers = centres_of(loss)
    assert emb.grad.shape == emb.shape and emb.grad.device.type == "meta"
    assert centers.grad.shape == centers.shape and centers.grad.device.type == "meta"
