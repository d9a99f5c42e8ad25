"""The loss benchmark runs end to end on a tiny case and writes what it promises.

Not a performance test: it only keeps benchmarks/bench_losses.py from rotting
(the spoofloss and eager providers; torch.compile takes tens of seconds to
compile on a small CPU, too long for the suite).
"""

import json
import os
import sys

import pytest

BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
BENCH_MODULES = ("bench_losses", "harness", "report")


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
        for name in BENCH_MODULES:
            sys.modules.pop(name, None)


def test_tiny_run_writes_json_with_positive_times(bench_losses, tmp_path, capsys):
    argv = ["--device", "cpu", "--quick", "--min-time", "0.005", "--batch", "3", "--frames", "5", "--dim", "4",
            "--loss", "oc", "binary", "--mode", "train", "score", "--provider", "spoofloss", "eager",
            "--copy-mib", "16", "--out-dir", str(tmp_path), "--no-plot"]
    assert bench_losses.main(argv) == 0

    (path,) = tmp_path.glob("*/*.json")
    run = json.loads(path.read_text())
    for key in ("device", "torch", "commit", "threads", "bandwidth", "settings", "cases", "targets", "elapsed_s"):
        assert key in run, key
    assert run["device"]["type"] == "cpu" and run["device"]["name"]
    assert run["bandwidth"]["bytes_per_s"] > 0

    # oc train, oc score, binary train (the binary loss has no score mode)
    assert sorted((c["loss"], c["mode"]) for c in run["cases"]) == [("binary", "train"), ("oc", "score"),
                                                                    ("oc", "train")]
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
