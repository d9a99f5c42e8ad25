"""DetectionMetrics: accumulate trials batch by batch on their device, gather across ranks,
and compute every metric (pooled and per group) once."""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from ._inputs import (
    ASV_NONTARGET,
    ASV_SPOOF,
    ASV_TARGET,
    NARROW_FLOATS,
    asv_class_counts,
    check_asv_labels,
    check_bonafide_label,
    first_bad,
    prepare,
    raise_nonfinite,
)
from .attack import AttackTrials
from .det import det_rates, group_trials, sort_trials
from .scalar import (
    act_dcf_by_attack,
    act_dcf_of,
    cllr_by_attack,
    cllr_of,
    dcf_weights,
    eer_by_attack,
    eer_of,
    min_dcf_of,
    sort_cm,
    unsorted_cm,
)
from .tandem import (
    ASVSPOOF5_ASV_ERROR_RATES,
    a_dcf_by_attack,
    a_dcf_of,
    a_dcf_weights,
    asv_codes,
    min_tdcf_of,
    t_eer_of,
    tdcf_weights,
)

# Every per-trial field update() accepts, in the order they travel between ranks.
FIELDS = ("scores", "labels", "groups", "asv_scores", "asv_labels", "sasv_scores")
_SCORE_FIELDS = ("scores", "asv_scores", "sasv_scores")
GROUPINGS = ("attack", "condition")


class DetectionMetrics:
    """Accumulates scores batch by batch on their device and computes the metrics once.

    Track 1 (countermeasure)::

        metric = DetectionMetrics()
        for batch in loader:
            metric.update(loss.score(emb), batch_labels)            # no host sync
        result = metric.compute()                                    # dict of Python floats
        print(f"EER {100 * result['eer']:.2f} %")

    Per attack (or per condition) from the same data, with one more sort for all groups::

        metric = DetectionMetrics(grouping="attack")
        metric.update(scores, labels, groups=attack_ids)             # int64 [B]
        result = metric.compute()       # pooled keys as above + result["groups"][attack_id]

    Track 2 (spoofing-robust ASV), when the trials carry ASV labels (1 target,
    0 non-target, 2 spoof)::

        metric.update(cm_scores, asv_labels=asv_labels, asv_scores=asv_scores, sasv_scores=sasv_scores)

    :meth:`update` only records (detached copies of) the flattened tensors; it checks
    shapes, dtypes and devices (metadata only) and never synchronises with the device.
    Value checks (NaN/Inf, label values, classes present) happen in :meth:`compute`,
    which all-gathers the data of every rank when ``torch.distributed`` is initialised
    (ranks may hold different numbers of trials, or none) and so must be called on every
    rank; all ranks get the same result.

    ``compute()`` returns a dict of Python floats/ints, with the keys of the metrics the
    recorded fields allow:

    * ``scores`` + ``labels`` (or ``asv_labels``): ``eer``, ``eer_threshold``, ``min_dcf``,
      ``min_dcf_threshold``, ``act_dcf`` (meaningful for LLR scores), ``act_dcf_threshold``,
      ``cllr`` (bits, LLR scores), ``n_bonafide``, ``n_spoof``.
    * ``asv_labels``: ``n_target``, ``n_nontarget``, ``n_spoof``;
      with ``sasv_scores``: ``a_dcf``, ``a_dcf_threshold``;
      with ``scores``: ``min_tdcf``, ``min_tdcf_threshold`` (revised t-DCF with the ASV error
      rates ``tdcf_asv_rates``, by default those Track 2 of ASVspoof 5 uses; NaN when the CM
      scores hold fewer than 3 distinct values, which the package refuses);
      with ``scores`` and ``asv_scores``: ``t_eer``, ``t_eer_cm_threshold``,
      ``t_eer_asv_threshold`` (NaN where undefined).
    * ``groups`` given: ``"groups"``, a dict from each group id (int) to a dict of the same
      keys for that group.  Entries are NaN for a group that lacks a class.

    Grouping (``grouping``):
        ``"attack"``: a group id names the attack of each spoof trial; each group is
        judged on all bona fide (target and non-target) trials and the spoof trials of
        its attack, as the per-attack tables of the ASVspoof papers and of the package's
        ``evaluation_full.py``.  The ids of bona fide trials are not read.
        ``"condition"``: the ids partition the trials (codec, channel ...); each group is
        judged on its own bona fide and spoof trials.

    Args:
        bonafide_label: 0 or 1, the label value of bona fide trials.
        p_spoof, c_miss, c_fa: DCF parameters (ASVspoof 5 defaults).
        grouping: "attack" or "condition", see above.
        tdcf_asv_rates: ASV error rates of the min t-DCF (``pfa_asv``, ``pmiss_asv``,
            ``pfa_spoof_asv``).
        a_dcf_cost_model: overrides of :func:`~spoofloss.metrics.a_dcf_cost_model`.
        t_eer_exhaustive: search every point for the t-EER instead of the package's
            coarse-to-fine search (see :func:`~spoofloss.metrics.t_eer`).
        dist_sync: gather across ranks when torch.distributed is initialised.
        process_group: the group to gather over (default: the world).
    """

    def __init__(
        self,
        bonafide_label: int = 1,
        *,
        p_spoof: float = 0.05,
        c_miss: float = 1.0,
        c_fa: float = 10.0,
        grouping: str = "attack",
        tdcf_asv_rates: Optional[Mapping[str, float]] = None,
        a_dcf_cost_model: Optional[Mapping[str, float]] = None,
        t_eer_exhaustive: bool = False,
        dist_sync: bool = True,
        process_group=None,
    ) -> None:
        self.bonafide_label = check_bonafide_label(bonafide_label)
        dcf_weights(p_spoof, c_miss, c_fa)
        self.p_spoof, self.c_miss, self.c_fa = p_spoof, c_miss, c_fa
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
        self.grouping = grouping
        rates = dict(ASVSPOOF5_ASV_ERROR_RATES if tdcf_asv_rates is None else tdcf_asv_rates)
        if set(rates) != set(ASVSPOOF5_ASV_ERROR_RATES):
            raise ValueError(f"tdcf_asv_rates must have the keys {sorted(ASVSPOOF5_ASV_ERROR_RATES)}, "
                             f"got {sorted(rates)}")
        self._tdcf = tdcf_weights("2021", None, rates["pfa_asv"], rates["pmiss_asv"],
                                  1 - rates["pfa_spoof_asv"], rates["pfa_spoof_asv"])
        self._a_dcf = a_dcf_weights(a_dcf_cost_model)
        self.t_eer_exhaustive = bool(t_eer_exhaustive)
        self.dist_sync = dist_sync
        self.process_group = process_group
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated trials."""
        self._data: Dict[str, List[torch.Tensor]] = {}
        self._device: Optional[torch.device] = None
        self._count = 0

    def __len__(self) -> int:
        """Number of trials accumulated on this rank (no sync)."""
        return self._count

    # ---------------------------------------------------------------------------------
    @torch.no_grad()
    def update(
        self,
        scores: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        groups: Optional[torch.Tensor] = None,
        *,
        asv_scores: Optional[torch.Tensor] = None,
        asv_labels: Optional[torch.Tensor] = None,
        sasv_scores: Optional[torch.Tensor] = None,
    ) -> None:
        """Record one batch; every given tensor has one element per trial (any shape).

        ``scores``: CM scores (higher = bona fide); ``labels``: CM labels (0/1, see
        ``bonafide_label``; may be left out when ``asv_labels`` is given: spoof trials are
        then the ASV spoof trials); ``groups``: integer group ids; ``asv_scores`` (higher =
        target), ``asv_labels`` (1 target, 0 non-target, 2 spoof) and ``sasv_scores``
        (one spoofing-robust ASV score).  Every batch must give the same fields.
        No host synchronisation.
        """
        given = {name: t for name, t in zip(FIELDS, (scores, labels, groups, asv_scores, asv_labels, sasv_scores))
                 if t is not None}
        for name, t in given.items():
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
            if t.is_complex():
                raise ValueError(f"{name} must be real, got dtype {t.dtype}")
        self._check_fields(set(given))
        names = list(given)
        first = given[names[0]]
        for name in names[1:]:
            t = given[name]
            if t.numel() != first.numel():
                raise ValueError(
                    f"{names[0]} and {name} must have the same number of elements, got {names[0]} of shape "
                    f"{tuple(first.shape)} and {name} of shape {tuple(t.shape)}"
                )
            if t.device != first.device:
                raise ValueError(f"{names[0]} and {name} must be on the same device, got {first.device} and {t.device}")
        if groups is not None and (groups.is_floating_point() or groups.dtype == torch.bool):
            raise ValueError(f"groups must hold integer group ids, got dtype {groups.dtype}")
        if asv_labels is not None and asv_labels.dtype == torch.bool:
            raise ValueError("asv_labels must hold the codes 1 (target), 0 (non-target), 2 (spoof), got dtype torch.bool")
        if self._device is None:
            self._device = first.device
        elif first.device != self._device:
            raise ValueError(f"{names[0]} are on {first.device} but earlier batches were on {self._device}")
        if not self._data:
            self._data = {name: [] for name in names}
        elif set(names) != set(self._data):
            raise ValueError(
                f"every update must give the same fields: earlier batches gave {sorted(self._data)}, "
                f"this one gives {sorted(names)}"
            )
        # copies (the caller may reuse its buffers).  Scores keep float32 (float16/bfloat16
        # widened exactly), others become float64; labels and ids keep their dtype, so that
        # every value can be validated in compute().
        for name, t in given.items():
            flat = t.detach().reshape(-1)
            if name in _SCORE_FIELDS:
                flat = flat.to(torch.float32 if t.dtype in NARROW_FLOATS else torch.float64, copy=True)
            else:
                flat = flat.clone()
            self._data[name].append(flat)
        self._count += first.numel()

    @staticmethod
    def _check_fields(names) -> None:
        if "asv_labels" in names:
            if "scores" not in names and "sasv_scores" not in names:
                raise ValueError("with asv_labels give scores (CM) and/or sasv_scores; got neither")
            if "asv_scores" in names and "scores" not in names:
                raise ValueError("asv_scores serve the t-EER, which also needs the CM scores: give scores too")
            return
        for name in ("asv_scores", "sasv_scores"):
            if name in names:
                raise ValueError(f"{name} need asv_labels (1 target, 0 non-target, 2 spoof)")
        if "scores" not in names or "labels" not in names:
            raise ValueError(
                "give scores and labels (Track 1), or asv_labels with scores and/or sasv_scores (Track 2); "
                f"got {sorted(names) or 'nothing'}"
            )

    # ---------------------------------------------------------------------------------
    def _local(self) -> Dict[str, torch.Tensor]:
        def join(parts):  # the recorded copies themselves when there is one (compute() never writes to them)
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        out = {}
        for name, parts in self._data.items():
            if name in _SCORE_FIELDS:
                if any(x.dtype == torch.float64 for x in parts):
                    out[name] = join([x.to(torch.float64) for x in parts])
                else:
                    out[name] = join(parts)
                continue
            dtypes = {x.dtype for x in parts}
            if dtypes == {torch.bool}:
                out[name] = join(parts)
            elif any(d.is_floating_point for d in dtypes):
                out[name] = join([x.to(torch.float64) for x in parts])
            else:  # integers (and bools): int64 keeps every value
                out[name] = join([x.to(torch.int64) for x in parts])
        return out

    def gather_all(self) -> Dict[str, torch.Tensor]:
        """Every recorded field as a 1-D tensor, concatenated over ranks (in rank order)
        when distributed; a collective call in that case.  Score fields are float32 when
        every batch (of every rank) was float32 or narrower, else float64; other fields
        keep a common dtype of the batches on one process and are float64 after a gather
        across ranks (every value travels exactly)."""
        local = self._local()
        dist = torch.distributed
        if not (self.dist_sync and dist.is_available() and dist.is_initialized()):
            return local
        group = self.process_group
        world = dist.get_world_size(group)
        if world == 1:
            return local
        backend = str(dist.get_backend(group)).lower()
        device = self._device if self._device is not None else torch.device("cpu")
        if "nccl" in backend and device.type != "cuda":
            comm_device = torch.device("cuda", torch.cuda.current_device())
        elif "gloo" in backend and "nccl" not in backend and device.type != "cpu":
            comm_device = torch.device("cpu")
        else:
            comm_device = device
        n = self._count
        mask = sum(1 << i for i, name in enumerate(FIELDS) if name in local)
        mask64 = sum(1 << i for i, name in enumerate(FIELDS) if name in local and local[name].dtype == torch.float64)
        info = torch.tensor([n, mask, mask64], dtype=torch.int64, device=comm_device)
        infos = [torch.zeros_like(info) for _ in range(world)]
        dist.all_gather(infos, info, group=group)
        infos_l = torch.stack(infos).tolist()
        sizes = [int(x[0]) for x in infos_l]
        masks = {int(x[1]) for x in infos_l if x[0] > 0}
        if len(masks) > 1:
            named = [sorted(f for i, f in enumerate(FIELDS) if m >> i & 1) for m in sorted(masks)]
            raise ValueError(f"ranks recorded different fields: {named}; every rank must give the same ones")
        if not masks:
            return local
        mask = masks.pop()
        any64 = 0
        for x in infos_l:
            any64 |= int(x[2])
        names = [f for i, f in enumerate(FIELDS) if mask >> i & 1]
        longest = max(sizes)
        # one float64 [F, longest] message: float32 scores, 0/1/2 labels and group ids below
        # 2**53 are exact in it, and an invalid value stays invalid (compute() names it)
        padded = torch.zeros((len(names), longest), dtype=torch.float64, device=comm_device)
        for row, name in enumerate(names):
            if name in local:
                padded[row, :n] = local[name].to(torch.float64)
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded, group=group)
        full = torch.cat([p[:, :m] for p, m in zip(parts, sizes)], dim=1).to(device)
        out = {}
        for row, name in enumerate(names):
            is64 = any64 >> FIELDS.index(name) & 1
            out[name] = full[row].to(torch.float32) if name in _SCORE_FIELDS and not is64 else full[row]
        return out

    def gather(self) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """``(scores, labels)`` of :meth:`gather_all` (None for a field not recorded)."""
        fields = self.gather_all()
        return fields.get("scores"), fields.get("labels")

    # ---------------------------------------------------------------------------------
    def compute(self) -> Dict[str, object]:
        """The metrics over everything accumulated (on all ranks); see the class docstring."""
        fields = self.gather_all()
        if not fields or next(iter(fields.values())).numel() == 0:
            raise ValueError("DetectionMetrics.compute() called before any update() (0 trials)")
        return _evaluate(self, fields)


def _dense_groups(groups: torch.Tensor, member: torch.Tensor) -> Tuple[torch.Tensor, List[int]]:
    """Dense ids (0 .. G-1) of the groups among the ``member`` trials (other trials get
    one of them), and the ids' values."""
    if groups.is_floating_point():  # after a gather across ranks
        bad = groups != torch.round(groups)
        if bool(bad.any().item()):
            idx, val = first_bad(groups, bad)
            raise ValueError(f"groups must hold integer ids, found groups[{idx}] = {val}")
        groups = groups.to(torch.int64)
    if not bool(member.any()):
        return torch.zeros_like(groups), []
    # trials that are not members take some member's id (theirs is never read)
    ids = torch.where(member, groups, groups[torch.argmax(member.to(torch.uint8))])
    low, high = torch.stack(torch.aminmax(ids)).tolist()
    if high - low <= 4 * ids.numel() + 1024:
        # ids in a short range (attack or codec numbers): a table instead of a sort
        ids -= low
        present = torch.zeros(high - low + 1, dtype=torch.bool, device=groups.device)
        present[ids] = True
        dense_of = torch.cumsum(present, 0).sub_(1)
        return dense_of[ids], (torch.nonzero(present).reshape(-1) + low).tolist()
    values, dense = torch.unique(groups[member], return_inverse=True)
    out = torch.zeros_like(groups)
    out[member] = dense
    return out, values.tolist()


def _evaluate(cfg: DetectionMetrics, f: Dict[str, torch.Tensor]) -> Dict[str, object]:
    """Every metric the fields allow, pooled and per group: one sort per score field for
    the pooled results, and one sort of group ids per score field for all groups."""
    scores, labels, groups = f.get("scores"), f.get("labels"), f.get("groups")
    asv_scores, asv_labels, sasv_scores = f.get("asv_scores"), f.get("asv_labels"), f.get("sasv_scores")

    # ---- values: the checks that need a sync, once each
    lab3 = None
    if asv_labels is not None:
        lab3 = check_asv_labels(asv_labels)
        asv_class_counts(lab3)  # all three classes present
    if scores is not None and labels is not None:
        s, is_bf, _, _ = prepare(scores, labels, cfg.bonafide_label)
        if lab3 is not None:
            mismatch = is_bf != (lab3 != ASV_SPOOF)
            if bool(mismatch.any().item()):
                idx = int(torch.nonzero(mismatch)[0, 0].item())
                raise ValueError(
                    f"labels and asv_labels disagree on trial {idx}: labels[{idx}] = {labels[idx].item()} "
                    f"but asv_labels[{idx}] = {lab3[idx].item()} (a trial is spoof in both or in neither)"
                )
    else:
        s, is_bf = scores, lab3 != ASV_SPOOF
    for name, t in (("scores", s), ("asv_scores", asv_scores), ("sasv_scores", sasv_scores)):
        if t is not None and not bool(torch.isfinite(t).all().item()):
            raise_nonfinite(t, name)

    # ---- the pooled sorts, one per score field
    sorted_pooled = {}
    if s is not None:
        sorted_pooled["cm"] = sort_cm(s, is_bf)
    if sasv_scores is not None:
        sorted_pooled["sasv"] = sort_trials(sasv_scores, asv_codes(lab3), 3)
    if asv_scores is not None:
        sorted_pooled["asv"] = sort_trials(asv_scores, asv_codes(lab3), 3)
    result: Dict[str, object] = {}
    # actDCF and CLLR of the pooled trials sum in the input order, as the functions do
    unordered = (unsorted_cm(is_bf), s.to(torch.float64)) if s is not None else None
    for name, value in _metrics(cfg, sorted_pooled, lab3 is not None, unordered).items():
        result[name] = value[0]
    if lab3 is not None:
        counts = torch.bincount(lab3, minlength=3).tolist()
        result.update(n_target=counts[ASV_TARGET], n_nontarget=counts[ASV_NONTARGET])
    if groups is None:
        return result

    # ---- groups: attack groups read the pooled orders (attack.py); conditions regroup
    # them by one stable sort of the group ids each
    attack = cfg.grouping == "attack"
    dense, names = _dense_groups(groups, ~is_bf if attack else torch.ones_like(is_bf))
    regroup = AttackTrials if attack else group_trials
    sorted_groups = {key: regroup(st, dense, len(names)) for key, st in sorted_pooled.items()}
    per_group = _metrics(cfg, sorted_groups, lab3 is not None)
    lacking = torch.zeros(len(names), dtype=torch.bool)
    for st in sorted_groups.values():
        lacking |= (st.counts == 0).any(1).cpu()
    if lab3 is not None:
        if attack:  # every group holds all targets and non-targets
            n_shared = torch.bincount(lab3, minlength=3)
            n_tar = n_shared[ASV_TARGET].repeat(len(names))
            n_non = n_shared[ASV_NONTARGET].repeat(len(names))
        else:
            tri = torch.bincount(dense * 3 + lab3, minlength=3 * len(names)).reshape(len(names), 3)
            n_tar, n_non = tri[:, ASV_TARGET], tri[:, ASV_NONTARGET]
            lacking |= ((n_tar == 0) | (n_non == 0)).cpu()
        per_group["n_target"], per_group["n_nontarget"] = n_tar.tolist(), n_non.tolist()
    result["groups"] = {
        gname: {k: (col[g] if k.startswith("n_") or not lacking[g] else math.nan) for k, col in per_group.items()}
        for g, gname in enumerate(names)
    }
    return result


def _metrics(cfg: DetectionMetrics, sorted_trials, track2: bool, unordered=None) -> Dict[str, list]:
    """name -> list of one value per segment, for the sorted trials of each score field
    ("cm": two-class, "sasv" and "asv": three-class, over the same trials and segments).
    ``unordered``: (trials, float64 scores) in input order for actDCF and CLLR."""
    out: Dict[str, torch.Tensor] = {}
    st = sorted_trials.get("cm")
    if st is not None:
        # attack groups: the few DET points that can be a metric's first minimum
        # (attack.py); otherwise every point
        if isinstance(st, AttackTrials):
            out["eer"], out["eer_threshold"] = eer_by_attack(st)
            points = st.spoof_points()
            miss, fa = det_rates(points)
        else:
            points = st
            miss, fa = det_rates(points)
            out["eer"], out["eer_threshold"] = eer_of(points, miss, fa)
        out["min_dcf"], out["min_dcf_threshold"] = min_dcf_of(points, miss, fa, cfg.p_spoof, cfg.c_miss, cfg.c_fa)
        if track2:
            value, thr, distinct = min_tdcf_of(points, miss, fa, cfg._tdcf)
            hard = distinct < 3  # fewer than 3 distinct CM scores: the package refuses them
            out["min_tdcf"] = torch.where(hard, math.nan, value)
            out["min_tdcf_threshold"] = torch.where(hard, math.nan, thr)
        del points, miss, fa
        if isinstance(st, AttackTrials):
            out["act_dcf"], act_thr = act_dcf_by_attack(st, cfg.p_spoof, cfg.c_miss, cfg.c_fa)
            out["cllr"] = cllr_by_attack(st)
        else:
            plain, scores64 = unordered if unordered is not None else (st, None)
            out["act_dcf"], act_thr = act_dcf_of(plain, cfg.p_spoof, cfg.c_miss, cfg.c_fa, scores64)
            out["cllr"] = cllr_of(plain, scores64)
        out["act_dcf_threshold"] = torch.full((st.n_seg,), act_thr, dtype=torch.float64)
        out["n_bonafide"], out["n_spoof"] = st.counts[:, 0], st.counts[:, 1]
    st = sorted_trials.get("sasv")
    if st is not None:
        a_dcf_fn = a_dcf_by_attack if isinstance(st, AttackTrials) else a_dcf_of
        out["a_dcf"], out["a_dcf_threshold"] = a_dcf_fn(st, cfg._a_dcf)
        out["n_spoof"] = st.counts[:, 2]
    lists = {name: v.tolist() for name, v in out.items()}  # one read-back per tensor, none per group
    if "asv" in sorted_trials:
        found = t_eer_of(sorted_trials["cm"], sorted_trials["asv"], cfg.t_eer_exhaustive)
        for k, name in enumerate(("t_eer", "t_eer_cm_threshold", "t_eer_asv_threshold")):
            lists[name] = [math.nan if r is None else r[k] for r in found]
    return lists
