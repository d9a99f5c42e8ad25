"""Shared fixtures and helpers of the loss / op test suite.

* ``device`` fixture: every test that takes it runs on "cpu" and "cuda"; the
  cuda case is skipped, with a reason, where no GPU is present.
* ``poison`` fixture: deterministic mode with ``fill_uninitialized_memory``, so
  every ``at::empty`` output starts as NaN (floats) / INT_MAX (integers) and an
  element a kernel forgets to write shows up as a mismatch.
* Per-test seeding (autouse): each test draws its random inputs from a seed
  derived from its node id, so failures reproduce and inputs differ per test.
* Input builders (embeddings, lengths, labels), float64 reference copies, and
  ``assert_matches``, the one comparison every numerical test goes through.
"""

from __future__ import annotations

import os
import zlib
from typing import Optional

import pytest
import torch

import kernel_coverage

HAS_CUDA = torch.cuda.is_available()
NO_CUDA_REASON = "no CUDA GPU on this machine"
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)


def _emulated_cuda() -> bool:
    try:
        import spoofloss
    except ImportError:  # tests/test_import_errors.py covers a missing library
        return False
    return bool(spoofloss.build_info().get("cuda_emulation", False))


# The emulated-CUDA build (SPOOFLOSS_CUDA_EMULATION=1) runs the CUDA kernels for
# CPU tensors: tests of backend-specific behaviour expect CUDA's there.
EMULATED_CUDA = _emulated_cuda()


def runs_cuda_kernels(device: str) -> bool:
    """Whether the ops run their CUDA kernels on ``device``: on a GPU, or on the
    CPU of the emulated build. (The CPU kernels raise on a bad label or length;
    the CUDA kernels, which cannot without a host synchronisation, give NaN.)"""
    return device == "cuda" or EMULATED_CUDA


def pytest_sessionfinish(session, exitstatus):
    """On the emulated-CUDA build: print which CUDA kernels ran with which
    dtypes; with SPOOFLOSS_REQUIRE_KERNEL_COVERAGE=1, fail the run when one
    did not (tests/kernel_coverage.py)."""
    if not EMULATED_CUDA or not os.path.isdir(kernel_coverage.SOURCE_DIR):
        return
    import spoofloss

    lines, missing = kernel_coverage.report(spoofloss._C.emulation.coverage())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
    if missing and os.environ.get("SPOOFLOSS_REQUIRE_KERNEL_COVERAGE") == "1":
        if reporter is not None:
            reporter.write_line("kernel coverage FAILED: " + "; ".join(missing), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config):
    # declared in pyproject.toml too; repeated so the suite runs from anywhere
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped without one")


def cuda_only(test):
    """Decorator: a CUDA-only test (marked ``cuda``; skipped without a GPU)."""
    return pytest.mark.cuda(requires_cuda(test))


def devices() -> list:
    """["cpu", "cuda"] as pytest params; cuda is skipped without a GPU."""
    return [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, requires_cuda])]


@pytest.fixture(params=devices())
def device(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _seed(request):
    """Seed torch from the test's node id: fresh but reproducible inputs per test."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield


@pytest.fixture
def poison():
    """Deterministic algorithms + fill_uninitialized_memory for the test's duration.

    With both on, at::empty / torch.empty fill floats with NaN and integers with
    their maximum, so any output element a kernel leaves unwritten is caught by
    the element-wise comparison. warn_only=True: the point is the poisoning, not
    refusing ops that lack a deterministic implementation (e.g. atomics in a
    CUDA reduction), which would only warn.
    """
    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        assert torch.isnan(torch.empty(4)).all(), "uninitialised-memory poisoning is not active"
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = was_fill


# --------------------------------------------------------------------------- #
# Tolerances
# --------------------------------------------------------------------------- #
#
# rtol is that of the dtype of the tensor being checked (1e-5 float32, 1e-10
# float64, 1.6e-2 bfloat16, 1e-3 float16). atol = factor * scale, where scale
# is the magnitude of the terms an element is computed from, not the element
# itself: elements that come out of cancellations (a gradient component near
# 0, embeddings aligned with a centre, D = 1, a tiny loss) carry an absolute
# rounding error proportional to those terms, so a pure rtol would demand more
# than the arithmetic can give, while a fixed atol such as 1e-6 would mean
# nothing for gradients of size 1e-7 (long utterances, mean over a large
# batch). The tests pass the scale: per element for the cosine gradients
# (natural_scales below), s or alpha for the margin losses, 1 for cosines,
# max |logit| for BCE; by default it is the largest reference magnitude.
# The factor is that of float32 arithmetic (1e-6, about 8 ulp) for float32
# and the low-precision dtypes alike (the kernels compute in float32 and round
# once at the end, which rtol covers), and 1e-12 for float64. A floor of the
# dtype's smallest subnormal covers float16 gradients in its subnormal range.
#
# Calibration (float32): the CPU kernels use at most ~25% of the allowed error
# over the whole suite, and so does a deliberately naive float32 implementation
# (sequential sums over the T frames and the D features); real defects (wrong
# eps, a dropped term, a margin rounded to float32, an ignored upstream
# gradient, an unwritten element) exceed it by orders of magnitude.

RTOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.bfloat16: 1.6e-2,
    torch.float16: 1e-3,
}
ATOL_FACTOR = {
    torch.float64: 1e-12,
    torch.float32: 1e-6,
    torch.bfloat16: 1e-6,
    torch.float16: 1e-6,
}


def tolerances(dtype: torch.dtype, scale):
    """(rtol, atol) for a tensor of ``dtype`` whose terms have magnitude
    ``scale`` (a float, or a tensor broadcasting to the checked tensor)."""
    finfo = torch.finfo(dtype)
    return RTOL[dtype], ATOL_FACTOR[dtype] * scale + finfo.tiny * finfo.eps


def assert_matches(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: Optional[torch.dtype] = None,
    what: str = "",
    scale=None,
) -> None:
    """Element-wise comparison of a fused result with its float64 reference.

    ``dtype`` (default: actual's) picks the tolerance. ``scale`` scales atol: a
    float, a tensor broadcasting to ``expected`` (per-utterance / per-centre
    scales), or None for the largest finite reference magnitude. Shapes must
    agree exactly; NaN in ``actual`` fails unless the reference has NaN at the
    same place. On failure the message gives the number of mismatches and the
    first mismatching indices with both values and the allowed difference.
    """
    dtype = dtype or actual.dtype
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    expected = expected.detach().to("cpu", torch.float64)
    actual = actual.detach().to("cpu", torch.float64)
    if scale is None:
        finite = expected[torch.isfinite(expected)]
        scale = finite.abs().max().item() if finite.numel() else 0.0
    elif isinstance(scale, torch.Tensor):
        scale = scale.detach().to("cpu", torch.float64)
    rtol, atol = tolerances(dtype, scale)
    allowed = atol + rtol * expected.abs()
    close = (actual - expected).abs() <= allowed
    both_nan = torch.isnan(actual) & torch.isnan(expected)
    same_inf = torch.isinf(expected) & (actual == expected)
    ok = close | both_nan | same_inf
    if bool(ok.all()):
        return
    bad = (~ok).nonzero()
    allowed = allowed.expand_as(expected) if isinstance(allowed, torch.Tensor) else None
    lines = []
    for index in bad[:5].tolist():
        idx = tuple(index)
        limit = allowed[idx].item() if allowed is not None else float("nan")
        lines.append(f"  at {idx}: got {actual[idx].item()!r}, expected {expected[idx].item()!r} "
                     f"(|diff| {abs(actual[idx].item() - expected[idx].item()):.3g}, allowed {limit:.3g})")
    atol_desc = f"{atol:g}" if isinstance(atol, float) else f"{ATOL_FACTOR[dtype]:g} x per-row scale"
    raise AssertionError(
        f"{what} ({dtype}, rtol={rtol:g}, atol={atol_desc}): {bad.shape[0]} of {expected.numel()} "
        f"elements differ; first mismatches:\n" + "\n".join(lines)
    )


def dloss_dcos(kind: str, cos: torch.Tensor, label: torch.Tensor, upstream: torch.Tensor, reduction: str,
               bonafide_label: int = 1, scale: float = 20.0, margin_bonafide: float = 0.5,
               margin_spoof: Optional[float] = None) -> torch.Tensor:
    """d loss / d cos [B, C] (upstream gradient included), for tolerance scales only.

    kind "am", "oc" or "score" (then label is the centre index, an int)."""
    cos = cos.detach().double().requires_grad_()
    if kind == "score":
        out = cos[:, label]
    elif kind == "am":
        y = label.reshape(-1).long()
        ms = margin_bonafide if margin_spoof is None else margin_spoof
        margin = torch.where(y == bonafide_label, margin_bonafide, ms).double()
        logits = scale * (cos - margin[:, None] * torch.nn.functional.one_hot(y, 2).double())
        out = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    else:
        ms = 0.2 if margin_spoof is None else margin_spoof
        bona = label.reshape(-1) == bonafide_label
        out = torch.nn.functional.softplus(scale * torch.where(bona, margin_bonafide - cos[:, 0], cos[:, 0] - ms))
    if kind != "score" and reduction != "none":
        out = out.mean() if reduction == "mean" else out.sum()
    (grad,) = torch.autograd.grad(out, [cos], upstream.detach().double().cpu())
    return grad


def natural_scales(g_cos: torch.Tensor, emb64: torch.Tensor, centers64: torch.Tensor,
                   lengths: Optional[torch.Tensor]):
    """Element-wise magnitudes of the terms that make up the cosine gradients.

    With x^ = x / |x|, c^ = c / |c| and g = d loss / d cos:
      d/dx_b = sum_k g_bk (c^_k - cos_bk x^_b) / |x_b|   (then / L_b per frame)
      d/dc_k = sum_b g_bk (x^_b - cos_bk c^_k) / |c_k|
    These differences can cancel to ~0 (embeddings aligned with a centre,
    D = 1), so the rounding error of an element is bounded by the size of its
    terms, not by its own size: sum_k |g_bk| (|c^_kd| + |x^_bd|) / |x_b| for
    emb and likewise for the centres. |cos| is bounded by 1 there rather than
    taken at its value: a cosine near 0 still carries the absolute rounding
    error of its O(1) dot-product terms. |x^_d| is taken as mean_t |emb_td| /
    |x|, the size of the terms of the time mean that produced x_d.

    Returns tensors broadcasting to d/d emb ([B, 1, D] or [B, D]) and to
    d/d centres ([C, D])."""
    pooled = R_masked_mean(emb64.detach(), lengths)
    centers = centers64.detach()
    inv_x = 1.0 / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-12)   # [B, 1]
    inv_c = 1.0 / centers.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [C, 1]
    # |x^_d| as computed: x_d is a mean over frames, so its rounding error
    # follows the frames' magnitudes (mean |emb_td|), which can far exceed |x_d|
    xh = R_masked_mean(emb64.detach().abs(), lengths) * inv_x
    ch = (centers * inv_c).abs()
    g = g_cos.abs()
    emb_scale = (g @ ch + g.sum(dim=1, keepdim=True) * xh) * inv_x  # [B, D]
    centre_scale = (g.t() @ xh + g.sum(dim=0)[:, None] * ch) * inv_c  # [C, D]
    if emb64.dim() == 3:
        frames = emb64.shape[1]
        count = torch.full((pooled.shape[0],), float(frames), dtype=torch.float64) if lengths is None \
            else lengths.double().cpu()
        emb_scale = (emb_scale / count[:, None])[:, None, :]
    return emb_scale, centre_scale


def R_masked_mean(emb, lengths):
    from spoofloss import reference

    return reference.masked_mean(emb, None if lengths is None else lengths.cpu())


def expected_out_dtype(dtype: torch.dtype) -> torch.dtype:
    """The contract's loss / score dtype for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- #
# Input builders (all random draws on the CPU, then moved: same data per device)
# --------------------------------------------------------------------------- #


def make_lengths(batch: int, frames: int, dtype: torch.dtype = torch.int64, device="cpu") -> torch.Tensor:
    """Random lengths in [1, T], one == T and (B >= 2) one small, at random places."""
    lengths = torch.randint(1, frames + 1, (batch,))
    order = torch.randperm(batch)
    lengths[order[0]] = frames
    if batch >= 2:
        lengths[order[1]] = min(frames, 1 + int(torch.randint(0, 2, ()).item()))
    return lengths.to(device=device, dtype=dtype)


def make_labels(batch: int) -> torch.Tensor:
    """Random 0/1 int64 labels [B] with both classes present (B >= 2)."""
    labels = torch.randint(0, 2, (batch,))
    if batch >= 2:
        order = torch.randperm(batch)
        labels[order[0]] = 0
        labels[order[1]] = 1
    return labels


def label_as(labels01: torch.Tensor, shape: str = "B", dtype: torch.dtype = torch.int64, device="cpu") -> torch.Tensor:
    """0/1 labels as shape "B" ([B]) or "B1" ([B, 1]) of ``dtype``."""
    out = labels01.to(dtype)
    if shape == "B1":
        out = out.unsqueeze(1)
    return out.to(device)


def randn(*shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Standard normal in float64, then rounded to ``dtype`` (never all zeros)."""
    return torch.randn(*shape, dtype=torch.float64).to(dtype).to(device)


def f64(t: Optional[torch.Tensor], grad: bool = True) -> Optional[torch.Tensor]:
    """A detached float64 CPU copy (requiring grad) of an already rounded tensor."""
    if t is None:
        return None
    out = t.detach().to("cpu", torch.float64)
    return out.requires_grad_(grad)


def cpu(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().cpu()


# --------------------------------------------------------------------------- #
# One loss step (forward, score, backward of each) against the float64
# reference: shared by the torch.compile, autocast and CUDA-graph tests
# --------------------------------------------------------------------------- #

LOSS_KINDS = ("am", "oc", "binary")


def make_loss_module(kind: str, enc_dim: int = 0, reduction: str = "mean", device="cpu"):
    """A fused loss module with its default hyper-parameters and float32 centres."""
    import spoofloss

    if kind == "binary":
        return spoofloss.BinaryLoss(reduction=reduction)
    cls = spoofloss.AMSoftmaxLoss if kind == "am" else spoofloss.OCSoftmaxLoss
    return cls(enc_dim=enc_dim, reduction=reduction).to(device)


def centers_of(module) -> torch.Tensor:
    """The centre parameter of a cosine-margin module (``centers`` or ``center``)."""
    return module.centers if hasattr(module, "centers") else module.center


def random_upstream(out: torch.Tensor) -> torch.Tensor:
    """A random upstream gradient for ``out`` in [0.5, 1.5): never zero, never
    all ones, so a backward that drops or misplaces it is seen."""
    return (torch.rand(out.shape, dtype=torch.float64) + 0.5).to(device=out.device, dtype=out.dtype)


def cosine_step_gradients(loss, score, emb, centers, up_loss, up_score) -> dict:
    """The outputs of one cosine-margin step and the gradients of loss and score,
    each on its own (so a mixed-up backward cannot hide in their sum)."""
    loss_emb, loss_centres = torch.autograd.grad(loss, [emb, centers], up_loss, retain_graph=True)
    score_emb, score_centres = torch.autograd.grad(score, [emb, centers], up_score)
    return {"loss": loss, "score": score, "d loss / d emb": loss_emb, "d loss / d centres": loss_centres,
            "d score / d emb": score_emb, "d score / d centres": score_centres}


def reference_cosine_step(kind: str, label, emb, centers, lengths, reduction: str, up_loss, up_score,
                          bonafide_label: int = 1) -> dict:
    """float64 reference of ``cosine_step_gradients`` for a module with default
    hyper-parameters, from the very values the fused code saw (low-precision
    emb upcast exactly). Maps each name to (expected, atol scale): the loss's
    terms are of size s = alpha = 20, a cosine's of size 1, and the gradients'
    are natural_scales."""
    from spoofloss import reference as R

    e64, c64, lab, lens = f64(emb), f64(centers), cpu(label), cpu(lengths)
    if kind == "am":
        loss = R.am_softmax_loss(lab, e64, c64, lens, s=20.0, m=0.5, reduction=reduction)
        score = R.am_softmax_score(e64, c64, lens, bonafide_label=bonafide_label)
    else:
        loss = R.oc_softmax_loss(lab, e64, c64, lens, bonafide_label=bonafide_label, reduction=reduction)
        score = R.oc_softmax_score(e64, c64, lens)
    loss_emb, loss_centres = torch.autograd.grad(loss, [e64, c64], cpu(up_loss).double())
    score_emb, score_centres = torch.autograd.grad(score, [e64, c64], cpu(up_score).double())
    cos = R._cosines(e64.detach(), c64.detach(), lens)
    loss_scales = natural_scales(dloss_dcos(kind, cos, lab, cpu(up_loss), reduction, bonafide_label), e64, c64, lens)
    center_index = bonafide_label if kind == "am" else 0
    score_scales = natural_scales(dloss_dcos("score", cos, center_index, cpu(up_score), "none"), e64, c64, lens)
    return {
        "loss": (loss, max(20.0, loss.detach().abs().max().item())),
        "score": (score, 1.0),
        "d loss / d emb": (loss_emb, loss_scales[0]),
        "d loss / d centres": (loss_centres, loss_scales[1]),
        "d score / d emb": (score_emb, score_scales[0]),
        "d score / d centres": (score_centres, score_scales[1]),
    }


def reference_binary_step(pred, label, reduction: str, up_loss, bonafide_label: int = 1) -> dict:
    """float64 reference of the binary loss and d loss / d pred (as
    ``reference_cosine_step``). The loss's terms are of the size of the logits;
    the gradient is (sigmoid(x) - t) times the upstream gradient (divided by N
    for the mean), terms of size |upstream| (/ N) that cancel."""
    from spoofloss import reference as R

    p64 = f64(pred)
    loss = R.binary_loss(p64, cpu(label), bonafide_label=bonafide_label, reduction=reduction)
    (grad,) = torch.autograd.grad(loss, [p64], cpu(up_loss).double())
    up = cpu(up_loss).double().abs()
    grad_scale = up.max().item() / (pred.numel() if reduction == "mean" else 1)
    return {
        "loss": (loss, max(p64.detach().abs().max().item(), loss.detach().abs().max().item())),
        "d loss / d pred": (grad, grad_scale),
    }


def assert_step_matches(got: dict, expected: dict, what: str = "") -> None:
    """Every tensor of ``got`` against its float64 reference, with the
    tolerance of its own dtype (see ``tolerances``)."""
    assert set(got) == set(expected), f"{what}: {sorted(got)} != {sorted(expected)}"
    for name, (value, scale) in expected.items():
        assert_matches(got[name], value, what=f"{what} {name}".strip(), scale=scale)


def assert_identical(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Bit-for-bit equality (dtype, shape and every element), with the first
    differing elements in the message."""
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().cpu(), expected.detach().cpu()
    if torch.equal(a, e):
        return
    bad = (a != e).nonzero()
    lines = [f"  at {tuple(i)}: {a[tuple(i)].item()!r} != {e[tuple(i)].item()!r}" for i in bad[:5].tolist()]
    raise AssertionError(f"{what}: {bad.shape[0]} of {e.numel()} elements differ:\n" + "\n".join(lines))
