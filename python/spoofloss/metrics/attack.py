"""Per-attack results from the pooled order, without repeating the bona fide trials.

In attack grouping (the per-attack tables of the ASVspoof papers and of the package's
``evaluation_full.py``) group a holds every trial of a *shared* class (bona fide; target
and non-target in the three-class curves) and the spoof trials of attack a.  Restricting
the pooled order (det.py) to those trials gives the package's order for the group: a
stable sort of the group's scores, shared classes first among equal scores.

The DET path of group a.  After the first k trials of the group, b shared trials and s
spoof trials of attack a have been passed (k = b + s); the group's DET points are the
lattice points (b, s) along a monotone path from (0, 0) to (M, S_a) (M shared trials,
S_a spoof trials of attack a).  Cut at its spoof steps, the path is a chain of *runs*:
run s (s = 0 .. S_a) holds the points (b, s) for b = lo(s) .. hi(s), where lo(s) is the
number of shared trials before the s-th spoof trial of a in the pooled order (lo(0) = 0)
and hi(s) = lo(s + 1) (hi(S_a) = M): a spoof trial at pooled position p has p minus the
spoof trials before it as its lo.  There are S + G runs in all (S spoof trials, G
groups).  The point (b, s) of run s stands for the group's trial number b + s: its s-th
spoof trial when b == lo(s) and s >= 1, else its b-th shared trial ((0, 0) is the curve's
first point, k = 0, below every score).

Within a run the spoof rate is constant and the shared rates move monotonically, so each
metric needs few points per run, or per group (``miss = b / M`` rises strictly with b):

* minDCF, min t-DCF: the cost rises with the miss rate: the run's first point (lo(s), s),
  i.e. the point of each spoof trial, and k = 0 (:class:`SpoofPoints`).
* EER: ``miss - fa`` rises along the whole path (miss up, fa down), so ``|miss - fa|``
  falls, then rises: the first point with ``miss >= fa`` or the one before it, found by
  a binary search over each group's runs and b = ceil(fa M) within the run
  (scalar.eer_by_attack, :func:`first_at_least`).
* a-DCF (three classes): the shared part ``w_miss Pmiss(b) + w_fa Pfa_non(b)`` is not
  monotone; each run's minimum is a range-minimum query (:class:`RangeMin`), and the
  first point attaining the group's minimum is searched in its run only
  (tandem.a_dcf_by_attack).
* actDCF, Cllr: sums over the shared trials (once) and over each group's spoof trials.
* t-EER: the package's search visits few points of each group's curves (a coarse grid and
  a window); :class:`AttackCurve` evaluates a group's curves at given points.

The earliest minimum of a group (np.argmin, the package's strict ``<`` loops) is the
earliest minimum over the points kept, taken in path order (run 0 of a group before the
runs its spoof trials open): every point left out has a kept point of smaller value, or
of equal value before it.  Only the group's own points are visited (never a threshold
taken from another attack's trial), so ties need no rule beyond the package's order.

Cost: O(N) memory and O(N log N) time (the metrics' arrays have one element per spoof
trial or per shared trial), never O(N G).
"""

from __future__ import annotations

from typing import Tuple, Union

import torch

from .det import SortedTrials, _from_image32, _from_image64, segment_first_min


def floor_log2(x: torch.Tensor) -> torch.Tensor:
    """floor(log2(x)) of positive int64 values below 2**53, exactly (frexp: x = m 2**e,
    m in [0.5, 1))."""
    return torch.frexp(x.to(torch.float64))[1].to(torch.int64) - 1


def first_at_least(fa: torch.Tensor, n_bf: float) -> torch.Tensor:
    """int64: for each value of ``fa`` (in [0, 1]), the first b in 0 .. M (M = ``n_bf``)
    with ``b / M >= fa``, b / M rounded as det_rates rounds it (M + 1 where none).

    b = ceil(fa M) is the answer up to the rounding of fa M and of b / M (steps of 1/M,
    far above it); it is then corrected against the rounded rates themselves until
    nothing moves (no step, or one, in practice)."""
    m = int(n_bf)
    b = torch.ceil(fa * n_bf).to(torch.int64).clamp_(0, m + 1)
    while True:  # move left while the previous rate still reaches fa, right while b's does not
        back = (b > 0) & ((b - 1).to(torch.float64).div_(n_bf) >= fa)
        ahead = (b <= m) & (b.to(torch.float64).div_(n_bf) < fa)
        if not bool((back | ahead).any()):
            return b
        b = b - back.to(torch.int64) + ahead.to(torch.int64)


class AttackTrials:
    """The trials of every attack group, on the pooled order.

    Attributes (N pooled trials, M shared, S spoof, G groups, C classes):
        shared_keys:  int64 [M], sort keys of the shared trials in pooled order (ascending)
        shared_codes: int64 [M], their class codes (0 .. C - 2)
        spoof_keys:   int64 [S], sort keys of the spoof trials, group by group, each group
                      in pooled order (ascending)
        spoof_lo:     int64 [S], shared trials before each spoof trial in pooled order
        spoof_seg:    int64 [S], group of each spoof trial
        spoof_rank:   int64 [S], s: its rank within its group (1 .. S_a)
        n_spoof:      int64 [G], S_a
        spoof_starts: int64 [G], first index of each group in the spoof arrays
        counts:       int64 [G, C], trials of each class in each group
    """

    def __init__(self, pooled: SortedTrials, group_of_input: torch.Tensor, n_groups: int):
        device = pooled.device
        self.n_classes = c = pooled.n_classes
        self.float32_keys = pooled.float32_keys
        self.n_seg = n_groups
        is_spoof = pooled.codes == c - 1
        spoof_at = torch.nonzero(is_spoof).reshape(-1)  # pooled positions, ascending
        shared_at = torch.nonzero(~is_spoof).reshape(-1)
        del is_spoof
        # spoof trials group by group; stable: each group keeps the pooled order.  The ids
        # sort as the narrowest integer that holds them (a stable sort of bytes is about
        # twice as fast as one of int64).
        ids = group_of_input[pooled.src[spoof_at]]
        narrow = next(d for d in (torch.uint8, torch.int16, torch.int32, torch.int64)
                      if n_groups - 1 <= torch.iinfo(d).max)
        narrow_seg, order = torch.sort(ids.to(narrow), stable=True)
        self.spoof_seg = narrow_seg.to(torch.int64)
        del ids, narrow_seg
        # shared trials before the spoof trial at pooled position p: p minus the spoof
        # trials before it (read in pooled order, then permuted once each)
        self.spoof_keys = pooled.keys[spoof_at][order]
        self.spoof_lo = spoof_at.sub_(torch.arange(spoof_at.numel(), device=device))[order]
        del spoof_at, order
        self.shared_keys = pooled.keys[shared_at]
        self.shared_codes = pooled.codes[shared_at]
        del shared_at
        self.n_shared = self.shared_keys.numel()
        self.n_spoof = torch.bincount(self.spoof_seg, minlength=n_groups)
        self.spoof_starts = torch.cumsum(self.n_spoof, 0) - self.n_spoof
        n_all = self.spoof_seg.numel()
        self.spoof_rank = torch.arange(1, n_all + 1, device=device) - self.spoof_starts[self.spoof_seg]
        shared_counts = torch.bincount(self.shared_codes, minlength=c - 1)
        self.counts = torch.cat([shared_counts.expand(n_groups, c - 1), self.n_spoof.reshape(-1, 1)], 1)
        self._run_ends = self._scores = None
        self._cumulative = {}

    @property
    def device(self):
        return self.spoof_keys.device

    def decode(self, keys: torch.Tensor) -> torch.Tensor:
        return _from_image32(keys) if self.float32_keys else _from_image64(keys)

    def scores(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """float64 scores of the shared trials [M] and of the spoof trials [S] (in the order
        of the arrays above); decoded once (actDCF and Cllr both read them)."""
        if self._scores is None:
            self._scores = (self.decode(self.shared_keys), self.decode(self.spoof_keys))
        return self._scores

    def class_count(self, code: int) -> torch.Tensor:
        """float64 [G]: trials of class ``code`` in each group."""
        return self.counts[:, code].to(torch.float64)

    def first_keys(self) -> torch.Tensor:
        """int64 [G]: the smallest key of each group (its first trial)."""
        first_spoof = self.spoof_keys[self.spoof_starts.clamp(max=max(self.spoof_keys.numel() - 1, 0))]
        if self.n_shared == 0:
            return first_spoof
        return torch.minimum(first_spoof, self.shared_keys[0])

    def shared_cumulative(self, code: int) -> torch.Tensor:
        """int64 [M + 1]: trials of class ``code`` among the first b shared trials, b = 0 .. M
        (computed once per class: every group's curves read it)."""
        if code not in self._cumulative:
            counts = torch.zeros(self.n_shared + 1, dtype=torch.int64, device=self.device)
            torch.cumsum(self.shared_codes == code, 0, out=counts[1:])
            self._cumulative[code] = counts
        return self._cumulative[code]

    # ---- runs ---------------------------------------------------------------------------
    def run_ends(self) -> torch.Tensor:
        """int64 [S]: hi of the run each spoof trial opens: lo of the next spoof trial of
        its group, or M."""
        if self._run_ends is None:
            lo = self.spoof_lo
            hi = torch.full_like(lo, self.n_shared)
            hi[:-1] = lo[1:]
            hi[self.spoof_starts + self.n_spoof - 1] = self.n_shared
            self._run_ends = hi
        return self._run_ends

    def first_run_end(self) -> torch.Tensor:
        """int64 [G]: hi of run 0 of each group (lo of its first spoof trial)."""
        return self.spoof_lo[self.spoof_starts]

    def key_at(self, b: torch.Tensor, lo: torch.Tensor, spoof: torch.Tensor) -> torch.Tensor:
        """int64: the key of the trial at point (b, s) of a run that starts at ``lo`` and
        that the spoof trial ``spoof`` opens (-1 for run 0): that spoof trial when b == lo,
        else the b-th shared trial.  Undefined at (0, 0)."""
        at_spoof = (b == lo) & (spoof >= 0)
        shared = self.shared_keys[(b - 1).clamp(0, max(self.n_shared - 1, 0))] if self.n_shared else b
        return torch.where(at_spoof, self.spoof_keys[spoof.clamp(min=0)], shared)

    def spoof_points(self) -> "SpoofPoints":
        """The points (lo(s), s) that open the runs s >= 1: with k = 0, the candidates of
        minDCF and min t-DCF."""
        return SpoofPoints(self)

    # ---- min t-DCF ------------------------------------------------------------------------
    def distinct_scores(self) -> torch.Tensor:
        """int64 [G]: number of distinct scores in each group."""
        shared = self.shared_keys
        m = shared.numel()
        n_shared = (shared[1:] != shared[:-1]).sum() + 1 if m else torch.zeros((), dtype=torch.int64,
                                                                                 device=self.device)
        keys, seg = self.spoof_keys, self.spoof_seg
        new = torch.ones_like(keys, dtype=torch.bool)  # a key not seen before in its group
        new[1:] = (keys[1:] != keys[:-1]) | (seg[1:] != seg[:-1])
        if m:
            # a shared trial with the same key sorts just before the spoof trial (shared
            # classes first among equal scores): the last shared trial before it
            lo = self.spoof_lo
            new &= (lo == 0) | (shared[(lo - 1).clamp_(min=0)] != keys)
        extra = torch.zeros(self.n_seg, dtype=torch.int64, device=self.device)
        return extra.index_add_(0, seg, new.to(torch.int64)).add_(n_shared)


class SpoofPoints:
    """The DET point of every spoof trial, (lo, s), in the spoof arrays' order (each group
    in path order), with the point k = 0 of each group in front: the interface of
    :class:`~spoofloss.metrics.det.SortedTrials` that det_rates, min_dcf_of and min_tdcf_of
    use, over these points only."""

    def __init__(self, trials: AttackTrials):
        self.trials = trials
        self.seg = trials.spoof_seg
        self.n_seg = trials.n_seg
        self.counts = trials.counts

    @property
    def device(self):
        return self.seg.device

    def __len__(self):
        return self.seg.numel()

    def class_count(self, code: int) -> torch.Tensor:
        return self.trials.class_count(code)

    def per_trial(self, per_segment: torch.Tensor) -> torch.Tensor:
        return per_segment[self.seg]

    def cumulative(self, code: int) -> torch.Tensor:
        """float64 [S]: shared trials passed (code 0: two-class trials) or spoof trials passed."""
        return (self.trials.spoof_lo if code == 0 else self.trials.spoof_rank).to(torch.float64)

    def position(self) -> torch.Tensor:
        """float64 [S]: k = lo + s."""
        return (self.trials.spoof_lo + self.trials.spoof_rank).to(torch.float64)

    def distinct_scores(self) -> torch.Tensor:
        return self.trials.distinct_scores()

    def first_min(self, values: torch.Tensor, initial: Union[float, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """As SortedTrials.first_min: ``(position [G], value [G])``, position -1 for k = 0
        (valued ``initial``; it comes first, so it wins ties)."""
        first, best = segment_first_min(values, self.seg, self.n_seg)
        take_initial = best >= initial
        return torch.where(take_initial, -1, first), torch.where(take_initial, initial, best)

    def take(self, values: torch.Tensor, pos: torch.Tensor, initial: Union[float, torch.Tensor]) -> torch.Tensor:
        return torch.where(pos < 0, initial, values[pos.clamp(min=0)])

    def thresholds(self, pos: torch.Tensor, first_offset: float) -> torch.Tensor:
        """float64 [G]: the spoof trial's score; below the group's smallest score by
        ``first_offset`` at k = 0."""
        keys = self.trials.spoof_keys[pos.clamp(min=0)]
        at = self.trials.decode(torch.where(pos < 0, self.trials.first_keys(), keys))
        return torch.where(pos < 0, at - first_offset, at)


class RangeMin:
    """Minimum of a float64 array ``values`` [n] over many index ranges at once.

    Two levels, O(n) memory: blocks of ``BLOCK`` elements, with a sparse table of block
    minima (min over 2**j consecutive blocks, j = 0 .. log2(n / BLOCK)) for the whole
    blocks of a range, and minima over 2**k consecutive elements (k = 0 .. log2(BLOCK) - 1)
    for its partial blocks.  A query is a handful of gathers.
    """

    BLOCK = 16
    _LEVELS = 4  # windows of 1 .. 2**(_LEVELS - 1) elements: two of them cover any part of a block

    def __init__(self, values: torch.Tensor):
        b = self.BLOCK
        n = values.numel()
        padded_n = max(-(-n // b) * b, b)
        inf = float("inf")
        padded = torch.full((padded_n,), inf, dtype=values.dtype, device=values.device)
        padded[:n] = values
        levels = [padded]
        for k in range(1, self._LEVELS):  # min over [i, i + 2**k)
            prev, half = levels[-1], 1 << (k - 1)
            nxt = prev.clone()
            torch.minimum(prev[:-half], prev[half:], out=nxt[:-half])
            levels.append(nxt)
        self.small = torch.stack(levels)  # [_LEVELS, padded_n]
        self.values = self.small[0]
        del levels, padded
        block_min = self.values.view(-1, b).amin(1)
        table = [block_min]
        while (1 << len(table)) <= block_min.numel():  # min over [i, i + 2**j) blocks
            prev, half = table[-1], 1 << (len(table) - 1)
            nxt = prev.clone()
            torch.minimum(prev[:-half], prev[half:], out=nxt[:-half])
            table.append(nxt)
        self.blocks = torch.stack(table)  # [J, n_blocks]

    def _within_block(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """min over [lo, hi] where both lie in one block (lo <= hi)."""
        k = floor_log2(hi - lo + 1).clamp_(max=self._LEVELS - 1)  # two windows of 2**k cover [lo, hi]
        flat = self.small.view(-1)
        n = self.values.numel()
        return torch.minimum(flat[k * n + lo], flat[k * n + hi - (1 << k) + 1])

    def _blocks(self, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """min over the blocks first .. last (inf where first > last)."""
        valid = first <= last
        length = torch.where(valid, last - first + 1, 1)
        j = floor_log2(length)
        n_blocks = self.blocks.shape[1]
        flat = self.blocks.view(-1)
        a = flat[j * n_blocks + first.clamp(max=n_blocks - 1)]
        z = flat[j * n_blocks + (first + length - (1 << j)).clamp(max=n_blocks - 1)]
        return torch.where(valid, torch.minimum(a, z), float("inf"))

    def __call__(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """float64: min of values[lo .. hi] (inclusive; lo <= hi) for every pair."""
        b = self.BLOCK
        first_block, last_block = lo // b, hi // b
        head = self._within_block(lo, torch.minimum(hi, first_block * b + (b - 1)))
        tail = self._within_block(torch.maximum(lo, last_block * b), hi)
        return torch.minimum(torch.minimum(head, tail), self._blocks(first_block + 1, last_block - 1))

    def first_at_most(self, lo: torch.Tensor, hi: torch.Tensor, accept) -> torch.Tensor:
        """The first index i in [lo, hi] with ``accept(values[i])`` for every pair, where
        ``accept(x)`` (elementwise, bool) holds for every x at most some bound (a monotone
        test) and holds somewhere in each range.  ``accept`` receives the candidate values
        and the query rows they belong to: ``accept(x, rows)``."""
        b = self.BLOCK
        rows = torch.arange(lo.numel(), device=lo.device)
        offsets = torch.arange(b, device=lo.device)

        def scan(start, stop):
            # first i in [start, stop] (within one block) accepted; stop + 1 where none
            idx = start.reshape(-1, 1) + offsets
            ok = (idx <= stop.reshape(-1, 1)) & accept(self.values[idx.clamp(max=self.values.numel() - 1)],
                                                        rows.reshape(-1, 1).expand(-1, b))
            found = ok.any(1)
            return torch.where(found, start + ok.to(torch.int8).argmax(1), stop + 1), found

        first_block, last_block = lo // b, hi // b
        at, found = scan(lo, torch.minimum(hi, first_block * b + (b - 1)))
        # whole blocks first_block + 1 .. last_block - 1: skip runs of 2**j blocks holding no
        # accepted value (their minimum is not accepted), longest first
        pos, stop = first_block + 1, last_block - 1
        n_blocks = self.blocks.shape[1]
        for j in range(self.blocks.shape[0] - 1, -1, -1):
            end = pos + (1 << j) - 1
            window_min = self.blocks[j][pos.clamp(max=n_blocks - 1)]
            skip = (end <= stop) & ~accept(window_min, rows)
            pos = torch.where(skip, pos + (1 << j), pos)
        in_middle = (pos <= stop) & accept(self.blocks[0][pos.clamp(max=n_blocks - 1)], rows)
        mid_at, _ = scan(pos * b, pos * b + (b - 1))
        tail_at, _ = scan(torch.maximum(lo, last_block * b), hi)
        return torch.where(found, at, torch.where(in_middle, mid_at, tail_at))


class AttackCurve:
    """The DET curves of one group of an :class:`AttackTrials`, at the points asked for:
    the interface of tandem's curves (``n`` points k = 0 .. n - 1, ``columns``,
    ``threshold``).

    Two classes: (miss, fa) as det_rates; three classes: (Pmiss, Pfa_non, Pfa_spoof) as
    tandem.asv_curves, each with its k = 0 point (0, 1) or (0, 1, 1) in front."""

    def __init__(self, trials: AttackTrials, group: int, first_offset: float):
        self.trials, self.first_offset = trials, first_offset
        start, count = int(trials.spoof_starts[group]), int(trials.n_spoof[group])
        self.spoof_slice = slice(start, start + count)
        # 1-based position k of each of the group's spoof trials in the group's order
        self.spoof_k = trials.spoof_lo[self.spoof_slice] + trials.spoof_rank[self.spoof_slice]
        self.n_spoof = float(count)
        self.n = trials.n_shared + count + 1
        self.group = group
        if trials.n_classes == 3:
            self.targets = trials.shared_cumulative(0)  # [M + 1]
            self.n_target, self.n_nontarget = (float(v) for v in trials.counts[0, :2].tolist())

    def _point(self, k: torch.Tensor):
        s = torch.searchsorted(self.spoof_k, k, right=True)
        return k - s, s

    def columns(self, which: slice):
        k = torch.arange(*which.indices(self.n), device=self.trials.device)
        b, s = self._point(k)
        fa_spoof = s.to(torch.float64)
        if self.trials.n_classes == 2:
            miss = b.to(torch.float64).div_(float(self.trials.n_shared))
            return [miss, torch.sub(self.n_spoof, fa_spoof).div_(self.n_spoof)]
        tar = self.targets[b]
        p_miss = tar.to(torch.float64).div_(self.n_target)
        p_fa_non = (b - tar).to(torch.float64).div_(self.n_nontarget).neg_().add_(1.0)
        return [p_miss, p_fa_non, fa_spoof.div_(self.n_spoof).neg_().add_(1.0)]

    def threshold(self, index: int) -> float:
        trials = self.trials
        if index == 0:
            first = trials.first_keys()[self.group]
            return float(trials.decode(first.reshape(1)).item()) - self.first_offset
        k = torch.tensor([index], device=trials.device)
        b, s = self._point(k)
        at_spoof = bool(s.item() > 0) and int(self.spoof_k[int(s.item()) - 1]) == index
        key = trials.spoof_keys[self.spoof_slice][s - 1] if at_spoof else trials.shared_keys[b - 1]
        return float(trials.decode(key).item())
