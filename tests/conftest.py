import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One thread per test process: the suite runs under pytest-xdist on 2 cores.
torch.set_num_threads(1)
# Stricter than users run: an op without a deterministic implementation raises instead of
# making a test pass or fail by chance (on CUDA, cuBLAS needs this workspace setting for it).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
torch.use_deterministic_algorithms(True)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# The devices this machine has: the CPU always, CUDA (marked `gpu`, so `pytest -m gpu` selects
# those cases) only where a GPU is present, so a CPU-only run has no skipped device cases.
_DEVICES = ["cpu"] + (
    [pytest.param("cuda", marks=pytest.mark.gpu)] if torch.cuda.is_available() else []
)


@pytest.fixture(params=_DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


# Skips are allowed only for a missing device or an optional platform feature; any other skip
# (a missing package of ours, a service that did not start) fails the run, so
# breakage cannot turn green by skipping.
ALLOWED_SKIPS = (
    "no CUDA device",
    "checks the no-GPU error",
    "checks the no-MPS error",
)
_unexpected_skips: list[str] = []


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not any(allowed in reason for allowed in ALLOWED_SKIPS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput") or not _unexpected_skips:
        return  # xdist workers report to the controller, which checks once
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["\nskips outside tests/conftest.py ALLOWED_SKIPS (fix the cause or allow the reason):"]
    lines += [f"  {item}" for item in _unexpected_skips]
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
