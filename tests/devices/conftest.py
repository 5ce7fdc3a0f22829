"""Fixtures of the device tests."""

import warnings
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _cuda_kernels_without_a_deterministic_twin_warn(
    request: pytest.FixtureRequest,
) -> Iterator[None]:
    """On CUDA, let torch kernels that have no deterministic implementation run, with a warning.

    The suite asks for deterministic algorithms (tests/conftest.py), under which torch raises for
    some CUDA backward kernels (adaptive and 3-d pooling, bilinear interpolation) and for
    ``cumsum``/``median`` on CUDA. The device tests compare values within tolerances that absorb
    a different summation order, so they run those kernels and keep their checks; the warning
    names each kernel in the test report.
    """
    callspec = getattr(request.node, "callspec", None)
    on_cuda = callspec is not None and str(callspec.params.get("device", "")).startswith("cuda")
    if not on_cuda:
        yield
        return
    # Warnings are errors in this suite (pyproject.toml); this one is shown, not raised. pytest
    # restores the filters after the test (its warning capture wraps setup, call and teardown).
    warnings.filterwarnings("default", message=".*does not have a deterministic implementation")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True)
