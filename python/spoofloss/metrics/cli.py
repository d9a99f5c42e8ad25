"""``python -m spoofloss.metrics``: the ASVspoof 5 metrics of a score file against its key.

    python -m spoofloss.metrics --cm SCORES --cm_key KEYS        # Track 1: minDCF, EER, CLLR, actDCF
    python -m spoofloss.metrics --sasv SCORES --sasv_key KEYS    # Track 2: a-DCF, min t-DCF, t-EER

The summary has the names and decimals ``evaluation.py`` of the ASVspoof 5 package prints;
a per-attack table follows when the key has an attack column (and a per-codec table when
it has a codec column).  ``--json FILE`` writes every number at full precision.  A bad
file gets one line on stderr naming the file, the line and what is wrong, and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Dict, List, Optional

import torch

from ._inputs import ASV_NONTARGET, ASV_SPOOF, ASV_TARGET
from .streaming import DetectionMetrics

CM_LABELS = ("bonafide", "spoof")
ASV_LABELS = ("target", "nontarget", "spoof")


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m spoofloss.metrics",
        description="ASVspoof 5 metrics of a score file against its key file (the formats of the "
                    "challenge's evaluation package).",
    )
    p.add_argument("--cm", metavar="SCORES", help="Track 1 score file: filename, cm-score")
    p.add_argument("--cm_key", "--cm_keys", dest="cm_key", metavar="KEYS",
                   help="Track 1 key file: filename, cm-label (bonafide/spoof) [, attack, codec]")
    p.add_argument("--sasv", metavar="SCORES",
                   help="Track 2 score file: spk, filename, cm-score, asv-score, sasv-score ('-' where absent)")
    p.add_argument("--sasv_key", "--sasv_keys", dest="sasv_key", metavar="KEYS",
                   help="Track 2 key file: spk, filename, cm-label, asv-label (target/nontarget/spoof) [, attack, codec]")
    p.add_argument("--m", dest="mode", choices=("t1", "t2_tandem", "t2_single"),
                   help="as evaluation.py's --m (optional: the files given decide)")
    p.add_argument("--json", metavar="FILE", help="also write every number, at full precision, to FILE")
    p.add_argument("--device", default="cpu", help="torch device for the metrics (default cpu)")
    p.add_argument("--exhaustive-teer", action="store_true",
                   help="search every point for the t-EER instead of the package's coarse-to-fine search")
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="progress lines on stderr (default: for files over 32 MiB)")
    progress.add_argument("--quiet", dest="progress", action="store_false", help="no progress lines")
    return p


def _fmt(value: float, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


# ---------------------------------------------------------------------------------------
def _track1(args, progress) -> Dict[str, object]:
    from .files import match, parse_labels, parse_scores, read_table

    scores = read_table(args.cm, "CM score", ("filename", "cm-score"), progress)
    key = read_table(args.cm_key, "CM key", ("filename", "cm-label"), progress)
    for table in (scores, key):
        if len(table) == 0:
            raise _empty(table)
    rows = match(scores.text("filename"), scores, key.text("filename"), key, "filename")
    values = parse_scores(scores, "cm-score")
    labels = parse_labels(key, "cm-label", CM_LABELS)[rows]
    progress.say(f"matched {len(rows):,} trials to the key", scores.buf.size)
    device = torch.device(args.device)
    s = torch.from_numpy(values).to(device)
    is_bf = torch.from_numpy(labels == 0).to(device)
    out: Dict[str, object] = {"track": 1, "scores": args.cm, "key": args.cm_key}
    size, groups = scores.buf.size, _group_columns(key, rows)
    del scores, key, rows, labels  # the tables are read: free them before scoring
    out["pooled"] = None  # first key of the JSON file
    out["pooled"] = _grouped(out, groups, device, dict(scores=s, labels=is_bf), DetectionMetrics)
    progress.say("scored", size)
    return out


def _track2(args, progress) -> Dict[str, object]:
    from .files import join_columns, match, parse_labels, parse_scores, read_table

    cols = ("spk", "filename", "cm-score", "asv-score", "sasv-score")
    scores = read_table(args.sasv, "SASV score", cols, progress)
    key = read_table(args.sasv_key, "SASV key", ("spk", "filename", "cm-label", "asv-label"), progress)
    for table in (scores, key):
        if len(table) == 0:
            raise _empty(table)
    score_ids = join_columns([scores.text("spk"), scores.text("filename")])
    key_ids = join_columns([key.text("spk"), key.text("filename")])
    rows = match(score_ids, scores, key_ids, key, "trial (spk, filename)")
    single = args.mode == "t2_single"
    cm = None if single else parse_scores(scores, "cm-score", allow_absent=True)
    asv = None if single else parse_scores(scores, "asv-score", allow_absent=True)
    sasv = parse_scores(scores, "sasv-score")
    cm_lab = parse_labels(key, "cm-label", CM_LABELS)
    asv_lab = parse_labels(key, "asv-label", ASV_LABELS)
    from .files import FileFormatError

    disagree = (cm_lab == 1) != (asv_lab == 2)
    if disagree.any():
        row = int(disagree.nonzero()[0][0])
        raise FileFormatError(key.path, key.line(row),
                              f"cm-label {CM_LABELS[cm_lab[row]]!r} and asv-label {ASV_LABELS[asv_lab[row]]!r} "
                              "disagree (a trial is spoof in both or in neither)")
    if args.mode == "t2_tandem" and (cm is None or asv is None):
        raise UsageError(f"--m t2_tandem needs cm-score and asv-score in {args.sasv}; they are '-'")
    codes = torch.from_numpy(asv_lab[rows])
    # key label index -> ASV code (target 1, non-target 0, spoof 2)
    codes = torch.tensor([ASV_TARGET, ASV_NONTARGET, ASV_SPOOF])[codes]
    progress.say(f"matched {len(rows):,} trials to the key", scores.buf.size)
    device = torch.device(args.device)
    fields = dict(asv_labels=codes.to(device), sasv_scores=torch.from_numpy(sasv).to(device))
    if cm is not None:
        fields["scores"] = torch.from_numpy(cm).to(device)
        if asv is not None:
            fields["asv_scores"] = torch.from_numpy(asv).to(device)
    make = lambda **kw: DetectionMetrics(t_eer_exhaustive=args.exhaustive_teer, **kw)  # noqa: E731
    out: Dict[str, object] = {"track": 2, "scores": args.sasv, "key": args.sasv_key}
    size, groups = scores.buf.size, _group_columns(key, rows)
    del scores, key, rows, score_ids, key_ids  # the tables are read: free them before scoring
    out["pooled"] = None  # first key of the JSON file
    pooled = _grouped(out, groups, device, fields, make)
    if "scores" in fields and math.isnan(pooled["min_tdcf"]):
        raise UsageError(f"{args.sasv}: the cm-score column holds fewer than 3 distinct values; the min t-DCF "
                         "needs soft CM scores, not hard decisions (the evaluation package refuses them too)")
    out["pooled"] = pooled
    progress.say("scored", size)
    return out


def _empty(table):
    from .files import FileFormatError

    return FileFormatError(table.path, None, "the file holds a header but no trial")


def _run(metric: DetectionMetrics, fields, groups=None) -> Dict[str, object]:
    metric.update(groups=groups, **fields)
    return metric.compute()


def _group_columns(key, rows) -> List[tuple]:
    """``(column, grouping, ids, names)`` of the key's attack column (attack grouping) and
    codec column (condition grouping), where it has them, for the scored trials ``rows``."""
    from .files import categories

    return [(column, grouping, *categories(key.text(column)[rows]))
            for column, grouping in (("attack", "attack"), ("codec", "condition")) if key.has(column)]


def _grouped(out, groups, device, fields, make) -> Dict[str, object]:
    """Per-attack and per-codec results (``groups`` from _group_columns) into ``out``;
    returns the pooled results (those of the first grouped run, which computes them
    anyway, or of a run without groups)."""
    pooled = None
    for column, grouping, ids, names in groups:
        result = _run(make(grouping=grouping), fields, torch.from_numpy(ids).to(device))
        out[f"per_{column}"] = {names[g]: r for g, r in result.pop("groups").items()}
        if pooled is None:
            pooled = result
    return pooled if pooled is not None else _run(make(), fields)


# ---------------------------------------------------------------------------------------
def _print(out: Dict[str, object]) -> None:
    p = out["pooled"]
    w = sys.stdout.write
    if out["track"] == 1:
        # evaluation.py, mode t1
        w("# Track 1 Result: \n\n")
        w("-eval_mindcf: {:.5f}\n-eval_eer (%): {:.3f}\n-eval_cllr (bits): {:.5f}\n-eval_actDCF: {:.5f}\n\n".format(
            p["min_dcf"], p["eer"] * 100, p["cllr"], p["act_dcf"]))
        head = ("minDCF", "EER (%)", "Cllr (bits)", "actDCF")
        cells = lambda r: (_fmt(r["min_dcf"], ".5f"), _fmt(r["eer"] * 100, ".3f"),  # noqa: E731
                           _fmt(r["cllr"], ".5f"), _fmt(r["act_dcf"], ".5f"))
    elif "min_tdcf" in p:
        # evaluation.py, mode t2_tandem (t-EER only where ASV scores were given)
        w("# Track 2 Result: \n\n")
        w("-eval_adcf: {:.5f}\n-eval_tdcf: {:.5f}\n".format(p["a_dcf"], p["min_tdcf"]))
        if "t_eer" in p:
            w("-eval_teer (%): {}\n".format(_fmt(p["t_eer"] * 100, ".3f")))
        w("\n")
        head = ("a-DCF", "min t-DCF", "t-EER (%)")
        cells = lambda r: (_fmt(r["a_dcf"], ".5f"), _fmt(r["min_tdcf"], ".5f"),  # noqa: E731
                           _fmt(r["t_eer"] * 100, ".3f") if "t_eer" in r else "-")
    else:
        # evaluation.py, mode t2_single
        w("# Track 2 (Single) Result: \n\n")
        w("-eval_adcf: {:.5f}\n\n".format(p["a_dcf"]))
        head = ("a-DCF",)
        cells = lambda r: (_fmt(r["a_dcf"], ".5f"),)  # noqa: E731

    def table(title, rows: Dict[str, Dict[str, object]], count_cols):
        names = list(rows)
        first = max([len("pooled"), len(title)] + [len(n) for n in names])
        lines = [[title] + [c for c in count_cols] + list(head)]
        lines.append(["pooled"] + [str(p[c]) for c in count_cols] + list(cells(p)))
        for n in names:
            lines.append([n] + [str(rows[n][c]) for c in count_cols] + list(cells(rows[n])))
        widths = [max(len(l[i]) for l in lines) for i in range(len(lines[0]))]
        widths[0] = first
        for l in lines:
            w(l[0].ljust(widths[0]) + "".join("  " + c.rjust(wd) for c, wd in zip(l[1:], widths[1:])) + "\n")

    shared = "n_target n_nontarget".split() if out["track"] == 2 else ["n_bonafide"]
    if "per_attack" in out:
        w("# Per attack: every row judges all bona fide trials ({}) against the spoof trials of "
          "its attack\n\n".format(", ".join(f"{c[2:]} {p[c]}" for c in shared)))
        table("attack", out["per_attack"], ["n_spoof"])
        w("\n")
    if "per_codec" in out:
        w("# Per codec: every row judges the bona fide and spoof trials of its codec\n\n")
        table("codec", out["per_codec"], shared + ["n_spoof"])
        w("\n")


def _json_safe(x):
    """NaN (an undefined metric) as null, so that the file is strict JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


NUMPY_MISSING = (
    "error: python -m spoofloss.metrics reads score and key files with numpy, which is not installed; "
    "install it with: pip install 'spoofloss[metrics]' (or pip install numpy)"
)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:  # the metrics need torch only; reading the files needs numpy (the "metrics" extra)
        import numpy  # noqa: F401
    except ImportError:
        print(NUMPY_MISSING, file=sys.stderr)
        return 1
    from .files import FileFormatError, Progress

    try:
        t1 = args.cm is not None or args.cm_key is not None
        t2 = args.sasv is not None or args.sasv_key is not None
        if t1 == t2:
            raise UsageError("give --cm and --cm_key (Track 1) or --sasv and --sasv_key (Track 2)")
        if t1 and (args.cm is None or args.cm_key is None):
            raise UsageError("Track 1 needs both --cm SCORES and --cm_key KEYS")
        if t2 and (args.sasv is None or args.sasv_key is None):
            raise UsageError("Track 2 needs both --sasv SCORES and --sasv_key KEYS")
        if args.mode is not None and (args.mode == "t1") != t1:
            raise UsageError(f"--m {args.mode} does not go with the files given")
        progress = Progress(args.progress)
        out = _track1(args, progress) if t1 else _track2(args, progress)
    except (FileFormatError, UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        _print(out)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        return 0
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(_json_safe(out), f, indent=1)
        except OSError as exc:
            print(f"error: cannot write {args.json}: {exc}", file=sys.stderr)
            return 1
    return 0
