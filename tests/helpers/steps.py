"""One loss step, fused and float64 reference, with the atol scale of each output.

``step_outputs`` runs nothing itself: it takes the loss and score a test
computed (eagerly, compiled, replayed from a CUDA graph, under autocast) and
differentiates each on its own with respect to the input and every parameter,
so a mixed-up backward cannot hide in their sum. ``expected_step`` recomputes
all of it in float64 with the module's twin from spoofloss.reference, from the
very values the fused code saw (low-precision inputs upcast exactly), and
gives each output the atol scale of helpers.tolerance:

* cosine losses: the scale of an output is what its rounding error is made
  of, d output / d cos. The cosines carry an absolute error of a few ulp of 1
  (their dot-product terms are O(1)), which every output inherits through its
  derivative: the loss or score of an utterance gets sum_k |d out_b / d cos_bk|
  (the margins and scales are in there: s, alpha, 2 s for a misclassified AM
  utterance, 1 for a cosine score), and the gradients get ``natural_scales``
  of d out / d cos. d out / d cos is not written here for any loss: it is the
  autograd gradient of the reference itself with respect to the cosines it
  computes (``cosine_gradient``), so a new loss brings its own.
* logit losses: a loss element gets sum_p |p d loss / d p| over its logits p,
  its change under a relative rounding of the logits, plus the reference's
  own rounding (``logit_loss_scale``);
  a gradient with respect to a logit is a difference of a probability and a
  target, each weighted by the reduction and the upstream gradient, whose size
  without cancellation is the gradient the reference takes at confidently
  wrong logits (``wrong_logit_scales``); both by autograd of the reference.
"""

from __future__ import annotations

from typing import Optional
from unittest import mock

import torch

from spoofloss import reference

from .inputs import cpu, random_upstream
from .losses import LossCall, centres_of
from .tolerance import ATOL_FACTOR, assert_matches, expected_out_dtype


def step_outputs(module, call: LossCall, loss, score, up_loss, up_score) -> dict:
    """{"loss", "score", "d loss / d <input>", "d loss / d <parameter>", "d score / d ..."}:
    the outputs and the gradient of each of loss and score (times its upstream
    gradient) with respect to the input and every parameter requiring grad."""
    wrt = _leaves(module, call)
    out = {"loss": loss, "score": score}
    for what, value, up in (("loss", loss, up_loss), ("score", score, up_score)):
        grads = torch.autograd.grad(value, list(wrt.values()), up, retain_graph=True, allow_unused=True,
                                    materialize_grads=True)
        out.update({f"d {what} / d {name}": g for name, g in zip(wrt, grads)})
    return out


def _leaves(module, call: LossCall) -> dict:
    leaves = {call.input_name: call.x}
    leaves.update((name, p) for name, p in module.named_parameters() if p.requires_grad)
    return leaves


def expected_step(fused, twin, call: LossCall, up_loss, up_score) -> dict:
    """The float64 reference of ``step_outputs``: name -> (expected, atol scale).

    ``twin`` (float64, from helpers.losses.build) first takes the fused
    module's current parameter values, so a test may change them in between."""
    twin.load_state_dict(fused.state_dict())
    ref = call.in_float64()
    up_loss, up_score = cpu(up_loss).double(), cpu(up_score).double()
    with torch.enable_grad():
        loss, score = ref.forward(twin), ref.score(twin)
    got = step_outputs(twin, ref, loss, score, up_loss, up_score)
    if call.family == "cosine":
        scales = _cosine_scales(twin, ref, loss, score, up_loss, up_score)
    else:
        scales = _logit_scales(twin, ref, loss, up_loss, call.x.dtype)
    return {name: (value, scales.get(name)) for name, value in got.items()}


# --------------------------------------------------------------------------- cosine losses
def cosine_gradient(compute, upstream=None, curvature: bool = False):
    """d compute() / d cos [B, C] (times ``upstream``, default ones), where
    ``compute`` is a call into spoofloss.reference (a twin module's forward or
    score, or a reference function) and cos the cosines it computes. With
    ``curvature``: (that gradient g, sum_k |d g_bj / d cos_bk| [B, C]), how far
    g itself moves per unit of rounding error in the cosines.

    The reference computes its cosines with ``spoofloss.reference.cosines``;
    while ``compute`` runs, that function returns its result as a leaf to
    differentiate against (each call its own; their gradients add up), so the
    derivative is the reference's own, whatever the loss."""
    leaves = []
    real = reference.cosines

    def cosines_as_leaf(*args, **kwargs):
        cos = real(*args, **kwargs).detach().requires_grad_()
        leaves.append(cos)
        return cos

    with mock.patch.object(reference, "cosines", cosines_as_leaf), \
            mock.patch.object(reference, "_cosines", cosines_as_leaf), torch.enable_grad():
        out = compute()
    assert leaves, "the reference computed no cosines through spoofloss.reference.cosines"
    upstream = torch.ones_like(out) if upstream is None else upstream.to(out)
    grads = torch.autograd.grad(out, leaves, upstream, allow_unused=True, materialize_grads=True,
                                create_graph=curvature)
    g = sum(grads[1:], grads[0])
    if not curvature:
        return g
    # sum_k |d g_bj / d cos_bk| [B, C], one backward per centre j: an utterance's
    # cosines affect only its own g (the reductions are linear), so the sum over
    # the batch of column j differentiates to row b's entries of the Hessian
    if not g.requires_grad:  # out is linear in the cosines (a cosine score)
        return g, torch.zeros_like(g)
    columns = []
    for j in range(g.shape[1]):
        rows = torch.autograd.grad(g[:, j].sum(), leaves, retain_graph=True, allow_unused=True,
                                   materialize_grads=True)
        columns.append(sum(rows[1:], rows[0]).abs().sum(dim=1))
    return g.detach(), torch.stack(columns, dim=1)


def output_scale(g_cos: torch.Tensor, out: torch.Tensor):
    """atol scale of a per-utterance output [B] (sum_k |g_bk|, per utterance)
    or of a reduced scalar (the sum over the batch) from its d out / d cos."""
    g = g_cos.abs()
    return g.sum(dim=1) if out.dim() == 1 else g.sum().item()


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
    lengths = cpu(lengths)
    pooled = reference.masked_mean(emb64.detach(), lengths)
    centers = centers64.detach()
    inv_x = 1.0 / pooled.norm(dim=-1, keepdim=True).clamp_min(1e-12)   # [B, 1]
    inv_c = 1.0 / centers.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [C, 1]
    # |x^_d| as computed: x_d is a mean over frames, so its rounding error
    # follows the frames' magnitudes (mean |emb_td|), which can far exceed |x_d|
    xh = reference.masked_mean(emb64.detach().abs(), lengths) * inv_x
    ch = (centers * inv_c).abs()
    g = g_cos.abs()
    emb_scale = (g @ ch + g.sum(dim=1, keepdim=True) * xh) * inv_x  # [B, D]
    centre_scale = (g.t() @ xh + g.sum(dim=0)[:, None] * ch) * inv_c  # [C, D]
    if emb64.dim() == 3:
        frames = emb64.shape[1]
        count = torch.full((pooled.shape[0],), float(frames), dtype=torch.float64) if lengths is None \
            else lengths.double()
        emb_scale = (emb_scale / count[:, None])[:, None, :]
    return emb_scale, centre_scale


def _cosine_scales(twin, ref: LossCall, loss, score, up_loss, up_score) -> dict:
    centres_name = next(n for n, p in twin.named_parameters() if p is centres_of(twin))
    emb, centres = ref.x.detach(), centres_of(twin).detach()
    scales = {}
    for what, value, up, compute in (("loss", loss, up_loss, lambda: ref.forward(twin)),
                                     ("score", score, up_score, lambda: ref.score(twin))):
        scales[what] = output_scale(cosine_gradient(compute), value)
        # the gradients' terms are g (d out / d cos) times O(1) factors; rounding
        # of the cosines moves g itself by its curvature, which a loss whose g
        # vanishes at a well-classified utterance but whose curvature does not
        # (P2SGrad's squared error) shows: both make up the scale
        g, g_rounding = cosine_gradient(compute, up, curvature=True)
        emb_scale, centre_scale = natural_scales(g.abs() + g_rounding, emb, centres, ref.lengths)
        scales[f"d {what} / d {ref.input_name}"] = emb_scale
        scales[f"d {what} / d {centres_name}"] = centre_scale
    return scales


# --------------------------------------------------------------------------- logit losses
WRONG_LOGIT = 50.0  # sigmoid(-50) = 2e-22: a probability of the wrong class of 1 to double precision


def wrong_logit_scales(compute, pred64: torch.Tensor, upstream) -> torch.Tensor:
    """|d compute(p) / d p| at logits p that are confidently wrong (each moved
    to -+WRONG_LOGIT against the gradient's sign at zero logits), times |upstream|:
    for a cross-entropy on logits, per element the weight its reduction and
    upstream gradient give it, since there |probability - target| is ~1."""
    zero = torch.zeros_like(pred64, requires_grad=True)
    with torch.enable_grad():
        (at_zero,) = torch.autograd.grad(compute(zero), [zero], upstream.abs())
    wrong = (WRONG_LOGIT * torch.where(at_zero >= 0, 1.0, -1.0)).to(pred64).requires_grad_()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(compute(wrong), [wrong], upstream.abs())
    return grad.abs()


def logit_loss_scale(compute, pred64: torch.Tensor, out: torch.Tensor, dtype: torch.dtype):
    """atol scale of the loss of a logit loss (per element, or for the reduced
    scalar) checked in ``dtype``: the sum, over the logits p the element
    depends on, of

    * |p d out / d p|: its change under a relative error of the logits of the
      size of the arithmetic's rounding; a loss written without cancellation
      has an error of that size, one that subtracts terms of the size of the
      logits has more;
    * the float64 reference's own rounding: torch's BCE with logits subtracts
      terms of size |p|, so it is exact to a few eps64 * |p| only (weighted
      as the reduction weighs p), expressed in atol units of ``dtype``."""
    p = pred64.detach().clone().requires_grad_()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(compute(p).sum(), [p])
    weight = wrong_logit_scales(compute, pred64, torch.ones_like(out, dtype=torch.float64))  # 1, or 1/N in a mean
    rounding = 4 * torch.finfo(torch.float64).eps / ATOL_FACTOR[expected_out_dtype(dtype)]
    per_logit = (p.detach() * grad).abs() + weight * p.detach().abs() * rounding
    if out.dim() == 0:
        return per_logit.sum().item()
    return per_logit.reshape(out.numel(), -1).sum(dim=1).reshape(out.shape)


def _logit_scales(twin, ref: LossCall, loss, up_loss, dtype) -> dict:
    pred = ref.x.detach()
    forward = lambda p: ref.with_input(p).forward(twin)  # noqa: E731
    return {
        "loss": logit_loss_scale(forward, pred, loss, dtype),
        f"d loss / d {ref.input_name}": wrong_logit_scales(forward, pred, up_loss),
    }


def assert_step_matches(got: dict, expected: dict, what: str = "") -> None:
    """Every tensor of ``got`` against its float64 reference, with the
    tolerance of its own dtype (see helpers.tolerance)."""
    assert set(got) == set(expected), f"{what}: {sorted(got)} != {sorted(expected)}"
    for name, (value, scale) in expected.items():
        assert_matches(got[name], value, what=f"{what} {name}".strip(), scale=scale)


def assert_padding_zero(grad_emb, lengths, what):
    """Frames t >= lengths[b] must get exactly zero gradient (NaN fails too)."""
    frames = torch.arange(grad_emb.shape[1], device=grad_emb.device)
    padded = frames.unsqueeze(0) >= lengths.to(grad_emb.device).long().unsqueeze(1)
    values = grad_emb[padded]
    bad = (values != 0).nonzero()
    assert bad.numel() == 0, (
        f"{what}: {bad.shape[0]} padded gradient elements are not exactly 0, e.g. {values[bad[:3, 0]].tolist()}"
    )


def check_step(fused, twin, call: LossCall, what: str = "") -> None:
    """Loss and score of ``fused`` on ``call`` and the gradients of each (random
    upstream gradients), against the twin: every element, with the contract's
    dtypes and shapes, and exactly zero gradient on padded frames."""
    loss, score = call.forward(fused), call.score(fused)
    out_dtype = expected_out_dtype(call.x.dtype)
    assert loss.dtype == out_dtype and loss.device == call.x.device, f"{what} loss {loss.dtype} for {call.x.dtype}"
    assert loss.dim() == (1 if fused.reduction == "none" else 0), f"{what} loss shape {tuple(loss.shape)}"
    if call.family == "cosine":
        assert score.dtype == out_dtype and score.shape == (call.x.shape[0],), f"{what} score {score.dtype}"
    up_loss, up_score = random_upstream(loss), random_upstream(score)
    got = step_outputs(fused, call, loss, score, up_loss, up_score)
    for name, value in got.items():
        if name.startswith("d "):
            leaf = call.x if name.endswith(f"/ d {call.input_name}") else dict(fused.named_parameters())[
                name.rsplit("/ d ", 1)[1]]
            assert value.dtype == leaf.dtype and value.shape == leaf.shape, f"{what} {name}: {value.dtype}"
    assert_step_matches(got, expected_step(fused, twin, call, up_loss, up_score), what=what)
    if call.lengths is not None and call.x.dim() == 3:
        assert_padding_zero(got[f"d loss / d {call.input_name}"], call.lengths, f"{what} d loss / d emb")
        assert_padding_zero(got[f"d score / d {call.input_name}"], call.lengths, f"{what} d score / d emb")
