"""DET core: trials sorted as the ASVspoof evaluation package sorts them, and the
cumulative counts over them, for one set of trials or for many groups at once.

The package's order (ASVspoof 5 ``calculate_modules.compute_det_curve``,
``compute_Pmiss_Pfa_Pspoof_curves``, ``a_dcf.compute_a_det_curve``): the scores of each class
are concatenated in a fixed class order (bona fide before spoof; target, non-target, spoof)
and sorted with a *stable* sort.  So trials are ordered by score, and among equal scores by
class; trials that agree in both are interchangeable.  Here a *class code* is that rank
(0 comes first), and a sort on ``(score, class code)`` gives the same counts at every
position.

Sort keys: a score becomes an int64 whose order is the float order (its IEEE bits, with
the magnitude bits of negative numbers flipped; -0.0 is folded onto +0.0 first).  Integer
keys sort several times faster than floats in torch.  float32 scores (and narrower,
widened exactly) leave room for the class code in the low bits: one sort.  float64 scores
use every bit, so their keys are laid out class by class and sorted stably.

Segments: per-group results come from the pooled order by one more stable sort, of the
small integer group ids (never a sort per group), when the groups partition the trials
(*condition* grouping).  Counts within a segment are a global cumulative sum minus its
value at the segment's start, exact in float64 up to 2**53 trials.  *Attack* grouping,
where every bona fide trial belongs to every group, works on the pooled order directly
(attack.py).

Memory: O(N) for N sorted trials.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch

# The first DET point sits below the smallest score by this much
# (calculate_modules.compute_det_curve, compute_Pmiss_Pfa_Pspoof_curves) ...
FIRST_THRESHOLD_OFFSET = 0.001
# ... and by this much in the a-DCF curve (a_dcf.compute_a_det_curve).
ADCF_FIRST_THRESHOLD_OFFSET = 1e-8

_MAG32 = 0x7FFFFFFF
_MAG64 = 0x7FFFFFFFFFFFFFFF


def float32_image(scores32: torch.Tensor) -> torch.Tensor:
    """int32 whose signed order is the order of the float32 values (-0.0 == +0.0)."""
    bits = (scores32 + 0.0).view(torch.int32)
    return bits ^ ((bits >> 31) & _MAG32)


def float64_image(scores64: torch.Tensor) -> torch.Tensor:
    """int64 whose signed order is the order of the float64 values (-0.0 == +0.0)."""
    bits = (scores64 + 0.0).view(torch.int64)
    return bits ^ ((bits >> 63) & _MAG64)


def _from_image32(image: torch.Tensor) -> torch.Tensor:
    bits = image.to(torch.int32)
    bits = bits ^ ((bits >> 31) & _MAG32)  # the flip is its own inverse
    return bits.view(torch.float32).to(torch.float64)


def _from_image64(image: torch.Tensor) -> torch.Tensor:
    bits = image ^ ((image >> 63) & _MAG64)
    return bits.view(torch.float64)


class SortedTrials:
    """Trials in the package's order, in one segment or in several (one per group).

    Attributes (L sorted trials, G segments, C classes):
        keys:   int64 [L], the order-preserving image of each score (float32 or float64 image)
        codes:  int64 [L], class code of each trial (0 sorts first among equal scores)
        src:    int64 [L], position of each trial in the input (pooled order only)
        seg:    int64 [L], segment of each trial; None when G == 1
        starts: int64 [G], first position of each segment
        counts: int64 [G, C], trials of each class in each segment
    """

    def __init__(self, keys, codes, float32_keys, n_classes, counts, src=None, seg=None, starts=None):
        self.keys, self.codes, self.src, self.seg = keys, codes, src, seg
        self.float32_keys = float32_keys
        self.n_classes = n_classes
        self.counts = counts
        self.n_seg = counts.shape[0]
        self.starts = starts if starts is not None else torch.zeros(1, dtype=torch.int64, device=codes.device)

    @property
    def device(self):
        return self.codes.device

    def __len__(self):
        return self.codes.numel()

    def scores_at(self, idx: torch.Tensor) -> torch.Tensor:
        """float64 scores of the trials at sorted positions ``idx``."""
        return self.decode(self.keys[idx])

    def scores(self) -> torch.Tensor:
        """float64 scores of every trial, in sorted order."""
        return self.decode(self.keys)

    def decode(self, keys: torch.Tensor) -> torch.Tensor:
        return _from_image32(keys) if self.float32_keys else _from_image64(keys)

    # ---- per-trial views of per-segment quantities ------------------------------------
    def per_trial(self, per_segment: torch.Tensor) -> torch.Tensor:
        """[G] -> [L] (a 0-d tensor that broadcasts when G == 1)."""
        if self.seg is None:
            return per_segment[0]
        return per_segment[self.seg]

    def class_count(self, code: int) -> torch.Tensor:
        """float64 [G]: trials of class ``code`` in each segment."""
        return self.counts[:, code].to(torch.float64)

    def cumulative(self, code: int) -> torch.Tensor:
        """float64 [L]: trials of class ``code`` among the first k of their segment
        (k = 1 .. n, inclusive), exact integers."""
        total = torch.cumsum(self.codes == code, 0, dtype=torch.float64)
        if self.seg is None:
            return total
        before = torch.where(self.starts > 0, total[(self.starts - 1).clamp_min(0)], 0.0)
        return total.sub_(before[self.seg])

    def position(self) -> torch.Tensor:
        """float64 [L]: k, the 1-based position of each trial within its segment."""
        k = torch.arange(1, len(self) + 1, device=self.device, dtype=torch.float64)
        if self.seg is None:
            return k
        return k.sub_(self.starts.to(torch.float64)[self.seg])

    def segment_sum(self, values: torch.Tensor) -> torch.Tensor:
        """float64 [G]: sum of ``values`` [L] over each segment."""
        if self.seg is None:
            return values.sum().reshape(1)
        return torch.zeros(self.n_seg, dtype=torch.float64, device=self.device).index_add_(0, self.seg, values)

    def distinct_scores(self) -> torch.Tensor:
        """int64 [G]: number of distinct scores in each segment."""
        changes = self.keys[1:] != self.keys[:-1]
        if self.seg is None:
            return (changes.sum() + 1).reshape(1)
        changes &= self.seg[1:] == self.seg[:-1]
        per = torch.zeros(self.n_seg, dtype=torch.int64, device=self.device)
        return per.index_add_(0, self.seg[1:], changes.to(torch.int64)).add_(1)

    # ---- first minimum of a curve ----------------------------------------------------
    def first_min(self, values: torch.Tensor, initial: Union[float, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """First minimum per segment of a curve over the DET points k = 0 .. n.

        ``values`` [L] holds the points k >= 1 (the trials in sorted order); ``initial``
        the point k = 0 (a float or [G]).  As ``np.argmin`` (and the package's loops with
        a strict ``<``), the earliest point wins among equal values.

        Returns ``(position [G], value [G])``; position is the sorted index of the point's
        trial, or -1 for the point k = 0.
        """
        if self.seg is None:
            idx = torch.argmin(values)  # first minimal value
            best = values[idx]
            take_initial = best >= initial
            pos = torch.where(take_initial, -1, idx).reshape(1)
            return pos, torch.where(take_initial, initial, best).reshape(1).to(torch.float64)
        first, seg_min = segment_first_min(values, self.seg, self.n_seg)
        take_initial = seg_min >= initial
        pos = torch.where(take_initial, -1, first)
        return pos, torch.where(take_initial, initial, seg_min)

    def take(self, values: torch.Tensor, pos: torch.Tensor, initial: Union[float, torch.Tensor]) -> torch.Tensor:
        """``values`` at the positions of :meth:`first_min` (``initial`` where -1)."""
        got = values[pos.clamp(0, max(len(self) - 1, 0))]
        return torch.where(pos < 0, initial, got)

    def thresholds(self, pos: torch.Tensor, first_offset: float) -> torch.Tensor:
        """float64 [G]: the score at each position; below the segment's smallest score by
        ``first_offset`` at the point k = 0."""
        at = self.scores_at(torch.where(pos < 0, self.starts, pos).clamp(0, max(len(self) - 1, 0)))
        return torch.where(pos < 0, at - first_offset, at)


def sort_trials(scores: torch.Tensor, codes: torch.Tensor, n_classes: int) -> SortedTrials:
    """Pooled sort of ``scores`` (float32 or float64, flat) by (score, class code).

    ``codes``: int64 [N] in [0, n_classes).  The permutation is kept in ``src``.
    """
    device = scores.device
    if scores.dtype == torch.float32:
        # packed key: image * 4 + code (n_classes <= 4); the low bits decide among equal scores
        packed = float32_image(scores).to(torch.int64)
        packed.mul_(4).add_(codes)
        packed, src = torch.sort(packed)
        keys = packed >> 2
        sorted_codes = packed & 3
        float32_keys = True
    else:
        image = float64_image(scores.to(torch.float64))
        # class by class, then a stable sort: equal scores keep the class order
        layout = torch.cat([torch.nonzero(codes == c).reshape(-1) for c in range(n_classes)])
        keys, order = torch.sort(image[layout], stable=True)
        src = layout[order]
        sorted_codes = codes[src]
        float32_keys = False
    counts = torch.bincount(sorted_codes, minlength=n_classes).reshape(1, n_classes)
    return SortedTrials(keys, sorted_codes, float32_keys, n_classes, counts, src=src)


def group_trials(pooled: SortedTrials, group_of_input: torch.Tensor, n_groups: int) -> SortedTrials:
    """Segments of ``pooled``, one per group, each in the package's order.

    ``group_of_input``: int64 [N] dense group id (0 .. n_groups - 1) of each input trial;
    the groups partition the trials.
    """
    seg, order = torch.sort(group_of_input[pooled.src], stable=True)  # stable: each segment keeps the pooled order
    keys = pooled.keys[order]
    codes = pooled.codes[order]
    c = pooled.n_classes
    counts = torch.bincount(seg * c + codes, minlength=n_groups * c).reshape(n_groups, c)
    sizes = counts.sum(1)
    starts = torch.cumsum(sizes, 0) - sizes
    return SortedTrials(keys, codes, pooled.float32_keys, c, counts, seg=seg, starts=starts)


def segment_first_min(values: torch.Tensor, seg: torch.Tensor, n_seg: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """First minimum of ``values`` [L] in each segment (``seg`` [L], ids 0 .. n_seg - 1; the
    elements of a segment need not be contiguous, their order is the array order).

    Returns ``(index [n_seg], value [n_seg])``: the array index of the earliest minimal
    element (L for an empty segment) and the minimum (inf for an empty segment).
    """
    n = values.numel()
    seg_min = torch.full((n_seg,), float("inf"), dtype=values.dtype, device=values.device)
    seg_min.scatter_reduce_(0, seg, values, "amin")
    index = torch.arange(n, device=values.device)
    candidates = torch.where(values == seg_min[seg], index, n)
    first = torch.full((n_seg,), n, dtype=torch.int64, device=values.device)
    first.scatter_reduce_(0, seg, candidates, "amin")
    return first, seg_min


def det_rates(st: SortedTrials) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two-class DET curve at k = 1 .. n of each segment (the point k = 0 is (0, 1)):

        miss(k) = (class-0 trials among the first k) / N0        # bona fide rejected
        fa(k)   = (N1 - (class-1 trials among the first k)) / N1  # spoof accepted

    with the package's arithmetic (calculate_modules.compute_det_curve): the spoof count
    is ``N1 - (k - class-0 count)`` and each rate one IEEE division.
    """
    pos_seen = st.cumulative(0)
    n_pos = st.per_trial(st.class_count(0))
    n_neg = st.per_trial(st.class_count(1))
    fa = st.position().sub_(pos_seen)
    fa = torch.sub(n_neg, fa).div_(n_neg)
    miss = pos_seen.div_(n_pos)
    return miss, fa


def missing_class(st: SortedTrials) -> torch.Tensor:
    """bool [G]: segments lacking a class (their results are NaN)."""
    return (st.counts == 0).any(1)

