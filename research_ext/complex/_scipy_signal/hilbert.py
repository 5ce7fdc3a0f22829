"""Analytic signals and envelopes: ``hilbert``, ``hilbert2`` and ``envelope``.

The analytic signal keeps the non-negative half of the spectrum (doubled) and drops the rest, so
only a real FFT of the input is needed: ``ifft(rfft(x) * h, n)`` pads the missing negative bins
with zeros.
"""

from typing import Any

import torch

from research_ext.complex._scipy_signal.resample import resample_freq
from research_ext.complex._shared.arguments import as_floating, normalize_dim
from research_ext.complex._shared.caching import cached
from research_ext.core import check_int, check_one_of, format_message

__all__ = ["envelope", "hilbert", "hilbert2"]


@cached
def _half_weights(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """h[k] for the n//2+1 non-negative bins: 1 at DC (and at Nyquist for even n), else 2."""
    h = torch.full((n // 2 + 1,), 2.0, dtype=torch.float64)
    h[0] = 1.0
    if n % 2 == 0:
        h[-1] = 1.0
    return h.to(dtype=dtype, device=device)


@cached
def _weights2(n: int, half: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """hilbert2's weights along one dim: 1 at DC, 2 below (n+1)//2, 0 from there (Nyquist too)."""
    h = torch.zeros(n // 2 + 1 if half else n, dtype=torch.float64)
    h[0] = 1.0
    h[1 : (n + 1) // 2] = 2.0
    return h.to(dtype=dtype, device=device)


def _check_real(fn: str, x: Any) -> torch.Tensor:
    x = as_floating(fn, "x", x)
    if x.is_complex():
        raise ValueError(f"{fn}: `x` must be real, got x.dtype={x.dtype}")
    return x


def hilbert(x: torch.Tensor, N: int | None = None, dim: int = -1) -> torch.Tensor:
    """Analytic signal x + i H(x) of a real signal, via the FFT.

    Torch implementation of `scipy.signal.hilbert`: with X the length-N DFT of ``x`` (padded or
    truncated to ``N``) the result is ifft(X * h) where h = 1 at DC and at N/2 (even N), 2 for
    the positive frequencies and 0 for the negative ones. Only the real FFT is computed.

    Differences from scipy: ``dim`` replaces ``axis``; float32 input gives complex64 (scipy
    returns complex128 for any input); integer input raises ``TypeError``. Differentiable.

    Args:
        x: real tensor (float32 or float64), any shape.
        N: number of Fourier components (default ``x.shape[dim]``).
        dim: the dim along which to transform.

    Returns:
        Complex tensor (complex64 or complex128), ``x.shape`` with ``N`` along ``dim``; its real
        part is ``x`` (padded or truncated) and its imaginary part the Hilbert transform.

    Raises:
        TypeError: ``x`` is not a tensor of an integer or float dtype; ``N`` is not an int.
        ValueError: ``x`` is complex (scipy's ValueError), ``N < 1`` or ``dim`` out of range.

    Example:
        >>> import math, torch
        >>> t = torch.arange(8, dtype=torch.float64)
        >>> z = hilbert(torch.cos(2 * math.pi * t / 8))
        >>> torch.allclose(z.imag, torch.sin(2 * math.pi * t / 8))
        True

    References:
        L. Marple, "Computing the discrete-time analytic signal via FFT", IEEE Trans. Signal
        Processing 47(9), 1999.
    """
    x = _check_real("hilbert", x)
    d = normalize_dim("hilbert", dim, max(x.ndim, 1))
    n = x.shape[d] if N is None else check_int("hilbert", "N", N, minimum=1)
    h = _half_weights(n, x.dtype, x.device)
    # Along the last dim, whatever `dim` is: the same numbers as for the transposed input.
    spectrum = torch.fft.rfft(x.movedim(d, -1).contiguous(), n=n)
    return torch.fft.ifft(spectrum.mul_(h), n=n).movedim(-1, d)


def hilbert2(
    x: torch.Tensor, N: int | tuple[int, int] | None = None, dim: tuple[int, int] = (-2, -1)
) -> torch.Tensor:
    """Two-dimensional analytic signal of a real image, via the 2-D FFT.

    Torch implementation of `scipy.signal.hilbert2`: ifft2(X * h0[:, None] * h1[None, :]) with
    h[0] = 1, h[k] = 2 for 0 < k < (N+1)//2 and 0 for the rest (Nyquist included) along each
    of the two dims; any leading dims are a batch.

    Differences from scipy: ``dim`` replaces ``axes``; float32 gives complex64; only the real
    FFT is taken along the second dim. Differentiable.

    Args:
        x: real tensor (float32 or float64); 0-d and 1-D input get leading dims of size 1.
        N: size of the transform, an int (both dims) or a pair (default: the sizes of ``x``).
        dim: the two dims to transform.

    Returns:
        Complex tensor with the sizes along ``dim`` replaced by ``N``.

    Raises:
        TypeError: ``x`` is not a tensor of an integer or float dtype.
        ValueError: ``x`` is complex (scipy's ValueError), ``N`` is not positive, or ``dim`` is
            not two distinct valid dims.

    Example:
        >>> import torch
        >>> hilbert2(torch.ones(2, 2, dtype=torch.float64)).real
        tensor([[1., 1.],
                [1., 1.]], dtype=torch.float64)
    """
    x = _check_real("hilbert2", x)
    while x.ndim < 2:
        x = x.unsqueeze(0)
    if len(dim) != 2:
        raise ValueError(format_message("hilbert2", "dim", "a pair of dims", dim))
    d0, d1 = (normalize_dim("hilbert2", d, x.ndim) for d in dim)
    if d0 == d1:
        raise ValueError(format_message("hilbert2", "dim", "two distinct dims", dim))
    if N is None:
        sizes = (x.shape[d0], x.shape[d1])
    else:
        pair = (N, N) if isinstance(N, int) else tuple(N)
        if len(pair) != 2:
            raise ValueError(format_message("hilbert2", "N", "an int or a pair of ints", N))
        sizes = tuple(check_int("hilbert2", "N", v, minimum=1) for v in pair)  # type: ignore[assignment]
    spectrum = torch.fft.fft(torch.fft.rfft(x, n=sizes[1], dim=d1), n=sizes[0], dim=d0)
    shape0, shape1 = [1] * x.ndim, [1] * x.ndim
    shape0[d0], shape1[d1] = -1, -1
    h0 = _weights2(sizes[0], False, x.dtype, x.device).view(shape0)
    h1 = _weights2(sizes[1], True, x.dtype, x.device).view(shape1)
    return torch.fft.ifft(torch.fft.ifft(spectrum * h0 * h1, dim=d0), n=sizes[1], dim=d1)


def envelope(
    z: torch.Tensor,
    bp_in: tuple[int | None, int | None] = (1, None),
    *,
    n_out: int | None = None,
    squared: bool = False,
    residual: str | None = "lowpass",
    dim: int = -1,
) -> torch.Tensor:
    """Envelope (magnitude of the band-limited analytic signal) and residual of a signal.

    Torch implementation of `scipy.signal.envelope`: the FFT bins ``bp_in`` (in units of 1/n)
    form the analytic band-pass signal z_bb whose magnitude |z_bb| (or |z_bb|^2 when
    ``squared``) is the envelope, resampled to ``n_out`` samples; ``residual`` returns what the
    band-pass left out ("lowpass": only the part below the band, "all": everything, None: none).

    Differences from scipy: ``dim`` replaces ``axis``; the dtype follows the input (float32 stays
    float32); bad arguments raise our worded ``ValueError``/``TypeError``. Differentiable.

    Args:
        z: real or complex tensor, any shape, with ``z.shape[dim] > 0``.
        bp_in: (start, stop) FFT bin indices of the pass band; None means the edge of the
            spectrum. Must satisfy -n//2 <= start < stop <= (n+1)//2.
        n_out: number of output samples (default ``n``).
        squared: return the squared envelope.
        residual: "lowpass", "all" or None.
        dim: the time dim.

    Returns:
        The envelope (real, ``n_out`` along ``dim``), or with ``residual`` set, a tensor stacking
        (envelope, residual) along a new leading dim of size 2.

    Raises:
        TypeError: ``z`` is not a tensor of an integer, float or complex dtype.
        ValueError: bad ``bp_in``, ``n_out``, ``residual`` or ``dim``.

    Example:
        >>> import math, torch
        >>> t = torch.arange(64, dtype=torch.float64) / 64
        >>> x = (1 + 0.5 * torch.cos(2 * math.pi * t)) * torch.cos(2 * math.pi * 16 * t)
        >>> env = envelope(x, residual=None)
        >>> torch.allclose(env, 1 + 0.5 * torch.cos(2 * math.pi * t))
        True
    """
    fn = "envelope"
    z = as_floating(fn, "z", z)
    d = normalize_dim(fn, dim, max(z.ndim, 1))
    n = z.shape[d]
    if n == 0:
        raise ValueError(f"{fn}: `z` must have z.shape[dim] > 0, got z.shape={tuple(z.shape)}")
    if len(bp_in) != 2 or not all(
        (isinstance(b, int) and not isinstance(b, bool)) or b is None for b in bp_in
    ):
        raise ValueError(format_message(fn, "bp_in", "a pair of ints or None", bp_in))
    n_out = n if n_out is None else check_int(fn, "n_out", n_out, minimum=1)
    check_one_of(fn, "residual", residual, ("lowpass", "all", None))
    start = bp_in[0] if bp_in[0] is not None else -(n // 2)
    stop = bp_in[1] if bp_in[1] is not None else (n + 1) // 2
    if not -n // 2 <= start < stop <= (n + 1) // 2:
        raise ValueError(
            format_message(
                fn, "bp_in", f"a pair with -n//2 <= start < stop <= (n+1)//2 (n={n})", bp_in
            )
        )
    zl = z.movedim(d, -1)
    fak = n_out / n
    weight = torch.ones(n, dtype=torch.float64)
    if zl.is_complex():
        spectrum = torch.fft.fft(zl)
    else:
        half = torch.fft.rfft(zl)
        spectrum = torch.cat([half, half.new_zeros((*half.shape[:-1], n - half.shape[-1]))], -1)
        if start > 0:
            weight[start:stop] *= 2
        elif stop > 0:
            weight[1:stop] *= 2
    spectrum = spectrum * weight.to(dtype=_real(zl), device=z.device)
    straddles = start <= 0 < stop
    if not straddles:
        band = spectrum[..., start:stop]
    else:
        band = torch.fft.fftshift(spectrum, dim=-1)[..., start + n // 2 : stop + n // 2]
    z_bb = torch.fft.ifft(band, n=n_out) * fak
    env = z_bb.abs() if not squared else z_bb.real**2 + z_bb.imag**2
    env = env.movedim(-1, d)
    if residual is None:
        return env
    mask = torch.ones(n, dtype=torch.float64)
    if not straddles:
        mask[start:stop] = 0
    else:
        mask[:stop], mask[start:] = 0, 0
    if residual == "lowpass":
        if stop > 0:
            mask[stop : (n + 1) // 2] = 0
        else:
            mask[start:], mask[0 : (n + 1) // 2] = 0, 0
    if zl.is_complex():
        res = resample_freq(spectrum * mask.to(dtype=_real(zl), device=z.device), n_out)
    else:
        m = min(n, n_out)
        if n_out != n and m % 2 == 0:
            mask[m // 2] *= 2 if n_out < n else 0.5
        res = fak * torch.fft.irfft(spectrum * mask.to(dtype=_real(zl), device=z.device), n=n_out)
    return torch.stack([env, res.movedim(-1, d)], 0)


def _real(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float32, torch.complex64) else torch.float64
