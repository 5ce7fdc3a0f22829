"""Shared pieces of the device tests: CPU data, moves, and comparisons with the reference.

Every device test builds its data once on the CPU in float64 (seeded), computes the reference
there, runs research_ext on the ``device`` fixture's device and compares ``result.cpu()``; the
result must also stay on the input's device.
"""

from typing import Any

import numpy as np
import torch

from tests.helpers import tolerances


def randn(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float64, seed: int = 0
) -> torch.Tensor:
    """Seeded standard normal data on the CPU (complex dtypes: independent real and imag)."""
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        real = torch.empty((), dtype=dtype).real.dtype
        parts = torch.randn((2, *shape), generator=g, dtype=real)
        return torch.complex(parts[0], parts[1])
    return torch.randn(shape, generator=g, dtype=dtype)


def assert_on(result: Any, device: torch.device) -> None:
    """Every tensor in ``result`` (a tensor or a nested tuple/list/dict) lives on ``device``."""
    for t in _leaves(result):
        if isinstance(t, torch.Tensor):
            assert t.device.type == device.type, f"result on {t.device}, input on {device}"


def assert_matches(result: Any, reference: Any, dtype: torch.dtype = torch.float64) -> None:
    """``result`` (any device) equals ``reference`` (tensors or arrays) within ``dtype``'s tolerances.

    The absolute tolerance is relative to the reference's largest entry, so outputs of any scale
    (power spectra, unnormalized transforms) are held to the same relative accuracy.
    """
    got, want = [_as_cpu(t) for t in _leaves(result)], [_as_cpu(t) for t in _leaves(reference)]
    assert len(got) == len(want), (len(got), len(want))
    tol = tolerances(dtype)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape, (a.shape, b.shape)
        common = torch.complex128 if a.is_complex() or b.is_complex() else torch.float64
        scale = float(b.abs().max()) if b.numel() else 1.0
        torch.testing.assert_close(
            a.to(common), b.to(common), rtol=tol["rtol"], atol=tol["atol"] * max(scale, 1.0)
        )


def _as_cpu(obj: Any) -> torch.Tensor:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    return torch.as_tensor(np.array(obj))  # a copy: scipy may return negative strides


def _leaves(obj: Any):
    if isinstance(obj, tuple | list):
        for item in obj:
            yield from _leaves(item)
    elif isinstance(obj, dict):
        for key in sorted(obj):
            yield from _leaves(obj[key])
    else:
        yield obj
