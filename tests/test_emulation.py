"""The emulated CUDA device (builds with SPOOFLOSS_CUDA_EMULATION=1).

The rest of the suite runs unchanged through the CUDA kernels on that build;
this file shows what the emulator itself promises:

* each kind of kernel bug it exists to catch is caught, on a deliberately
  broken kernel of csrc/cuda/emulation/selftest_kernels.cu: a barrier not
  every thread reaches, barriers that differ between threads, a shuffle with
  a lane missing, races on shared and on global memory (results that change
  with the scheduling seed), a misaligned vector access, reads of scratch or
  shared memory nothing wrote (NaN), launches over the hardware limits, and,
  in the sanitizer build, out-of-bounds reads and writes;
* the real kernels give the same bits under every scheduling seed, and match
  the float64 reference for every multiprocessor count (1, 7, 108, 132), which
  moves the time-chunk split through all of its cases;
* the launches and scratch bytes of each op call, pinned, so that a change
  adding a launch or a buffer on the GPU path shows up here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import spoofloss
from spoofloss import reference as R

from conftest import EMULATED_CUDA, assert_identical, assert_matches, f64, make_labels, make_lengths, randn

pytestmark = pytest.mark.skipif(not EMULATED_CUDA, reason="needs the emulated-CUDA build (SPOOFLOSS_CUDA_EMULATION=1)")

SANITIZED = "address" in spoofloss.build_info().get("sanitizers", "")


@pytest.fixture
def emulation():
    """spoofloss._C.emulation, with the seed and the multiprocessor count restored afterwards."""
    emu = spoofloss._C.emulation
    seed, sms = emu.seed(), emu.multiprocessor_count()
    yield emu
    emu.set_seed(seed)
    emu.set_multiprocessor_count(sms)


def selftest(case: str, n: int = 300) -> torch.Tensor:
    return torch.ops.spoofloss_emulation.selftest(case, n)


# --------------------------------------------------------------------------- #
# deliberately broken kernels
# --------------------------------------------------------------------------- #


def test_correct_kernel_runs(emulation):
    """The emulator runs a correct kernel (block_sum's shuffles and barriers) to
    the right answer, with the same bits for every seed."""
    results = []
    for seed in (1, 2, 3):
        emulation.set_seed(seed)
        torch.manual_seed(7)  # the kernel's input comes from torch's generator
        data = torch.randn(1000)
        torch.manual_seed(7)
        results.append(selftest("block_sum", 1000)[:1])
    assert_matches(results[0], data.double().sum().reshape(1), dtype=torch.float32, scale=data.abs().sum().item())
    assert_identical(results[1], results[0], "block sum, seed 2 vs seed 1")
    assert_identical(results[2], results[0], "block sum, seed 3 vs seed 1")


@pytest.mark.parametrize("case,expected", [
    ("missed_barrier", r"missed_barrier_kernel.*__syncthreads\(\) selftest_kernels\.cu:\d+ is not reached by every "
                       r"thread.*thread \(\d+, 0, 0\) has exited"),
    ("divergent_barriers", r"divergent_barriers_kernel.*threads wait at different barriers"),
    ("shuffle_missing_lane", r"shuffle_missing_lane_kernel.*__shfl_down_sync\(0xffffffff, \.\.\.\).*can never "
                             r"complete: lane 5 has exited"),
    ("misaligned_load", r"misaligned_load_kernel.*misaligned 16-byte vector load"),
], ids=lambda v: v if isinstance(v, str) and " " not in v and "\\" not in v else "")
def test_kernel_bug_is_reported(case, expected, emulation):
    """A GPU would hang or silently compute garbage; the emulator stops the
    kernel and the launch check raises, naming the kernel and the bug."""
    for seed in (1, 2):
        emulation.set_seed(seed)
        with pytest.raises(RuntimeError, match=expected):
            selftest(case)


@pytest.mark.parametrize("case", ["shared_race", "global_race"])
def test_race_changes_with_the_seed(case, emulation):
    """A race (a missing barrier before reading another thread's shared
    element; blocks writing one global element) gives results that depend on
    the scheduling order, so two seeds disagree."""
    outputs = []
    for seed in range(1, 5):
        emulation.set_seed(seed)
        outputs.append(selftest(case).nan_to_num(-1.0))
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:]), \
        f"{case}: four seeds gave the same result; the race went unseen"


@pytest.mark.parametrize("case", ["unwritten_scratch", "uninitialized_shared"])
def test_unwritten_memory_reads_nan(case):
    """Scratch from the allocator and shared memory start as NaN: a kernel that
    reads what nothing wrote produces NaN, which every comparison catches."""
    out = selftest(case, 256)
    assert torch.isnan(out).all(), f"{case}: {int((~torch.isnan(out)).sum())} of {out.numel()} elements are not NaN"


@pytest.mark.parametrize("case,expected", [
    ("grid_x_too_large", r"grid\.x = 2147483648 exceeds 2\^31 - 1"),
    ("grid_y_too_large", r"grid \(1, 65536, 1\): y and z may not exceed 65535"),
    ("zero_grid", r"grid \(0, 1, 1\) is empty"),
    ("block_too_large", r"block \(1025, 1, 1\) exceeds 1024 threads"),
    ("dynamic_shared_too_large", r"50176 bytes of dynamic shared memory exceed 48 KiB"),
])
def test_launch_over_limits_is_refused(case, expected):
    with pytest.raises(RuntimeError, match=r"invalid launch of kernel emulation::trivial_kernel: " + expected):
        selftest(case)


def test_unknown_selftest_case_is_named():
    with pytest.raises(ValueError, match="unknown selftest case 'nope'.*missed_barrier"):
        selftest("nope")


ASAN_SCRIPT = textwrap.dedent(
    """
    import sys, torch, spoofloss
    torch.ops.spoofloss_emulation.selftest(sys.argv[1], 300)
    print("no report")
    """
)


def sanitizer_environment() -> dict:
    env = dict(os.environ)
    if "libasan" not in env.get("LD_PRELOAD", ""):
        pytest.skip("the sanitizer build must run with libasan and libubsan preloaded (see README)")
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    return env


@pytest.mark.skipif(not SANITIZED, reason="out-of-bounds accesses are caught by the sanitizer build "
                                          "(SPOOFLOSS_CUDA_EMULATION=1 SPOOFLOSS_SANITIZE=1)")
@pytest.mark.parametrize("case,report", [
    ("out_of_bounds", "heap-buffer-overflow"),
    ("shared_out_of_bounds", "heap-buffer-overflow"),
])
def test_out_of_bounds_is_caught_by_asan(case, report):
    """A read past the end of a tensor, a write past the end of a shared array:
    AddressSanitizer stops the process with a report (so in a subprocess)."""
    proc = subprocess.run([sys.executable, "-c", ASAN_SCRIPT, case], capture_output=True, text=True,
                          env=sanitizer_environment(), timeout=300)
    assert proc.returncode != 0 and report in proc.stderr, \
        f"{case}: exit {proc.returncode}, stdout {proc.stdout[-300:]!r}, stderr {proc.stderr[-2000:]!r}"


# --------------------------------------------------------------------------- #
# the real kernels: every seed, every multiprocessor count
# --------------------------------------------------------------------------- #


def one_step(kind: str, batch: int, frames: int, dim: int, dtype: torch.dtype, seed: int):
    """Loss, score and gradients of one step of ``kind`` on inputs drawn from ``seed``."""
    torch.manual_seed(seed)
    label = make_labels(batch)
    if kind == "binary":
        pred = randn(batch, dtype=dtype).requires_grad_()
        loss = spoofloss.BinaryLoss(reduction="mean")(pred, label.double() * 0.75 + 0.1)
        (grad,) = torch.autograd.grad(loss, [pred])
        return {"loss": loss, "d pred": grad}
    module = (spoofloss.AMSoftmaxLoss if kind == "am" else spoofloss.OCSoftmaxLoss)(enc_dim=dim)
    centers = module.centers if kind == "am" else module.center
    emb = randn(batch, frames, dim, dtype=dtype).requires_grad_()
    lengths = make_lengths(batch, frames)
    loss = module(label, emb, lengths)
    grads = torch.autograd.grad(loss, [emb, centers])
    score = module.score(emb, lengths)
    return {"loss": loss, "score": score, "d emb": grads[0], "d centres": grads[1]}


SHAPES = [(3, 70, 64), (17, 9, 12), (1, 300, 40)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("kind", ["am", "oc", "binary"])
def test_same_bits_for_every_seed(kind, dtype, emulation):
    """Thread and block order change with the seed; a race-free kernel's
    results do not, in any bit."""
    for shape in SHAPES:
        emulation.set_seed(1)
        first = one_step(kind, *shape, dtype, seed=11)
        for seed in (2, 3):
            emulation.set_seed(seed)
            again = one_step(kind, *shape, dtype, seed=11)
            for name, value in first.items():
                assert_identical(again[name], value, f"{kind} {shape} {name}, scheduling seed {seed} vs 1")


@pytest.mark.parametrize("sms", [1, 7, 108, 132])
@pytest.mark.parametrize("kind", ["am", "oc"])
def test_every_multiprocessor_count(kind, sms, emulation, poison):
    """The time axis is split into chunks by the multiprocessor count: with
    B = 4 and T = 2000, 1 multiprocessor gives one chunk, 7 give 7, 108 and
    132 the most the frames allow (16). Every split matches the float64
    reference."""
    emulation.set_multiprocessor_count(sms)
    batch, frames, dim = 4, 2000, 16
    torch.manual_seed(sms)
    module = (spoofloss.AMSoftmaxLoss if kind == "am" else spoofloss.OCSoftmaxLoss)(enc_dim=dim, reduction="none")
    centers = module.centers if kind == "am" else module.center
    label, lengths = make_labels(batch), make_lengths(batch, frames)
    emb = randn(batch, frames, dim).requires_grad_()
    loss = module(label, emb, lengths)
    upstream = torch.rand(batch, dtype=torch.float64).float() + 0.5
    d_emb, d_centres = torch.autograd.grad(loss, [emb, centers], upstream)
    e64, c64 = f64(emb), f64(centers)
    reference = (R.am_softmax_loss(label, e64, c64, lengths, reduction="none") if kind == "am"
                 else R.oc_softmax_loss(label, e64, c64, lengths, reduction="none"))
    assert_matches(loss, reference, what=f"{kind} loss, {sms} SMs", scale=20.0)
    ref_emb, ref_centres = torch.autograd.grad(reference, [e64, c64], upstream.double())
    assert_matches(d_emb, ref_emb, what=f"{kind} d emb, {sms} SMs")
    assert_matches(d_centres, ref_centres, what=f"{kind} d centres, {sms} SMs")


def test_multiprocessor_count_moves_the_split(emulation):
    """The counts above really reach different splits (seen in the scratch the
    forward allocates: B x chunks x D floats)."""
    chunks = set()
    for sms in (1, 7, 108, 132):
        emulation.set_multiprocessor_count(sms)
        emulation.reset_counters()
        spoofloss.OCSoftmaxLoss(enc_dim=16)(make_labels(4), randn(4, 2000, 16))
        chunks.add(emulation.counters()["scratch_bytes"] // (4 * 16 * 4))
    assert 1 in chunks and len(chunks) >= 3, f"time chunks seen: {sorted(chunks)}"


# --------------------------------------------------------------------------- #
# launches and scratch per op call
# --------------------------------------------------------------------------- #


def counted(emulation, fn):
    emulation.reset_counters()
    fn()
    return emulation.counters()


def test_launch_and_scratch_counts(emulation):
    """What each op costs on the GPU path, pinned: B = 4, T = 50, D = 64 on
    132 multiprocessors splits T into 2 chunks (132 * 4 / B blocks wanted, at
    most T / (2048 / D) chunks); the forward's scratch is partial
    [B, chunks, D] float32, the backward's frame_grad [B, D] and alpha, g_cos
    [B, 2] each; the binary loss's mean reduction keeps one partial sum per
    block (8 * SMs blocks at most, one per 256 elements here)."""
    emulation.set_multiprocessor_count(132)
    batch, frames, dim = 4, 50, 64
    label, lengths = make_labels(batch), make_lengths(batch, frames)
    emb = randn(batch, frames, dim).requires_grad_()
    module = spoofloss.AMSoftmaxLoss(enc_dim=dim)
    loss_holder = {}

    def forward():
        loss_holder["loss"] = module(label, emb, lengths)

    c = counted(emulation, forward)
    assert c["kernels"] == ["pool_chunks_kernel<float, float, 4>", "cosine_epilogue_kernel<float>",
                            "sum_kernel<float>"], c["kernels"]
    assert (c["scratch_allocations"], c["scratch_bytes"]) == (1, batch * 2 * dim * 4), c

    c = counted(emulation, lambda: loss_holder["loss"].backward())
    assert c["kernels"] == ["backward_coefficients_kernel<float>", "broadcast_frames_kernel<float, float, 4>",
                            "center_gradient_kernel<float>"], c["kernels"]
    assert (c["scratch_allocations"], c["scratch_bytes"]) == (3, (batch * dim + 2 * batch * 2) * 4), c

    c = counted(emulation, lambda: module.score(emb.detach(), lengths))
    assert c["kernels"] == ["pool_chunks_kernel<float, float, 4>", "cosine_epilogue_kernel<float>"], c["kernels"]
    assert (c["scratch_allocations"], c["scratch_bytes"]) == (1, batch * 2 * dim * 4), c

    c = counted(emulation, lambda: spoofloss.AMSoftmaxLoss(enc_dim=dim, reduction="none")(label, emb.detach(), lengths))
    assert c["kernels"] == ["pool_chunks_kernel<float, float, 4>", "cosine_epilogue_kernel<float>"], c["kernels"]

    pred = randn(1000).requires_grad_()
    target = make_labels(1000)
    binary = spoofloss.BinaryLoss()
    c = counted(emulation, lambda: loss_holder.update(loss=binary(pred, target)))
    assert c["kernels"] == ["bce_forward_kernel<float, float>", "sum_kernel<float>"], c["kernels"]
    assert (c["scratch_allocations"], c["scratch_bytes"]) == (1, 4 * 4), c  # ceil(1000 / 256) = 4 partial sums
    c = counted(emulation, lambda: loss_holder["loss"].backward())
    assert c["kernels"] == ["bce_backward_kernel<float, float>"], c["kernels"]
    assert c["scratch_allocations"] == 0, c
