"""Every kernel of spoofloss, a few calls each: the program that
scripts/gpu_check.sh runs under compute-sanitizer on a GPU.

compute-sanitizer makes each launch 10 to 100 times slower, too slow for the
parity suite, so this runs each registered loss and variant (the registry, no
loss named here) on a handful of inputs chosen to reach every kernel with every
dtype and every path inside it:

* emb / pred of each floating dtype (centres float32, or the emb's own dtype);
* emb [B, D]; emb [B, T, D] with lengths, contiguous and a strided view
  ("dslice"); a feature size off the 16-byte vector path for every dtype
  (D = 5) and sizes on it;
* one long input per loss that the pooling splits into chunks over the
  multiprocessors (the binary loss: many blocks for the finishing reduction);
* reductions none and mean; forward, backward with a random upstream gradient,
  score, and (cosine losses) forward_and_score with both outputs' gradients.

Each output and gradient must be finite: the values are the parity tests'
business. tests/test_emulation.py runs these cases on the emulated device and
checks with its kernel coverage that they launch every kernel with every dtype,
so a kernel added later without a case here fails there, not silently on a GPU.

    cd tests && python -m helpers.every_kernel [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from .inputs import random_upstream
from .losses import LOSSES, build, logits_per_utterance, make_call

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
# (input dtype, centre dtype): each input dtype once, half precision with float32
# centres as autocast leaves them, bfloat16 with its own
DTYPES = [(F32, F32), (F64, F64), (F16, F32), (BF16, BF16)]


@dataclass(frozen=True)
class Case:
    loss: str
    variant: Optional[str]
    dtype: torch.dtype
    centre_dtype: torch.dtype
    batch: int
    frames: Optional[int]  # None: emb [B, D] / pred [B]
    dim: int  # the feature size (cosine losses)
    layout: str = "contiguous"
    lengths: Optional[str] = "int64"
    reduction: str = "mean"

    def __str__(self) -> str:
        shape = (self.batch,) if self.frames is None else (self.batch, self.frames)
        if LOSSES[self.loss].family == "cosine":  # emb; a logit loss's pred has no feature axis
            shape += (self.dim,)
        return (f"{self.loss}{'' if self.variant is None else '-' + self.variant} {str(self.dtype)[6:]} "
                f"{'x'.join(map(str, shape))} {self.layout} lengths={self.lengths} {self.reduction}")


def cases() -> Iterator[Case]:
    for loss, spec in LOSSES.items():
        for variant in [None, *spec.variants]:
            for dtype, centre_dtype in DTYPES:
                common = dict(loss=loss, variant=variant, dtype=dtype, centre_dtype=centre_dtype)
                if spec.family == "logits":
                    yield Case(**common, batch=6, frames=None, dim=0, lengths=None, reduction="none")
                    yield Case(**common, batch=5, frames=9, dim=0, lengths=None)
                    continue
                yield Case(**common, batch=5, frames=None, dim=5, lengths=None, reduction="none")
                yield Case(**common, batch=4, frames=37, dim=128)
                yield Case(**common, batch=3, frames=23, dim=48, layout="dslice", lengths="int32", reduction="none")
            # long inputs, once per configuration (float32)
            common = dict(loss=loss, variant=variant, dtype=F32, centre_dtype=F32)
            if spec.family == "logits" and logits_per_utterance(loss, variant) == 1:
                yield Case(**common, batch=4, frames=6000, dim=0, lengths=None)
            elif spec.family == "logits":
                yield Case(**common, batch=12000, frames=None, dim=0, lengths=None)
            else:
                yield Case(**common, batch=2, frames=3000, dim=64)


def _check_finite(what: str, case: Case, *tensors: Optional[torch.Tensor]) -> None:
    for t in tensors:
        if t is not None and not bool(torch.isfinite(t).all()):
            raise AssertionError(f"{case}: {what} is not finite")


def run(case: Case, device: str) -> None:
    """One case: forward, backward, score (and forward_and_score), each checked finite."""
    spec = LOSSES[case.loss]
    fused, _ = build(case.loss, case.variant, enc_dim=case.dim or None, device=device,
                     parameter_dtype=case.centre_dtype, reduction=case.reduction)
    logits = spec.family == "logits"
    # frame-level logits [B, T] where the loss reads one logit per element (with
    # several per utterance, pred is [B, num_logits] whatever frames says)
    frame_level = logits and case.frames is not None and getattr(fused, "num_logits", 1) == 1
    pred_shape = (case.batch, case.frames) if frame_level else None
    call = make_call(fused, case.batch, case.frames, case.dim or None, dtype=case.dtype, device=device,
                     layout=case.layout, lengths=case.lengths, pred_shape=pred_shape)
    params = [p for p in fused.parameters() if p.requires_grad]
    loss = call.forward(fused)
    grads = torch.autograd.grad(loss, [call.x, *params], random_upstream(loss))
    _check_finite("the loss or a gradient", case, loss, *grads)
    with torch.no_grad():
        _check_finite("the score", case, call.score(fused))
    if not logits:
        loss, score = call.forward_and_score(fused)
        grads = torch.autograd.grad((loss, score), [call.x, *params],
                                    (random_upstream(loss), random_upstream(score)))
        _check_finite("forward_and_score or its gradients", case, loss, score, *grads)


def run_all(device: str, verbose: bool = False) -> int:
    count = 0
    for case in cases():
        if verbose:
            print(case, flush=True)
        run(case, device)
        count += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--verbose", action="store_true", help="print each case before it runs")
    args = parser.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    count = run_all(args.device, args.verbose)
    print(f"every_kernel: {count} cases on {args.device}, every output finite, "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
