"""The metrics benchmark runs end to end on a tiny case and writes what it promises.

Not a performance test: it only keeps benchmarks/bench_metrics.py from rotting (pooled and
per-attack rows, the numpy restatements they are checked against, the command rows with
their peak memory)."""

import json
import os
import sys

import pytest

pytest.importorskip("numpy")

BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")


@pytest.fixture
def bench_metrics():
    """The benchmark script as a module, imported from benchmarks/ and forgotten afterwards."""
    if not os.path.isdir(BENCHMARKS_DIR):  # tests/ copied without the source tree (scripts/check_wheel.sh)
        pytest.skip(f"benchmarks/ is not beside this tests/ folder ({os.path.normpath(BENCHMARKS_DIR)})")
    sys.path.insert(0, BENCHMARKS_DIR)
    try:
        import bench_metrics

        yield bench_metrics
    finally:
        sys.path.remove(BENCHMARKS_DIR)
        sys.modules.pop("bench_metrics", None)


def test_tiny_run_writes_pooled_per_attack_and_command_rows(bench_metrics, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    argv = ["--sizes", "3000", "--device", "cpu", "--repeats", "1", "--command", "3000", "--command-repeats", "1",
            "--json", str(out)]
    assert bench_metrics.main(argv) == 0, capsys.readouterr().out
    run = json.loads(out.read_text())
    assert run["meta"]["load_average_before"] and run["meta"]["machine"]
    rows = {r["impl"]: r for r in run["rows"]}
    per_attack = [r for name, r in rows.items() if name.startswith("spoofloss per attack")]
    numpy_loop = [r for name, r in rows.items() if name.startswith("numpy per attack")]
    assert len(per_attack) == 1 and len(numpy_loop) == 1
    assert len(per_attack[0]["groups"]) == bench_metrics.N_ATTACKS
    assert per_attack[0]["groups"].keys() == numpy_loop[0]["groups"].keys()
    commands = [r for name, r in rows.items() if name.startswith("python -m spoofloss.metrics")]
    assert len(commands) == 2
    for r in commands:
        assert r["median_s"] > 0 and 0 < r["peak_rss_mib"] < 1e6
        assert r["summary"][0].startswith("-eval_mindcf")
    # a spoiled number is caught by the check the benchmark makes before writing
    bad = json.loads(out.read_text())["rows"]
    victim = [r for r in bad if r["impl"].startswith("spoofloss per attack")][0]
    first = next(iter(victim["groups"]))
    victim["groups"][first]["eer"] += 1e-9
    assert not bench_metrics.check_rows(bad, [3000])
    assert bench_metrics.check_rows(run["rows"], [3000])
