"""Fixtures and hooks of the test suite (the helpers live in tests/helpers/).

* ``device`` fixture: every test that takes it runs on "cpu" and "cuda"; the
  cuda case is skipped, with a reason, where no GPU is present.
* ``poison`` fixture: deterministic mode with ``fill_uninitialized_memory``, so
  every ``at::empty`` output starts as NaN (floats) / INT_MAX (integers) and an
  element a kernel forgets to write shows up as a mismatch.
* Per-test seeding (autouse): each test draws its random inputs from a seed
  derived from its node id, so failures reproduce and inputs differ per test.
* On the emulated-CUDA build, the report of which CUDA kernels ran.
"""

from __future__ import annotations

import os
import zlib

import pytest
import torch

from helpers import kernel_coverage
from helpers.devices import EMULATED_CUDA, devices

# Names that tests outside this suite's own files import from conftest (kept
# until they import them from helpers): new tests import from helpers.
from helpers.devices import HAS_CUDA, NO_CUDA_REASON, cuda_only, requires_cuda, runs_cuda_kernels  # noqa: F401
from helpers.inputs import cpu, f64, label_as, make_labels, make_lengths, random_upstream, randn  # noqa: F401
from helpers.tolerance import assert_identical, assert_matches, expected_out_dtype, tolerances  # noqa: F401


def pytest_configure(config):
    # declared in pyproject.toml too; repeated so the suite runs from anywhere
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped without one")


def pytest_sessionfinish(session, exitstatus):
    """On the emulated-CUDA build: print which CUDA kernels ran with which
    dtypes; with SPOOFLOSS_REQUIRE_KERNEL_COVERAGE=1, fail the run when one
    did not (tests/helpers/kernel_coverage.py)."""
    if not EMULATED_CUDA or not os.path.isdir(kernel_coverage.SOURCE_DIR):
        return
    import spoofloss

    lines, missing = kernel_coverage.report(spoofloss._C.emulation.coverage())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
    if missing and os.environ.get("SPOOFLOSS_REQUIRE_KERNEL_COVERAGE") == "1":
        if reporter is not None:
            reporter.write_line("kernel coverage FAILED: " + "; ".join(missing), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(params=devices())
def device(request) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _seed(request):
    """Seed torch from the test's node id: fresh but reproducible inputs per test."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield


@pytest.fixture
def poison():
    """Deterministic algorithms + fill_uninitialized_memory for the test's duration.

    With both on, at::empty / torch.empty fill floats with NaN and integers with
    their maximum, so any output element a kernel leaves unwritten is caught by
    the element-wise comparison. warn_only=True: the point is the poisoning, not
    refusing ops that lack a deterministic implementation (e.g. atomics in a
    CUDA reduction), which would only warn.
    """
    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        assert torch.isnan(torch.empty(4)).all(), "uninitialised-memory poisoning is not active"
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = was_fill
