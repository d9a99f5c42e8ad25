"""The CPU's per-ISA row loops and their streaming-store path.

The float32 kernels pick an AVX2 or a baseline build of their two hot loops
at run time (csrc/cpu/row_loops.cpp), and write gradients larger than a
threshold with streaming stores. The threshold is 8 MiB by default, which no
other test reaches, so this test lowers it to 0 in a fresh interpreter
(SPOOFLOSS_STREAM_MIN_BYTES is read once per process) and checks that path
element by element against the float64 reference.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import spoofloss

PYTHON_DIR = os.path.dirname(os.path.dirname(spoofloss.__file__))

CHECK_SCRIPT = textwrap.dedent(
    """
    import torch, spoofloss
    from spoofloss import reference as R
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    torch.manual_seed(20261125)
    # D = 64: rows 32-byte aligned, streamed. D = 36: not a multiple of 8
    # floats, so written through the cache even though streaming is asked for.
    for batch, frames, dim in [(5, 37, 64), (3, 11, 36), (2, 300, 128)]:
        for kind in ("am", "oc"):
            fused = spoofloss.AMSoftmaxLoss(enc_dim=dim) if kind == "am" else spoofloss.OCSoftmaxLoss(enc_dim=dim)
            ref = R.AMSoftmaxLoss(enc_dim=dim) if kind == "am" else R.OCSoftmaxLoss(enc_dim=dim)
            ref = ref.double()
            ref.load_state_dict({k: v.double() for k, v in fused.state_dict().items()})
            emb = torch.randn(batch, frames, dim, requires_grad=True)
            emb64 = emb.detach().double().requires_grad_()
            label = torch.randint(0, 2, (batch,))
            lengths = torch.randint(1, frames + 1, (batch,))
            fused(label, emb, lengths).backward()
            ref(label, emb64, lengths).backward()
            torch.testing.assert_close(emb.grad, emb64.grad.float(), rtol=1e-5, atol=1e-7)
            for b, n in enumerate(lengths.tolist()):
                assert torch.all(emb.grad[b, n:] == 0), "padding frames must get exactly zero gradient"
            for p, p64 in zip(fused.parameters(), ref.parameters()):
                torch.testing.assert_close(p.grad, p64.grad.float(), rtol=1e-5, atol=1e-6)
    print("ok", spoofloss.build_info()["cpu_row_loops"])
    """
)


def test_build_info_names_the_row_loops_in_use():
    assert spoofloss.build_info()["cpu_row_loops"] in ("avx2", "baseline")


def test_streamed_gradient_matches_reference():
    env = dict(os.environ, SPOOFLOSS_STREAM_MIN_BYTES="0")
    env["PYTHONPATH"] = PYTHON_DIR + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", CHECK_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.stdout.startswith("ok")
