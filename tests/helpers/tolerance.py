"""The tolerance policy of the suite and the comparisons that apply it.

rtol is that of the dtype of the tensor being checked (1e-5 float32, 1e-10
float64, 1.6e-2 bfloat16, 1e-3 float16). atol = factor * scale, where scale is
the magnitude of the terms an element is computed from, not the element
itself: elements that come out of cancellations (a gradient component near 0,
embeddings aligned with a centre, D = 1, a tiny loss) carry an absolute
rounding error proportional to those terms, so a pure rtol would demand more
than the arithmetic can give, while a fixed atol such as 1e-6 would mean
nothing for gradients of size 1e-7 (long utterances, mean over a large batch).
The tests pass the scale; helpers.steps derives it for every output of a loss
step from the float64 reference by autograd (the size of d output / d cos for
the cosine losses, helpers.steps.natural_scales for their gradients, the
logits' size for the logit losses). By default it is the largest reference
magnitude.

The factor is that of float32 arithmetic (1e-6, about 8 ulp) for float32 and
the low-precision dtypes alike (the kernels compute in float32 and round once
at the end, which rtol covers), and 1e-12 for float64. A floor of the dtype's
smallest subnormal covers float16 gradients in its subnormal range.

Calibration (float32): the CPU kernels use at most ~25% of the allowed error
over the whole suite, and so does a deliberately naive float32 implementation
(sequential sums over the T frames and the D features); real defects (wrong
eps, a dropped term, a margin rounded to float32, an ignored upstream
gradient, an unwritten element) exceed it by orders of magnitude
(tests/test_tolerance.py breaks a loss on purpose and shows it fails).
"""

from __future__ import annotations

from typing import Optional

import torch

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


def expected_out_dtype(dtype: torch.dtype) -> torch.dtype:
    """The contract's loss / score dtype for inputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


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
    allowed = allowed.expand_as(expected)
    lines = []
    for index in bad[:5].tolist():
        idx = tuple(index)
        lines.append(f"  at {idx}: got {actual[idx].item()!r}, expected {expected[idx].item()!r} "
                     f"(|diff| {abs(actual[idx].item() - expected[idx].item()):.3g}, allowed {allowed[idx].item():.3g})")
    atol_desc = f"{atol:g}" if isinstance(atol, float) else f"{ATOL_FACTOR[dtype]:g} x per-element scale"
    raise AssertionError(
        f"{what} ({dtype}, rtol={rtol:g}, atol={atol_desc}): {bad.shape[0]} of {expected.numel()} "
        f"elements differ; first mismatches:\n" + "\n".join(lines)
    )


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
