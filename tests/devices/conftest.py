"""Fixtures of the device tests."""

import warnings
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _cuda_in_full_precision_and_warn_on_nondeterminism(
    request: pytest.FixtureRequest,
) -> Iterator[None]:
    """On CUDA: float32 in full precision, and kernels without a deterministic twin allowed.

    TF32 (on by default for cuDNN convolutions on Ampere and later) keeps 10 mantissa bits, a
    relative error near 1e-3; the layer tests hold complex64 on the device to float32's 1e-5
    against complex128 on the CPU, so TF32 is switched off for cuDNN and cuBLAS during the test.

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
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    tf32 = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True)
        cudnn.allow_tf32, matmul.allow_tf32 = tf32
