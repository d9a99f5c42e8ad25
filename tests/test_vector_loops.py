"""The CPU's per-ISA vector loops (csrc/cpu/vector_loops.h) and their streaming-store path.

The float32 kernels pick an AVX2 or a baseline build of their hot loops
at run time (csrc/cpu/vector_loops.cpp), and write gradients larger than a
threshold with streaming stores. The threshold is 8 MiB by default, which no
other test reaches, so this test lowers it to 0 in a fresh interpreter
(SPOOFLOSS_STREAM_MIN_BYTES is read once per process) and checks that path
for every registered cosine loss, element by element against the float64
reference (helpers.steps.check_step).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import spoofloss
import torch

PYTHON_DIR = os.path.dirname(os.path.dirname(spoofloss.__file__))
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

CHECK_SCRIPT = textwrap.dedent(
    """
    import torch, spoofloss
    from helpers.losses import build, make_call, names
    from helpers.steps import check_step
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    torch.manual_seed(20261125)
    # D = 64: rows 32-byte aligned, streamed. D = 36: not a multiple of 8
    # floats, so written through the cache even though streaming is asked for.
    for batch, frames, dim in [(5, 37, 64), (3, 11, 36), (2, 300, 128)]:
        for name in names("cosine"):
            fused, twin = build(name, enc_dim=dim)
            check_step(fused, twin, make_call(fused, batch, frames, dim), f"{name} {batch}x{frames}x{dim} streamed")
    print("ok", spoofloss.build_info()["cpu_vector_loops"])
    """
)


def test_build_info_names_the_vector_loops_in_use():
    assert spoofloss.build_info()["cpu_vector_loops"] in ("avx2", "baseline")


def test_streamed_gradient_matches_reference():
    env = dict(os.environ, SPOOFLOSS_STREAM_MIN_BYTES="0")
    env["PYTHONPATH"] = os.pathsep.join([PYTHON_DIR, TESTS_DIR, env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", CHECK_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stdout.startswith("ok")


def test_binary_loss_accurate_over_the_whole_logit_range():
    """The vectorised exp/log of the binary loss (AVX2 build), element by element.

    Logits from -120 to 120 (where exp underflows, log1p(exp(-|x|)) is below
    float32's resolution of the linear part, and around 0) against float64,
    with the loss written as (max(x, 0) - t x) + log1p(exp(-|x|)) so that the
    yardstick itself does not cancel. A few ulp of float32 is what libm gives.
    """
    x = torch.cat([torch.linspace(-120, 120, 480_001), torch.randn(20_000) * 1e-3, torch.tensor([0.0, -0.0, 1e-30])])
    x64 = x.double()
    for target in (0, 1):
        label = torch.full_like(x, target)
        loss = spoofloss.ops.binary_cross_entropy(x, label, 1, 0).double()
        expected = (x64.clamp_min(0) - target * x64) + torch.log1p(torch.exp(-x64.abs()))
        # exp(x) is flushed to zero for x < -87.3 (results within ~1% of float32's
        # smallest normal, 1.18e-38, and below): an absolute error under 2e-38
        torch.testing.assert_close(loss, expected, rtol=1e-6, atol=2e-38)
        grad = torch.ops.spoofloss._binary_cross_entropy_backward(torch.ones_like(x), x, label, 1, 0).double()
        # sigmoid(x) - t cancels near t: an absolute error of float32's epsilon there
        torch.testing.assert_close(grad, torch.sigmoid(x64) - target, rtol=1e-6, atol=1.2e-7)


def test_binary_loss_keeps_nan_logits_nan():
    x = torch.randn(64)
    x[[3, 17, 40]] = float("nan")
    loss = spoofloss.ops.binary_cross_entropy(x, torch.randint(0, 2, (64,)), 1, 0)
    assert torch.isnan(loss[[3, 17, 40]]).all()
    assert torch.isfinite(loss[~torch.isnan(x)]).all()
