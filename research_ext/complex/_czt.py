"""Chirp z-transform and zoom FFT by Bluestein's algorithm (three FFTs of a fast length)."""

import cmath
import math
from collections.abc import Sequence

import torch

from research_ext.complex._fft import check_real_or_complex, next_fast_len, normalize_dim
from research_ext.core import check_int, check_positive, format_message

__all__ = ["czt", "zoom_fft"]


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
        TypeError: ``x`` is not a float/complex tensor.
        ValueError: ``m < 1`` or ``dim`` out of range.

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
    check_real_or_complex(fn, "x", x)
    d = normalize_dim(fn, dim, max(x.ndim, 1))
    n = x.shape[d]
    m = n if m is None else check_int(fn, "m", m, minimum=1)
    if n < 1:
        raise ValueError(f"{fn}: `x` must not be empty along `dim`, got x.shape={tuple(x.shape)}")
    w = cmath.exp(-2j * math.pi / m) if w is None else complex(w)
    a = complex(a)
    if w == 0 or a == 0:
        raise ValueError(format_message(fn, "w" if w == 0 else "a", "non-zero", w if w == 0 else a))
    cdtype, device = _complex_dtype(x), x.device
    length = next_fast_len(n + m - 1)
    k = torch.arange(max(m, n), dtype=torch.float64, device=device)
    wt = torch.tensor(w, dtype=torch.complex128, device=device)
    wk2 = wt ** (k**2 / 2)
    awk2 = (torch.tensor(a, dtype=torch.complex128, device=device) ** -k[:n]) * wk2[:n]
    chirp = torch.cat([(1 / wk2[:m]), (1 / wk2[1:n]).flip(0)]) if n > 1 else 1 / wk2[:m]
    chirp = torch.cat([chirp[:m], chirp.new_zeros(length - m - (n - 1)), chirp[m:]])
    spectrum = torch.fft.fft(chirp.to(cdtype))
    xl = x.movedim(d, -1).to(cdtype)
    y = torch.fft.ifft(torch.fft.fft(xl * awk2.to(cdtype), n=length) * spectrum)
    return (y[..., :m] * wk2[:m].to(cdtype)).movedim(-1, d)


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
        TypeError: ``x`` is not a float/complex tensor.
        ValueError: ``fn`` is not a scalar or pair, ``m < 1``, or ``fs <= 0``.

    Example:
        >>> import torch
        >>> x = torch.randn(8, dtype=torch.float64)
        >>> torch.allclose(zoom_fft(x, [0, 2]), torch.fft.fft(x))
        True
    """
    name = "zoom_fft"
    check_real_or_complex(name, "x", x)
    check_positive(name, "fs", fs)
    d = normalize_dim(name, dim, max(x.ndim, 1))
    m = x.shape[d] if m is None else check_int(name, "m", m, minimum=1)
    if isinstance(fn, int | float):
        f1, f2 = 0.0, float(fn)
    elif len(fn) == 2:
        f1, f2 = float(fn[0]), float(fn[1])
    else:
        raise ValueError(format_message(name, "fn", "a scalar or a pair (f1, f2)", fn))
    scale = (f2 - f1) * m / (fs * (m - 1)) if endpoint and m > 1 else (f2 - f1) / fs
    w = cmath.exp(-2j * math.pi * scale / m)
    a = cmath.exp(2j * math.pi * f1 / fs)
    return czt(x, m, w, a, dim=d)
