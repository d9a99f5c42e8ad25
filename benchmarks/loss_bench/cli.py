"""The loss benchmark's command line (python benchmarks/bench_losses.py --help)."""

from __future__ import annotations

import argparse

from spoofloss.registry import LOSSES

from .cases import DTYPES, MODES, SWEEP_BATCH, SWEEP_DIM, SWEEP_FRAMES

PROVIDERS = ("spoofloss", "eager", "compile")


def loss_name(text: str) -> str:
    """A registered loss by its name, or by a prefix that names one loss only
    ("am" for am_softmax, "oc" for oc_softmax while no other name starts so)."""
    if text in LOSSES:
        return text
    matches = [name for name in LOSSES if name.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(LOSSES)
    if matches:
        raise argparse.ArgumentTypeError(f"{text!r} names several losses ({', '.join(matches)}); one of: {known}")
    raise argparse.ArgumentTypeError(f"no registered loss {text!r}; one of: {known}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the spoofloss losses against the eager and compiled PyTorch reference.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    cosine = [n for n, s in LOSSES.items() if s.family == "cosine"]
    select = parser.add_argument_group("what to run (the default set unless --full; flags narrow or replace)")
    select.add_argument("--loss", nargs="+", type=loss_name, metavar="LOSS",
                        help=f"registered losses ({', '.join(LOSSES)}; a unique prefix will do); "
                             f"default: {' '.join(cosine)} (--full: all)")
    select.add_argument("--variant", nargs="+", metavar="VARIANT",
                        help="registered configurations to add to each loss's default one, 'all' or 'none'; "
                             "default: those with another number of centres (at B=32 T=200 D=128 unless a sweep)")
    select.add_argument("--mode", nargs="+", choices=MODES,
                        help="default: train (CPU), train score (CUDA); --full: all")
    select.add_argument("--provider", nargs="+", choices=PROVIDERS, help="default: all")
    select.add_argument("--dtype", nargs="+", choices=tuple(DTYPES), help="default: float32 (--full: float32 bfloat16)")
    select.add_argument("--lengths", choices=("yes", "no", "both"), help="default: yes (--full: both)")
    select.add_argument("--batch", nargs="+", type=int, help=f"B values; sweep: {SWEEP_BATCH}")
    select.add_argument("--frames", nargs="+", type=int, help=f"T values; sweep: {SWEEP_FRAMES}")
    select.add_argument("--dim", nargs="+", type=int, help=f"D values; sweep: {SWEEP_DIM}")
    select.add_argument("--full", action="store_true",
                        help="the whole sweep: every loss, mode, dtype, lengths, B x T x D of the sweep lists")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="shorter measurements (>= 0.05 s or 5 reps): a quick look")
    parser.add_argument("--min-time", type=float, help="seconds of repetitions per measurement (default 0.2)")
    parser.add_argument("--min-reps", type=int, help="repetitions per measurement, at least (default 10)")
    parser.add_argument("--compile-shapes", choices=("static", "dynamic"), default="static",
                        help="static: a graph specialised to each case; dynamic: one graph reused across B and T")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's default)")
    parser.add_argument("--copy-mib", type=int, help="size of the bandwidth copy (default: 256 CPU, 1024 GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", help="results go to OUT_DIR/<device>/ (default: benchmarks/results)")
    parser.add_argument("--no-save", action="store_true", help="print only: no JSON, no plot")
    parser.add_argument("--no-plot", action="store_true", help="write the JSON but no PNG")
    parser.add_argument("--estimate-only", action="store_true", help="print the plan and its estimated time, then exit")
    parser.add_argument("--plot-only", metavar="FILE.json", help="re-print the table and re-plot a saved run")
    args = parser.parse_args(argv)
    known = {v for spec in LOSSES.values() for v in spec.variants} | {"all", "none"}
    for variant in args.variant or ():
        if variant not in known:
            parser.error(f"--variant: no registered variant {variant!r}; one of: {', '.join(sorted(known))}")
    return args
