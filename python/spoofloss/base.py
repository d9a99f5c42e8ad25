"""The interface every spoofloss loss implements (ESPnet's AbsASVSpoofLoss)."""

import math
import operator
from abc import ABC, abstractmethod
from typing import Optional

import torch

# Reduction names as the ops take them (csrc/scalar_math.h, enum Reduction).
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


class AbsASVSpoofLoss(torch.nn.Module, ABC):
    """Base class of the anti-spoofing losses.

    ``name`` is the key under which a reporter logs the loss; ``weight`` is
    stored, not applied: ESPnet's model multiplies the returned loss by it.
    Subclasses implement ``name``, ``forward`` and ``score``.
    """

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    @property
    @abstractmethod
    def name(self) -> str:
        """The reporter key of this loss."""
        raise NotImplementedError

    @abstractmethod
    def forward(self, *args, **kwargs) -> torch.Tensor:
        """The loss: shape (batch,) with reduction "none", a scalar otherwise."""
        raise NotImplementedError

    @abstractmethod
    def score(self, *args, **kwargs) -> torch.Tensor:
        """Per-utterance countermeasure scores, shape (batch,); higher is more bona fide."""
        raise NotImplementedError


def reduction_code(reduction: str) -> int:
    """The ops' integer code of a reduction name, or a ValueError naming it."""
    try:
        return REDUCTIONS[reduction]
    except (KeyError, TypeError):
        raise ValueError(f"reduction must be one of {sorted(REDUCTIONS)}, got {reduction!r}") from None


def check_tensor(name: str, value, optional: bool = False) -> None:
    """A TypeError naming ``name`` unless ``value`` is a tensor (or None where
    ``optional``). An isinstance test, no host synchronisation: without it a None
    reaches the op and torch says only "tensor does not have a device"."""
    if not isinstance(value, torch.Tensor) and not (optional and value is None):
        kind = "a tensor or None" if optional else "a tensor"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}" + (
            "" if value is None else f" {value!r}"[:80]))


def check_bonafide_label(bonafide_label: int, classes: int = 2) -> int:
    """The bona fide class index, the one check of every module, reference
    module and metric: an integer (a Python or NumPy int) in [0, classes).
    A bool, a float (even 1.0) or a tensor is refused: each reads as a class
    index only by accident, and a tensor would be read on the host."""
    is_integer = hasattr(type(bonafide_label), "__index__") and not isinstance(bonafide_label, (bool, torch.Tensor))
    if not is_integer or not 0 <= operator.index(bonafide_label) < classes:
        allowed = "0 or 1" if classes == 2 else f"a class index in [0, {classes})"
        raise ValueError(f"bonafide_label must be {allowed}, got {bonafide_label!r}")
    return operator.index(bonafide_label)


def check_class_weight(class_weight) -> Optional[tuple]:
    """class_weight as a tuple of two floats (the weights of label 0 and label 1), or None: the
    one check of BinaryLoss and its reference twin. A tensor is read here, once."""
    if class_weight is None:
        return None
    if getattr(class_weight, "is_meta", False):  # a tensor without values to read
        raise ValueError(f"class_weight must hold values (the weights of label 0 and label 1), got a tensor "
                         f"on the meta device of shape {tuple(class_weight.shape)}; pass two numbers")
    if getattr(class_weight, "requires_grad", False):  # read as two numbers: no gradient could reach it
        raise ValueError("class_weight must be two numbers, got a tensor that requires grad; the weights are "
                         "constants of the loss (pass class_weight.detach() or two floats)")
    if hasattr(class_weight, "tolist"):
        class_weight = class_weight.tolist()
    try:
        if any(isinstance(w, bool) for w in class_weight):  # True/False read as 1/0 only by accident
            raise TypeError
        weights = tuple(float(w) for w in class_weight)
    except (TypeError, ValueError):
        raise ValueError(f"class_weight must be two numbers (the weights of label 0 and label 1), "
                         f"got {class_weight!r}") from None
    if len(weights) != 2 or not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(f"class_weight must be two finite numbers >= 0 (the weights of label 0 and label 1), "
                         f"got {class_weight!r}")
    return weights
