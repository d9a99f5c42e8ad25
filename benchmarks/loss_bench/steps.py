"""The steps the providers time, and the compile wrapper.

Every provider runs the same step function on (module, x, label, lengths,
extra); ``compile`` runs it through torch.compile. Modules are arguments, not
closures, so one compiled step can serve many modules in --compile-shapes
dynamic.

* forward: the loss's forward with x requiring grad, as in a training step,
  graph dropped;
* train: forward + ``loss.backward()`` (the caller resets x's and the
  parameters' gradients to None before every step, as
  zero_grad(set_to_none=True) leaves them);
* score: module.score under torch.no_grad, as at inference;
* the autograd floor (train only): ``(x.sum() + sum of the parameters).backward()``
  on the same leaves: it reads x, writes its gradient and pays autograd's
  fixed cost, so no loss written as a PyTorch op can beat it by much.

``compile`` is torch.compile of the whole step function that eager runs, the
``.backward()`` call included: dynamo breaks the graph there, so the forward
and the backward each run as one inductor-compiled graph, which is as much as
compile can fuse. Shapes are static by default, so every case gets kernels
specialised to its shape, compile at its strongest; ``--compile-shapes
dynamic`` gives the variable-length-training view, one graph reused across B
and T.
"""

from __future__ import annotations

from typing import Optional

import torch

from .cases import Case


def cosine_forward_step(module, x, label, lengths, extra):
    return module(label, x, lengths, **extra)


def cosine_train_step(module, x, label, lengths, extra):
    loss = module(label, x, lengths, **extra)
    loss.backward()
    return loss.detach()


def cosine_score_step(module, x, label, lengths, extra):
    with torch.no_grad():
        return module.score(x, lengths)


def logits_forward_step(module, x, label, lengths, extra):
    return module(x, label, **extra)


def logits_train_step(module, x, label, lengths, extra):
    loss = module(x, label, **extra)
    loss.backward()
    return loss.detach()


def logits_score_step(module, x, label, lengths, extra):
    with torch.no_grad():
        return module.score(x)


def autograd_floor_step(module, x, label, lengths, extra):
    """Read x, write its gradient (and the parameters'), through autograd: the floor of train."""
    total = x.sum()
    for param in module.parameters():
        total = total + param.sum()
    total.backward()


STEPS = {
    ("cosine", "forward"): cosine_forward_step, ("cosine", "train"): cosine_train_step,
    ("cosine", "score"): cosine_score_step,
    ("logits", "forward"): logits_forward_step, ("logits", "train"): logits_train_step,
    ("logits", "score"): logits_score_step,
}


def step_of(case: Case):
    return STEPS[case.family, case.mode]


class Compiler:
    """torch.compile'd step functions: a fresh one per case (static shapes), or one per
    step function reused across cases (dynamic shapes)."""

    def __init__(self, shapes: str, mode: Optional[str]):
        self.shapes, self.mode = shapes, mode
        self.compiled = {}
        if shapes == "dynamic":  # one graph per (loss, dtype, lengths, D, 0/1 sizes): more than 8
            torch._dynamo.config.recompile_limit = 512
            torch._dynamo.config.accumulated_recompile_limit = 4096

    def step(self, case: Case):
        fn = step_of(case)
        if self.shapes == "static":
            torch._dynamo.reset()  # a clean slate: no earlier shape's graphs, no recompile limit
            return torch.compile(fn, dynamic=False, mode=self.mode)
        if fn not in self.compiled:
            self.compiled[fn] = torch.compile(fn, dynamic=True, mode=self.mode)
        return self.compiled[fn]
