"""Detection metrics of spoofing countermeasures and spoofing-robust ASV, computed where the
scores live, with the definitions of the ASVspoof evaluation packages (2019/2021
``eval_metrics.py``; ASVspoof 5 ``evaluation-package/``: ``calculate_modules.py``,
``a_dcf.py``, ``calculate_metrics.py``).

Everything here depends on torch and the standard library only (no compiled code; the
command ``python -m spoofloss.metrics`` also needs numpy to read files: the ``metrics``
extra, ``pip install 'spoofloss[metrics]'``), and runs on any device torch supports.

Modules:
    det        the DET core: the package's sort order (one sort, integer keys) and the
               cumulative counts, for one set of trials or many groups at once
    attack     per-attack groups on the pooled order (bona fide trials never repeated)
    scalar     Track 1: eer, min_dcf, act_dcf, cllr, det_curve
    tandem     Track 2 and tandem: a_dcf, t_eer, min_tdcf, asv_error_rates
    streaming  DetectionMetrics: batch accumulation, DDP gathering, grouped results
    files, cli the command on the challenge's score and key files

Label convention
    Same as the losses: by default ``1`` = bona fide, ``0`` = spoof, and a *higher* score
    means *more bona fide*.  Pass ``bonafide_label=0`` for data that use 0 = bona fide.
    Labels may have any shape with as many elements as ``scores`` and any integer, bool or
    floating dtype holding 0/1.  ASV labels (Track 2) are codes: :data:`ASV_TARGET` = 1,
    :data:`ASV_NONTARGET` = 0, :data:`ASV_SPOOF` = 2 (the numbering of ``a_dcf.py``).

DET curve (shared by EER, minDCF, min t-DCF; a-DCF and t-EER use its three-class form)
    The scores of the bona fide trials are placed before those of the spoof trials and the
    whole list is sorted with a *stable* sort (the package's ``np.argsort(kind="mergesort")``).
    After the first ``k`` sorted trials (``k = 0 .. N``)::

        miss(k) = (#bona fide among them) / N_bonafide       # "frr", Pmiss_cm
        fa(k)   = (#spoof not among them) / N_spoof          # "far", Pfa_cm
        thr(k)  = k-th smallest score   (thr(0) = smallest score - 0.001)

    so for a threshold ``t`` between distinct scores, ``miss`` is the share of bona fide
    scores ``<= t`` and ``fa`` the share of spoof scores ``> t``.  Inside a run of equal
    scores the stable sort puts the bona fide trials first: the curve passes through the
    point where all tied bona fide trials are already rejected but the tied spoof trials
    are still accepted (the pessimistic corner).  As a consequence, constant scores give
    EER = 1.0, exactly as the package reports.  The result does not depend on the order of
    the trials in the input.

Cost
    O(N log N) time, O(N) memory: one sort of int64 keys and cumulative counts in float64.
    Grouped results: one more stable sort of the group ids, for all groups together; per
    attack, a few DET points per spoof trial (attack.py), never the bona fide trials
    once per attack.

Return values
    The functions return Python ``float`` values.  They synchronise with the device a
    small fixed number of times (input validation; reading the result), never per trial.
    All counts and rates are computed in float64; scores of lower precision are compared
    and thresholded after an exact conversion to float64.
"""

from ._inputs import ASV_NONTARGET, ASV_SPOOF, ASV_TARGET
from .scalar import act_dcf, cllr, det_curve, eer, min_dcf
from .streaming import DetectionMetrics
from .tandem import (
    ASVSPOOF5_ASV_ERROR_RATES,
    a_dcf,
    a_dcf_cost_model,
    asv_error_rates,
    min_tdcf,
    t_eer,
    tdcf_cost_model,
)

__all__ = [
    "det_curve",
    "eer",
    "min_dcf",
    "act_dcf",
    "cllr",
    "asv_error_rates",
    "min_tdcf",
    "tdcf_cost_model",
    "a_dcf",
    "a_dcf_cost_model",
    "t_eer",
    "ASVSPOOF5_ASV_ERROR_RATES",
    "ASV_TARGET",
    "ASV_NONTARGET",
    "ASV_SPOOF",
    "DetectionMetrics",
]
