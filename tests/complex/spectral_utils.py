"""Shared tolerances and comparisons for the spectral-op parity tests (scipy is the oracle)."""

import numpy as np
import torch

from tests.helpers import (
    RTOL_SCIPY_PARITY_FLOAT32,
    RTOL_SCIPY_PARITY_FLOAT64,
)

EPS32 = float(np.finfo(np.float32).eps)


def rel_err(ours, ref) -> float:
    ours = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    ref = np.asarray(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = np.abs(ref).max() if ref.size else 1.0
    if scale == 0:
        return float(np.abs(ours).max()) if ours.size else 0.0
    return float(np.abs(ours.astype(np.complex128) - ref).max() / scale)


def assert_close64(ours, ref, tol=RTOL_SCIPY_PARITY_FLOAT64) -> None:
    err = rel_err(ours, ref)
    assert err <= tol, f"relative error {err:.3g} > {tol:.3g}"


def assert_close32(ours32, ref64, scipy32) -> None:
    """float32 rule: within 2x scipy's own float32 error (floor: a few eps) and <= 3e-6."""
    ours_err = rel_err(ours32, ref64)
    scipy_err = rel_err(np.asarray(scipy32), ref64)
    assert ours_err <= RTOL_SCIPY_PARITY_FLOAT32, (
        f"float32 error {ours_err:.3g} > {RTOL_SCIPY_PARITY_FLOAT32}"
    )
    assert ours_err <= max(2 * scipy_err, 8 * EPS32), (ours_err, scipy_err)


def randn(shape, dtype, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        return torch.complex(
            torch.randn(shape, generator=g, dtype=real), torch.randn(shape, generator=g, dtype=real)
        )
    return torch.randn(shape, generator=g, dtype=dtype)
