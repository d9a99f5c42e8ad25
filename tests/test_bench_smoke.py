"""The loss benchmark runs end to end on a tiny case and writes what it promises.

Not a performance test: it only keeps benchmarks/bench_losses.py from rotting
(the spoofloss and eager providers; torch.compile takes tens of seconds to
compile on a small CPU, too long for the suite).
"""

import json
import os
import sys

import pytest
import torch

BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
BENCH_MODULES = ("bench_losses", "harness", "loss_bench")


@pytest.fixture
def bench_losses():
    """The benchmark script as a module, imported from benchmarks/ and forgotten afterwards."""
    if not os.path.isdir(BENCHMARKS_DIR):  # tests/ copied without the source tree (scripts/check_wheel.sh)
        pytest.skip(f"benchmarks/ is not beside this tests/ folder ({os.path.normpath(BENCHMARKS_DIR)})")
    sys.path.insert(0, BENCHMARKS_DIR)
    try:
        import bench_losses

        yield bench_losses
    finally:
        sys.path.remove(BENCHMARKS_DIR)
        for name in [m for m in sys.modules if m.split(".")[0] in BENCH_MODULES]:
            sys.modules.pop(name)


def test_tiny_run_writes_json_with_positive_times(bench_losses, tmp_path, capsys):
    """Every registered loss and configuration on one tiny size: the cases come
    from the registry (spoofloss.registry.LOSSES), none named here."""
    from spoofloss.registry import LOSSES

    argv = ["--device", "cpu", "--quick", "--min-time", "0.005", "--batch", "3", "--frames", "5", "--dim", "4",
            "--loss", *LOSSES, "--variant", "all", "--mode", "train", "score", "--provider", "spoofloss", "eager",
            "--copy-mib", "16", "--out-dir", str(tmp_path), "--no-plot"]
    assert bench_losses.main(argv) == 0

    (path,) = tmp_path.glob("*/*.json")
    run = json.loads(path.read_text())
    for key in ("device", "torch", "commit", "threads", "bandwidth", "settings", "cases", "targets", "elapsed_s"):
        assert key in run, key
    assert run["device"]["type"] == "cpu" and run["device"]["name"]
    assert run["bandwidth"]["bytes_per_s"] > 0

    # every configuration in train; in score those whose score computes something (not BinaryLoss's)
    configurations = {(name, variant) for name, spec in LOSSES.items() for variant in [None, *spec.variants]}
    assert {(c["loss"], c["variant"]) for c in run["cases"] if c["mode"] == "train"} == configurations
    def scores_something(name, variant):
        module = LOSSES[name].build(variant, enc_dim=4)[0]
        pred = torch.zeros(2, getattr(module, "num_logits", 1))
        return LOSSES[name].family == "cosine" or module.score(pred) is not pred

    assert {(c["loss"], c["variant"]) for c in run["cases"] if c["mode"] == "score"} == {
        (name, variant) for name, variant in configurations if scores_something(name, variant)}
    for case in run["cases"]:
        assert case["floor_bytes"] > 0 and case["floor_s"] > 0
        if case["mode"] == "train":
            assert case["autograd_floor"]["median_s"] > 0
        for provider in ("spoofloss", "eager"):
            result = case["providers"][provider]
            assert result["error"] is None, result["error"]
            assert 0 < result["p20_s"] <= result["median_s"] <= result["p80_s"]
            assert result["reps"] >= 5
            assert result["peak_bytes"] is not None and result["peak_bytes"] >= 0
            assert result["output_diff"] is not None and result["output_diff"] < 1e-4

    out = capsys.readouterr().out
    assert "summary" in out and "targets" in out

    # --plot-only redoes the table and the plot from the saved JSON
    assert bench_losses.main(["--plot-only", str(path)]) == 0
    assert "summary" in capsys.readouterr().out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert path.with_suffix(".png").stat().st_size > 0


def test_default_set_covers_every_registered_cosine_loss(bench_losses, capsys):
    """The default set (what scripts/bench.sh runs): every registered cosine loss
    at the three target sizes, and each variant with another number of centres
    at the middle one; nothing is named here."""
    from loss_bench import cases, cli
    from spoofloss.registry import LOSSES

    selected = cases.select_cases(cli.parse_args([]), torch.device("cpu"))
    cosine = [name for name, spec in LOSSES.items() if spec.family == "cosine"]
    defaults = {(c.loss, (c.batch, c.frames, c.dim)) for c in selected if c.variant is None}
    assert defaults == {(name, size) for name in cosine for size in cases.TARGET_SIZES}
    assert {(c.loss, c.variant) for c in selected if c.variant is not None} == {
        (name, v) for name in cosine for v in cases.centre_variants(name)}
    assert all(c.mode == "train" and c.dtype == "float32" and c.lengths for c in selected)
    assert bench_losses.main(["--device", "cpu", "--estimate-only", "--copy-mib", "16"]) == 0
    assert f"plan: {len(selected)} cases" in capsys.readouterr().out


def test_loss_names_and_prefixes(bench_losses):
    from loss_bench import cli
    from spoofloss.registry import LOSSES

    for name in LOSSES:
        assert cli.parse_args(["--loss", name]).loss == [name]
        prefix = next(name[:n] for n in range(1, len(name) + 1)
                      if [other for other in LOSSES if other.startswith(name[:n])] == [name])
        assert cli.parse_args(["--loss", prefix]).loss == [name]
    with pytest.raises(SystemExit):
        cli.parse_args(["--loss", "no_such_loss"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--variant", "no-such-variant"])
