"""Multi-centre one-class softmax: SAMO's speaker attractors (Ding, Zhang, Duan, ICASSP 2023)."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops
from .base import check_tensor, reduction_code
from .cosine_margin import OneClassLoss
from .registry import register


def _center_index_inputs(module, batch: int, generator) -> dict:
    """A centre index per utterance for the generic tests: a centre of the
    module for most utterances, -1 (none: the nearest centre) for a third."""
    index = torch.randint(0, module.num_centers, (batch,), generator=generator)
    index[torch.randperm(batch, generator=generator)[: max(1, batch // 3)]] = -1
    return {"center_index": index}


@register(name="samo", family="cosine", reference="MultiCenterOCSoftmaxLoss", espnet_name="samo_loss",
          variants={"64-centers": {"num_centers": 64}, "bonafide-0": {"bonafide_label": 0}},
          make_inputs=_center_index_inputs)
class MultiCenterOCSoftmaxLoss(OneClassLoss):
    """One-class softmax around ``num_centers`` bona fide centres (SAMO's speaker attractors).

    With cos_j the cosine between the pooled embedding and centre j:

    * bona fide: ``softplus(alpha * (m_real - cos_j))``, j = the utterance's
      own centre when ``center_index[b]`` names one (its speaker's attractor),
      else (``center_index`` None or -1) the nearest centre, the largest cosine;
    * spoof: ``softplus(alpha * (max_k cos_k - m_fake))``: pushed away from
      every centre, the closest one counts (its ``center_index`` is ignored).

    Only the chosen centre receives a gradient; ties go to the first of equal
    cosines. ``score`` is the largest cosine, or with ``center_index`` the
    cosine to the utterance's own centre (the enrolled speaker's; the largest
    where it is -1). With one centre this is ``OCSoftmaxLoss``.

    Defaults are those of the authors' training script (samo/main.py of
    github.com/sivannavis/samo: m_real 0.7, m_fake 0, alpha 20, 20 centres, the
    20 speakers of ASVspoof 2019 LA train). Centres start as SAMO's: the first
    ``num_centers`` unit vectors (one-hot rows) when ``num_centers <= enc_dim``,
    otherwise random directions. They are a parameter learned by gradient like
    OC-softmax's centre; SAMO instead fixes them and resets them to the
    per-speaker means of the bona fide embeddings every few epochs: freeze them
    with ``loss.centers.requires_grad_(False)`` and call
    ``load_centers_from_speaker_means``.
    """

    loss_name = "samo"
    centers_name = "centers"

    def __init__(
        self,
        weight: float = 1.0,
        enc_dim: int = 128,
        num_centers: int = 20,
        m_real: float = 0.7,
        m_fake: float = 0.0,
        alpha: float = 20.0,
        bonafide_label: int = 1,
        reduction: str = "mean",
    ):
        most = ops.COSINE_LOSSES[self.loss_name]["max_centers"]
        if isinstance(num_centers, bool) or not isinstance(num_centers, int) or not 1 <= num_centers <= most:
            raise ValueError(f"num_centers must be an int in [1, {most}], got {num_centers!r}")
        super().__init__(weight, enc_dim, m_real, m_fake, alpha, bonafide_label, reduction)
        self.num_centers = num_centers
        self.centers = torch.nn.Parameter(initial_centers(num_centers, enc_dim))

    @property
    def name(self) -> str:
        return "samo_loss"

    def _score_rule(self, center_index: Optional[Tensor] = None) -> tuple[int, int]:
        rule = "nearest_center" if center_index is None else "utterance_center"
        return ops.score_rule_code(rule), 0

    def _run(self, label, emb, lengths, center_index=None) -> tuple[Tensor, Tensor]:
        check_tensor("label", label)
        check_tensor("emb", emb)
        check_tensor("lengths", lengths, optional=True)
        check_tensor("center_index", center_index, optional=True)
        score_rule, score_center = self._score_rule(center_index)
        return ops.cosine_margin_loss_and_score(
            emb, self.centers, label, lengths, ops.loss_code(self.loss_name), self.alpha, self.m_real, self.m_fake,
            self.bonafide_label, reduction_code(self.reduction), score_rule, score_center, center_index)

    def forward(self, label: Tensor, emb: Tensor, lengths: Optional[Tensor] = None,
                center_index: Optional[Tensor] = None) -> Tensor:
        """The loss. label: [B] or [B, 1]; lengths: valid frames per utterance;
        center_index: [B] integer, each bona fide utterance's centre (its
        speaker's attractor) or -1 for the nearest; None: the nearest for all."""
        return self._run(label, emb, lengths, center_index)[0]

    def score(self, emb: Tensor, lengths: Optional[Tensor] = None,
              center_index: Optional[Tensor] = None) -> Tensor:
        """The score [B]: the largest cosine, or with center_index the cosine to
        each utterance's own centre (the largest where it is -1); differentiable."""
        check_tensor("emb", emb)
        check_tensor("lengths", lengths, optional=True)
        check_tensor("center_index", center_index, optional=True)
        score_rule, score_center = self._score_rule(center_index)
        return ops.cosine_score(emb, self.centers, lengths, score_center, score_rule, self.alpha, center_index)

    def forward_and_score(self, label: Tensor, emb: Tensor, lengths: Optional[Tensor] = None,
                          center_index: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """The loss and ``score`` (with the same center_index) from one pass over emb."""
        return self._run(label, emb, lengths, center_index)

    @torch.no_grad()
    def pooled_embedding(self, emb: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """The pooled embedding [B, D] the loss sees (emb [B, T, D] averaged over
        the first lengths[b] frames; a [B, D] emb as it is), in float32 (float64
        for float64 emb), without a gradient: what to collect over an enrolment
        set for ``load_centers_from_speaker_means`` when batches differ in T."""
        check_tensor("emb", emb)
        check_tensor("lengths", lengths, optional=True)
        # the fused score op's second output, the masked time-mean; it checks
        # emb, lengths and D against the centres
        return ops._ops.cosine_score.default(
            emb, self.centers, lengths, None, ops.score_rule_code("nearest_center"), 0, 1.0)[1]

    @torch.no_grad()
    def load_centers_from_speaker_means(self, emb: Tensor, speaker: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """Sets centre k to the normalised mean of the pooled embeddings of the
        utterances with ``speaker[b] == k``, as SAMO sets its attractors from
        the bona fide utterances of each training speaker; returns the number of
        utterances per centre [num_centers] (on emb's device).

        emb: [N, T, D] (pooled over the first ``lengths[b]`` frames, as the loss
        pools) or [N, D] already pooled; speaker: [N] integer, the centre of
        each utterance, or -1 to leave it out (spoof utterances, speakers
        without a centre). Centres that no utterance names keep their value.
        The mean is of the un-normalised pooled embeddings (as SAMO's), then
        scaled to unit length (the loss sees only its direction).

        Runs on emb's device without a host synchronisation on CUDA. A speaker
        index outside [-1, num_centers) is a ValueError on the CPU; on CUDA
        (where raising would need a synchronisation) it makes every centre NaN,
        as the ops do with a bad label. Sums use index_add_, deterministic on
        CUDA under torch.use_deterministic_algorithms(True).
        """
        check_tensor("emb", emb)
        check_tensor("speaker", speaker)
        check_tensor("lengths", lengths, optional=True)
        centers = self.centers
        if speaker.dim() != 1 or speaker.shape[0] != emb.shape[0]:
            raise ValueError(f"speaker must have shape [{emb.shape[0]}] (one centre index per utterance of emb), "
                             f"got shape {list(speaker.shape)}")
        if speaker.is_floating_point() or speaker.is_complex() or speaker.dtype == torch.bool:
            raise ValueError(f"speaker must be an integer tensor of centre indices (-1 for none), got {speaker.dtype}")
        if speaker.device != emb.device:
            raise RuntimeError(f"spoofloss: speaker is on {speaker.device} but emb is on {emb.device}; "
                               "move them to one device")
        speaker = speaker.long()
        num_centers = centers.shape[0]
        outside = (speaker < -1) | (speaker >= num_centers)  # [N]
        if emb.device.type == "cpu" and bool(outside.any()):
            first = int(outside.nonzero()[0, 0])
            raise ValueError(f"speaker[{first}] = {int(speaker[first])} is neither -1 (none) nor a centre index in "
                             f"[0, {num_centers})")
        pooled = self.pooled_embedding(emb, lengths)  # [N, D]
        member = (speaker >= 0) & ~outside  # [N]
        slot = torch.where(member, speaker, torch.zeros_like(speaker))  # a harmless row for non-members
        # where(), not a product with the mask: a NaN embedding of a left-out utterance must not leak.
        rows = torch.where(member.unsqueeze(1), pooled, pooled.new_zeros(()))
        sums = pooled.new_zeros(num_centers, pooled.shape[1]).index_add_(0, slot, rows)  # [K, D]
        counts = pooled.new_zeros(num_centers).index_add_(0, slot, member.to(pooled.dtype))  # [K]
        means = F.normalize(sums / counts.clamp_min(1).unsqueeze(1), p=2.0, dim=1, eps=1e-12)
        new = torch.where((counts > 0).unsqueeze(1), means.to(centers.dtype), centers)
        new = torch.where(outside.any(), torch.full_like(new, float("nan")), new)  # CUDA: no host synchronisation
        centers.copy_(new)
        return counts


def initial_centers(num_centers: int, enc_dim: int) -> Tensor:
    """SAMO's initial attractors [num_centers, enc_dim]: one-hot rows
    (orthonormal) when num_centers <= enc_dim, else random unit directions."""
    if num_centers <= enc_dim:
        return torch.eye(enc_dim)[:num_centers].clone()
    return F.normalize(torch.randn(num_centers, enc_dim), dim=1)
