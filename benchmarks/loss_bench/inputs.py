"""Each case's inputs and modules, and the bytes its step cannot avoid moving.

Inputs are drawn on the device from the case's seed. Copies are cycled so that
the inputs of a small case are not cache-hot across repetitions (copies until
they span twice the last-level cache, at most MAX_INPUT_COPIES). Lengths, when
used, are drawn uniformly from [ceil(T/2), T] with one utterance at T (a
bucketed, padded batch); labels are int64 class indices with every class
present where the batch allows. A loss on logits gets one logit per
(utterance, frame), pred [B, T] (T = 1 is ESPnet's per-utterance [B, 1]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from spoofloss.registry import LOSSES

from .cases import DTYPES, Case, build, logits_per_utterance

LABEL_DTYPE = torch.int64
LENGTHS_DTYPE = torch.int64
MAX_INPUT_COPIES = 256


@dataclass
class Inputs:
    x: torch.Tensor  # emb [B, T, D] (cosine) or pred [B, T] (logits)
    label: torch.Tensor
    lengths: Optional[torch.Tensor]
    extra: dict = field(default_factory=dict)  # further forward arguments (spec.make_inputs)

    @property
    def nbytes(self) -> int:
        tensors = [self.x, self.label, self.lengths, *self.extra.values()]
        return sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))


def make_modules(case: Case, device: torch.device):
    """(fused, reference) modules with the same parameter values, float32 parameters."""
    fused, ref = build(case.loss, case.variant, case.dim)
    return fused.to(device), ref.to(device)


def input_copies(case: Case, module: torch.nn.Module, device: torch.device, cache_bytes: int,
                 seed: int) -> list[Inputs]:
    """Copies of one case's inputs: distinct x values and memory, the same labels, lengths and extras."""
    spec = LOSSES[case.loss]
    gen = torch.Generator(device=device).manual_seed(seed)
    logits = case.family == "logits"
    shape = (case.batch, case.frames) if logits else (case.batch, case.frames, case.dim)
    label_shape = shape if logits else (case.batch,)
    if logits and logits_per_utterance(module) == 2:
        # two logits per (utterance, frame): pred [B * T, 2], one label each
        label_shape = (case.batch * case.frames,)
        shape = (*label_shape, 2)
    classes = spec.label_classes(module)
    label = torch.randint(0, classes, label_shape, generator=gen, device=device)
    present = min(label.numel(), classes)  # every class present wherever there are enough labels
    label.view(-1)[:present] = torch.arange(present, device=device)
    label = label.to(LABEL_DTYPE)
    lengths = None
    if case.lengths:
        low = math.ceil(case.frames / 2)
        lengths = torch.randint(low, case.frames + 1, (case.batch,), generator=gen, device=device)
        lengths[0] = case.frames
        lengths = lengths.to(LENGTHS_DTYPE)
    cpu_gen = torch.Generator().manual_seed(seed)
    extra = spec.make_inputs(module, case.batch, cpu_gen) if spec.make_inputs else {}
    extra = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in extra.items()}
    template = Inputs(torch.empty(0), label, lengths, extra)
    per_copy = case.emb_bytes + template.nbytes
    count = max(1, min(MAX_INPUT_COPIES, math.ceil(2 * cache_bytes / per_copy)))
    wants_grad = case.mode != "score"
    copies = []
    for _ in range(count):
        x = torch.randn(shape, generator=gen, device=device).to(DTYPES[case.dtype])
        copies.append(Inputs(x.requires_grad_(wants_grad), label.clone(),
                             None if lengths is None else lengths.clone(),
                             {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in extra.items()}))
    return copies


def floor_bytes(case: Case, inputs: Inputs, module: torch.nn.Module) -> int:
    """The bytes the step cannot avoid moving.

    Cosine losses: emb's valid frames read once; the lengths, the centres (the
    parameters) and further inputs; in score mode a float32 score out; else the
    label and a float32 loss out, and in train emb's gradient written once
    (padded frames included) and the centres' gradient. Logit losses: pred and
    label in, a float32 loss out, in train pred's gradient."""
    params = sum(p.nbytes for p in module.parameters())
    extra = sum(v.nbytes for v in inputs.extra.values() if isinstance(v, torch.Tensor))
    if case.family == "logits":
        moved = inputs.x.nbytes + inputs.label.nbytes + extra + params + 4
        return moved + (inputs.x.nbytes + params if case.mode == "train" else 0)
    frames = int(inputs.lengths.sum()) if inputs.lengths is not None else case.batch * case.frames
    moved = frames * case.dim * case.element_size + params + extra
    moved += inputs.lengths.nbytes if inputs.lengths is not None else 0
    if case.mode == "score":
        return moved + case.batch * 4
    moved += inputs.label.nbytes + 4
    if case.mode == "train":
        moved += inputs.x.nbytes + params
    return moved
