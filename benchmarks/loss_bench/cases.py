"""What the loss benchmark runs: the cases, built from the registered losses.

A case is one (loss, configuration, mode, dtype, lengths or not, B x T x D).
The losses are spoofloss.registry.LOSSES: a loss registered there gets rows in
the default set (cosine losses, the ones the targets name) and in --full
without editing the harness; so does each registered variant that changes the
number of centres, the cost the kernels scale with (e.g. 64 centres), at the
middle target size.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import torch

from spoofloss.registry import LOSSES

MODES = ("forward", "train", "score")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}

SWEEP_BATCH = (1, 8, 32, 128, 512)
SWEEP_FRAMES = (1, 50, 200, 800)
SWEEP_DIM = (64, 128, 256)
SWEEP_DTYPES = ("float32", "bfloat16")

# The sizes the performance targets name (report.py); (64, 400, 256) is not on the sweep grid.
TARGET_SIZES = ((8, 50, 64), (32, 200, 128), (64, 400, 256))
# The size at which a configuration with more centres is compared with the default (report.py).
CENTRES_SIZE = (32, 200, 128)
# On a GPU, sizes whose float32 emb is at least 64 MiB, where the bandwidth targets apply.
GPU_LARGE_SIZES = ((128, 800, 256), (512, 800, 256))


@dataclass(frozen=True)
class Case:
    loss: str  # its name in spoofloss.registry.LOSSES
    variant: Optional[str]  # a registered variant, None for the default configuration
    mode: str
    dtype: str
    lengths: bool  # always False for a loss on logits
    batch: int
    frames: int
    dim: int  # 1 for a loss on logits

    @property
    def family(self) -> str:
        return LOSSES[self.loss].family

    @property
    def elements(self) -> int:
        """B*T*D: the x axis of the plot (B*T logits for a loss on logits)."""
        return self.batch * self.frames * self.dim

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=DTYPES[self.dtype]).element_size()

    @property
    def emb_bytes(self) -> int:
        return self.elements * self.element_size

    def configuration(self) -> str:
        """The loss and its variant: "am_softmax" or "am_softmax[5-classes]"."""
        return self.loss if self.variant is None else f"{self.loss}[{self.variant}]"

    def label(self) -> str:
        logits = self.family == "logits"
        size = f"B={self.batch} T={self.frames}" + ("" if logits else f" D={self.dim}")
        extra = "" if logits else (" lengths" if self.lengths else " no-lengths")
        return f"{self.configuration()} {self.mode} {size} {self.dtype}{extra}"


def build(loss: str, variant: Optional[str], dim: int):
    """(fused module, reference module) of a configuration with the same parameter values."""
    return LOSSES[loss].build(variant, enc_dim=dim)


def centre_count(loss: str, variant: Optional[str]) -> int:
    """How many centres a configuration has (0 for a loss on logits)."""
    fused, _ = build(loss, variant, 4)
    return getattr(fused, fused.centers_name).shape[0] if LOSSES[loss].family == "cosine" else 0


def has_score_step(loss: str, variant: Optional[str] = None) -> bool:
    """Whether the configuration's score computes anything (BinaryLoss.score on
    one logit returns pred itself; on two it takes their difference)."""
    if LOSSES[loss].family == "cosine":
        return True
    fused, _ = build(loss, variant, 4)
    pred = torch.zeros(2, logits_per_utterance(fused))
    return fused.score(pred) is not pred


def logits_per_utterance(module: torch.nn.Module) -> int:
    """How many logits a loss on logits reads per utterance (its num_logits; 1 when it has none)."""
    return int(getattr(module, "num_logits", 1))


def centre_variants(loss: str) -> list[str]:
    """The registered variants of ``loss`` whose number of centres differs from its default's."""
    if LOSSES[loss].family != "cosine":
        return []
    default = centre_count(loss, None)
    return [v for v in LOSSES[loss].variants if centre_count(loss, v) != default]


def expand_cases(configurations, modes, dtypes, lengths_options, sizes) -> list[Case]:
    """Every valid combination, once each (a loss on logits: no lengths, no D, no
    score mode when its score is its input)."""
    cases = set()
    for (loss, variant), mode, dtype, with_lengths, (batch, frames, dim) in itertools.product(
        configurations, modes, dtypes, lengths_options, sizes
    ):
        if LOSSES[loss].family == "logits":
            if mode == "score" and not has_score_step(loss, variant):
                continue
            with_lengths, dim = False, 1
        cases.add(Case(loss, variant, mode, dtype, with_lengths, batch, frames, dim))
    order = list(LOSSES)
    return sorted(cases, key=lambda c: (order.index(c.loss), c.variant or "", MODES.index(c.mode), c.dtype,
                                        not c.lengths, c.elements, c.batch, c.frames, c.dim))


def select_cases(args, device: torch.device) -> list[Case]:
    """The default set, or --full, narrowed or widened by the selection flags (cli.py)."""
    lengths_options = {"yes": (True,), "no": (False,), "both": (True, False)}
    sweep = args.full or any(v is not None for v in (args.batch, args.frames, args.dim))
    if sweep:
        sizes = list(itertools.product(args.batch or SWEEP_BATCH, args.frames or SWEEP_FRAMES, args.dim or SWEEP_DIM))
    else:
        sizes = list(TARGET_SIZES) + (list(GPU_LARGE_SIZES) if device.type == "cuda" else [])
    if args.full:
        defaults = dict(loss=list(LOSSES), mode=MODES, dtype=SWEEP_DTYPES, lengths="both")
    else:  # the targets: float32 cosine losses; train on the CPU, train and score on a GPU
        defaults = dict(loss=[n for n, s in LOSSES.items() if s.family == "cosine"],
                        mode=("train", "score") if device.type == "cuda" else ("train",),
                        dtype=("float32",), lengths="yes")
    losses = args.loss or defaults["loss"]
    select = dict(modes=args.mode or defaults["mode"], dtypes=args.dtype or defaults["dtype"],
                  lengths_options=lengths_options[args.lengths or defaults["lengths"]])
    cases = expand_cases([(loss, None) for loss in losses], sizes=sizes, **select)
    # the configurations with other numbers of centres: every size of a sweep, else the one the target names
    if args.variant is None:
        variants = [(loss, v) for loss in losses for v in centre_variants(loss)]
        variant_sizes = sizes if sweep else [CENTRES_SIZE]
    elif "none" in args.variant:
        variants, variant_sizes = [], sizes
    else:
        variants = [(loss, v) for loss in losses for v in LOSSES[loss].variants
                    if "all" in args.variant or v in args.variant]
        variant_sizes = sizes
    cases += expand_cases(variants, sizes=variant_sizes, **select)
    return sorted(set(cases), key=cases.index)
