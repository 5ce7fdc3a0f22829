"""Chirp z-transform and zoom FFT by Bluestein's algorithm (FFTs of a fast length).

The chirps are O(n + m) constants computed on the host in float64 with scipy's formulas (the
DFT's chirp with its exponent reduced mod 2m, the zoom chirps from their phases), so the
results round as scipy's do; the transform itself runs on the input's device.
"""

import cmath
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from research_ext.complex._shared.arguments import as_floating, normalize_dim
from research_ext.complex._shared.fft_lengths import next_fast_len
from research_ext.core import check_positive, format_message

__all__ = ["czt", "zoom_fft"]


def _points(fn: str, name: str, value: Any, what: str) -> int:
    """A positive integral number of points (numpy integers too); ValueError otherwise, as scipy."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            format_message(fn, name, "a positive int", value)
            + f" (Invalid number of CZT {what} points)"
        )
    return int(value)


def _checked_length(fn: str, x: torch.Tensor, dim: int) -> tuple[int, int]:
    if x.ndim == 0:
        raise ValueError(f"{fn}: `x` must have at least one dim, got x.shape=()")
    d = normalize_dim(fn, dim, x.ndim)
    if x.shape[d] < 1:
        raise ValueError(
            f"{fn}: `x` must not be empty along `dim`, got x.shape={tuple(x.shape)}"
            " (Invalid number of CZT data points)"
        )
    return d, x.shape[d]


def _complex_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.complex64 if x.dtype in (torch.float32, torch.complex64) else torch.complex128


def czt(
    x: torch.Tensor,
    m: int | None = None,
    w: complex | None = None,
    a: complex = 1 + 0j,
    *,
    dim: int = -1,
) -> torch.Tensor:
    """Chirp z-transform: the z-transform of ``x`` at the points z_k = a w^-k of a spiral.

    Torch implementation of `scipy.signal.czt`: X_k = sum_n x_n a^-n w^(n k), k = 0..m-1,
    evaluated with Bluestein's identity n k = (n^2 + k^2 - (k - n)^2) / 2 as a convolution with
    the chirp w^(-j^2/2), done by FFTs of length next_fast_len(n + m - 1). The defaults
    (m = n, w = exp(-2 pi i / m), a = 1) give the DFT.

    Differences from scipy: ``dim`` replaces ``axis``; complex64 results for float32/complex64
    input (scipy computes in complex128). Differentiable in ``x``.

    Args:
        x: real or complex tensor.
        m: number of output points (default ``x.shape[dim]``).
        w: ratio between points (default exp(-2 pi i / m)).
        a: starting point of the spiral.
        dim: the dim to transform.

    Returns:
        Complex tensor with ``m`` along ``dim``.

    Raises:
        TypeError: ``x`` is not a tensor of an integer, float or complex dtype.
        ValueError: ``m`` is not a positive integer (a ValueError for 3.5 too, as scipy),
            ``x`` is 0-d (scipy: IndexError) or empty along ``dim``, or ``dim`` is out of range.

    Example:
        >>> import torch
        >>> x = torch.randn(16, dtype=torch.float64)
        >>> torch.allclose(czt(x), torch.fft.fft(x))
        True

    References:
        L. Bluestein, "A linear filtering approach to the computation of the discrete Fourier
        transform", IEEE Trans. Audio Electroacoustics 18(4), 1970; L. Rabiner, R. Schafer,
        C. Rader, "The chirp z-transform algorithm", ibid. 17(2), 1969.
    """
    fn = "czt"
    x = as_floating(fn, "x", x)
    d, n = _checked_length(fn, x, dim)
    m = n if m is None else _points(fn, "m", m, "output")
    default_w = w is None
    w = cmath.exp(-2j * math.pi / m) if w is None else complex(w)
    a = complex(a)
    if w == 0 or a == 0:
        raise ValueError(format_message(fn, "w" if w == 0 else "a", "non-zero", w if w == 0 else a))
    k = np.arange(max(m, n), dtype=np.float64)
    if default_w:  # the DFT's chirp, with the exponent reduced mod 2m (exact for large k)
        wk2 = np.exp(-1j * np.pi * ((k**2) % (2 * m)) / m)
    else:
        wk2 = w ** (k**2 / 2.0)
    awk2 = a ** -np.arange(n) * wk2[:n]
    return _bluestein(x, d, m, wk2, awk2)


def _bluestein(x: torch.Tensor, d: int, m: int, wk2: np.ndarray, awk2: np.ndarray) -> torch.Tensor:
    """X_k = wk2[k] sum_n (awk2[n] x_n) / wk2[k - n]: one convolution with the inverse chirp.

    The chirps are O(n + m) constants built on the host in float64 (scipy's formulas, so the
    rounding matches scipy's) and moved once to ``x``'s device.
    """
    n = x.shape[d]
    cdtype, device = _complex_dtype(x), x.device
    length = next_fast_len(n + m - 1)
    kernel = np.fft.fft(1 / np.hstack((wk2[n - 1 : 0 : -1], wk2[:m])), length)

    def const(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.complex128)).to(
            device=device, dtype=cdtype
        )

    xl = x.movedim(d, -1).to(cdtype)
    y = torch.fft.ifft(torch.fft.fft(xl * const(awk2), n=length) * const(kernel))
    return (y[..., n - 1 : n + m - 1] * const(wk2[:m])).movedim(-1, d)


def zoom_fft(
    x: torch.Tensor,
    fn: float | Sequence[float],
    m: int | None = None,
    *,
    fs: float = 2,
    endpoint: bool = False,
    dim: int = -1,
) -> torch.Tensor:
    """DFT of ``x`` on ``m`` equally spaced frequencies of the band [f1, f2].

    Torch implementation of `scipy.signal.zoom_fft`: the :func:`czt` with a = exp(2 pi i f1 / fs)
    and w = exp(-2 pi i (f2 - f1) / (fs m)) (with ``endpoint=True`` the step is
    (f2 - f1) / (m - 1), so f2 is included).

    Differences from scipy: ``dim`` replaces ``axis``; complex64 for single-precision input.
    Differentiable in ``x``.

    Args:
        x: real or complex tensor.
        fn: f2, or the pair (f1, f2) of band edges.
        m: number of output points (default ``x.shape[dim]``).
        fs: sampling frequency (default 2, so frequencies are in units of Nyquist).
        endpoint: include f2.
        dim: the dim to transform.

    Returns:
        Complex tensor with ``m`` along ``dim``.

    Raises:
        TypeError: ``x`` is not a tensor of an integer, float or complex dtype.
        ValueError: ``fn`` is not a scalar or pair, ``m`` is not a positive integer, ``x`` is
            0-d or empty along ``dim``, or ``fs <= 0``.

    Example:
        >>> import torch
        >>> x = torch.randn(8, dtype=torch.float64)
        >>> torch.allclose(zoom_fft(x, [0, 2]), torch.fft.fft(x))
        True
    """
    name = "zoom_fft"
    x = as_floating(name, "x", x)
    check_positive(name, "fs", fs)
    d, n = _checked_length(name, x, dim)
    m = n if m is None else _points(name, "m", m, "output")
    if isinstance(fn, int | float):
        f1, f2 = 0.0, float(fn)
    elif len(fn) == 2:
        f1, f2 = float(fn[0]), float(fn[1])
    else:
        raise ValueError(format_message(name, "fn", "a scalar or a pair (f1, f2)", fn))
    scale = (f2 - f1) * m / (fs * (m - 1)) if endpoint and m > 1 else (f2 - f1) / fs
    # Chirps from their phases (not powers of w and a): exact to rounding for large k.
    k = np.arange(max(m, n), dtype=np.float64)
    wk2 = np.exp(-(1j * np.pi * scale * k**2) / m)
    awk2 = np.exp(-2j * np.pi * f1 / fs * k[:n]) * wk2[:n]
    return _bluestein(x, d, m, wk2, awk2)
