"""Spectral estimation by Welch's method: ``csd``, ``welch``, ``periodogram``, ``coherence``.

All of them cut the signal into overlapping segments with ``Tensor.unfold`` (a strided view, no
copy), detrend and window each segment, and take one batched real FFT, so a whole batch of
signals costs a single FFT call. The conventions (scaling, one-sided doubling, median bias,
boundary extension, padding, time grids) are scipy's.
"""

from typing import Any

import torch

from research_ext.complex._scipy_signal.segments import (
    Detrend,
    detrend_function,
    frequencies,
    onesided_weights,
    plan_segments,
    segment_spectra,
)
from research_ext.complex._shared.arguments import (
    as_floating,
    normalize_dim,
    real_dtype_of,
)
from research_ext.core import check_one_of

__all__ = ["coherence", "csd", "periodogram", "welch"]


def _median_bias(n: int) -> float:
    return 1.0 + sum(1.0 / (2 * k + 1) - 1.0 / (2 * k) for k in range(1, (n - 1) // 2 + 1))


def _cross(
    fn: str,
    x: Any,
    y: Any,
    fs: float,
    window: Any,
    nperseg: int | None,
    noverlap: int | None,
    nfft: int | None,
    detrend: Any,
    return_onesided: bool,
    scaling: str,
    dim: int,
    average: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Welch-averaged cross spectral density; ``y is None`` means the auto spectrum of x."""
    same = y is x
    x = as_floating(fn, "x", x, small_ints_single=True)
    if y is not None:
        y = x if same else as_floating(fn, "y", y, small_ints_single=True)
    check_one_of(fn, "scaling", scaling, ("density", "spectrum"))
    check_one_of(fn, "average", average, ("mean", "median"))
    detrend_fn = detrend_function(fn, detrend)
    if y is x:  # scipy's same-data case: the (real) auto spectrum
        y = None
    d = normalize_dim(fn, dim, max(x.ndim, 1))
    xl = x.movedim(d, -1) if x.ndim else x.reshape(1)
    yl = None
    if y is None and x.numel() == 0:  # scipy: empty in, empty out (shaped like x)
        empty = x.new_empty(x.shape, dtype=real_dtype_of(x.dtype))
        return empty, empty
    if y is not None:
        yl = y.movedim(normalize_dim(fn, dim, max(y.ndim, 1)), -1) if y.ndim else y.reshape(1)
        try:  # the dims outside `dim` broadcast, whatever each input's number of dims
            outer = torch.broadcast_shapes(xl.shape[:-1], yl.shape[:-1])
        except RuntimeError as err:
            raise ValueError(
                f"{fn}: `x` and `y` must broadcast outside `dim` (x and y cannot be broadcast "
                f"together otherwise), got x.shape={tuple(x.shape)} and y.shape={tuple(y.shape)}"
            ) from err
        if xl.numel() == 0 or yl.numel() == 0:
            rdtype = real_dtype_of(torch.promote_types(x.dtype, y.dtype))
            shape = (*outer, min(xl.shape[-1], yl.shape[-1]))
            empty = x.new_empty(shape, dtype=rdtype).movedim(-1, dim if len(shape) > 1 else -1)
            return empty, empty
        n = max(xl.shape[-1], yl.shape[-1])
        xl = (
            torch.nn.functional.pad(xl, (0, n - xl.shape[-1]))
            if not xl.is_complex()
            else _zpad(xl, n)
        )
        yl = (
            torch.nn.functional.pad(yl, (0, n - yl.shape[-1]))
            if not yl.is_complex()
            else _zpad(yl, n)
        )
    n = xl.shape[-1]
    rdtype = real_dtype_of(xl.dtype if yl is None else torch.result_type(xl, yl))
    plan = plan_segments(
        fn, n, fs, window, nperseg, noverlap, nfft, scaling, lambda m: m // 2, rdtype, x.device
    )
    onesided = return_onesided and not xl.is_complex() and (yl is None or not yl.is_complex())
    cut = (plan.window, plan.nperseg, plan.step, plan.nfft, detrend_fn, onesided)
    fx = segment_spectra(xl, *cut)
    if yl is None:
        p = fx.real.square().addcmul_(fx.imag, fx.imag)
    else:
        p = fx.conj() * segment_spectra(yl, *cut)
    # Scaling and one-sided doubling commute with the mean and the median: apply them after
    # averaging, on the (..., nfreq) result instead of every segment.
    if average == "mean" or p.shape[-2] == 1:
        p = p.mean(-2)
    elif p.is_complex():
        bias = _median_bias(p.shape[-2])
        p = torch.complex(_median(p.real), _median(p.imag)) / bias
    else:
        p = _median(p) / _median_bias(p.shape[-2])
    if onesided:
        p = p * (onesided_weights(p.shape[-1], plan.nfft, rdtype, x.device) * plan.scale)
    else:
        p = p * plan.scale
    freqs = frequencies(plan.nfft, fs, onesided, rdtype, x.device)
    return freqs, p.movedim(-1, d)


def _median(p: torch.Tensor) -> torch.Tensor:
    """Numpy's median over dim -2 (the mean of the two middle values for an even count)."""
    return p.quantile(0.5, dim=-2) if p.shape[-2] % 2 == 0 else p.median(-2).values


def _zpad(x: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([x, x.new_zeros((*x.shape[:-1], n - x.shape[-1]))], -1)


def csd(
    x: torch.Tensor,
    y: torch.Tensor,
    fs: float = 1.0,
    window: Any = "hann_periodic",
    nperseg: int | None = None,
    noverlap: int | None = None,
    nfft: int | None = None,
    detrend: Detrend = "constant",
    return_onesided: bool = True,
    scaling: str = "density",
    dim: int = -1,
    average: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross power spectral density of ``x`` and ``y`` by Welch's method.

    Torch implementation of `scipy.signal.csd`: P_xy(f) = scale * avg_s conj(X_s(f)) Y_s(f) over
    the detrended, windowed segments s of length ``nperseg`` (hop nperseg - noverlap), with
    scale = 1 / (fs sum w^2) ("density") or 1 / (sum w)^2 ("spectrum"), one-sided bins (other
    than DC and Nyquist) doubled, and "median" averaging divided by the median bias.

    Differences from scipy: ``dim`` replaces ``axis``; tensors in, tensors out (the frequencies on
    the input's device, in its real dtype); complex ``y`` also switches to two-sided output.
    Differentiable in ``x`` and ``y``.

    Args:
        x: real or complex tensor, time along ``dim``.
        y: tensor broadcasting with ``x`` outside ``dim`` (the shorter signal is zero-padded);
            ``y`` the very tensor ``x`` gives the real auto spectrum, as scipy. An empty input
            gives empty results, as scipy.
        fs: sampling frequency.
        window: window spec for :func:`get_window` or a 1-D window tensor.
        nperseg: segment length (default 256, shortened with a warning to the signal length).
        noverlap: overlap between segments (default nperseg // 2).
        nfft: FFT length (default nperseg).
        detrend: "constant", "linear", False or a callable on the (..., nperseg) segments
            (a callable written for numpy may return an array: it is taken back as a tensor).
        return_onesided: one-sided spectrum for real input.
        scaling: "density" (V^2/Hz) or "spectrum" (V^2).
        dim: the time dim.
        average: "mean" or "median".

    Returns:
        (f, Pxy): the frequencies (1-D) and the cross spectrum with frequency along ``dim``.

    Raises:
        TypeError: an input is not a tensor of an integer, float or complex dtype.
        ValueError: bad ``noverlap`` (>= nperseg), ``nfft`` (< nperseg), window, scaling,
            average, detrend, or shapes that do not broadcast.

    Warns:
        UserWarning: ``nperseg`` is larger than the signal and was shortened.

    Example:
        >>> import torch
        >>> x = torch.randn(4096, dtype=torch.float64)
        >>> f, p = csd(x, x, nperseg=64)
        >>> torch.allclose(p.real, welch(x, nperseg=64)[1])
        True
    """
    return _cross(
        "csd",
        x,
        y,
        fs,
        window,
        nperseg,
        noverlap,
        nfft,
        detrend,
        return_onesided,
        scaling,
        dim,
        average,
    )


def welch(
    x: torch.Tensor,
    fs: float = 1.0,
    window: Any = "hann_periodic",
    nperseg: int | None = None,
    noverlap: int | None = None,
    nfft: int | None = None,
    detrend: Detrend = "constant",
    return_onesided: bool = True,
    scaling: str = "density",
    dim: int = -1,
    average: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Power spectral density of ``x`` by Welch's method (averaged modified periodograms).

    Torch implementation of `scipy.signal.welch`: P_xx(f) = scale * avg_s |X_s(f)|^2, the auto
    spectrum of :func:`csd` (same parameters and scaling).

    Differences from scipy: ``dim`` replaces ``axis``; tensors in and out (float32 stays
    float32). Differentiable.

    Args:
        x: real or complex tensor, time along ``dim``.
        fs: sampling frequency.
        window: window spec or 1-D window tensor.
        nperseg: segment length (default 256, shortened with a warning).
        noverlap: overlap (default nperseg // 2).
        nfft: FFT length (default nperseg).
        detrend: "constant", "linear", False or a callable.
        return_onesided: one-sided spectrum for real input.
        scaling: "density" or "spectrum".
        dim: the time dim.
        average: "mean" or "median".

    Returns:
        (f, Pxx): frequencies and the real power spectrum with frequency along ``dim``.

    Raises:
        TypeError: ``x`` is not a tensor of an integer, float or complex dtype.
        ValueError: as :func:`csd`.

    Warns:
        UserWarning: ``nperseg`` is larger than the signal and was shortened.

    Example:
        >>> import torch
        >>> f, p = welch(torch.randn(8192, dtype=torch.float64), fs=2.0, nperseg=128)
        >>> bool(abs(p.mean() - 1.0) < 0.1)  # unit white noise: density 2 / fs
        True

    References:
        P. Welch, "The use of fast Fourier transform for the estimation of power spectra",
        IEEE Trans. Audio Electroacoustics 15(2), 1967.
    """
    return _cross(
        "welch",
        x,
        None,
        fs,
        window,
        nperseg,
        noverlap,
        nfft,
        detrend,
        return_onesided,
        scaling,
        dim,
        average,
    )


def periodogram(
    x: torch.Tensor,
    fs: float = 1.0,
    window: Any = "boxcar",
    nfft: int | None = None,
    detrend: Detrend = "constant",
    return_onesided: bool = True,
    scaling: str = "density",
    dim: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Power spectral density of ``x`` from a single (windowed) segment.

    Torch implementation of `scipy.signal.periodogram`: Welch's estimate with one segment
    spanning the whole signal (truncated to ``nfft`` when ``nfft`` is shorter, zero-padded
    when longer).

    Differences from scipy: ``dim`` replaces ``axis``; tensors in and out. Differentiable.

    Args:
        x: real or complex tensor, time along ``dim``.
        fs: sampling frequency.
        window: window spec or 1-D tensor (default "boxcar"; None also means boxcar).
        nfft: FFT length (default the signal length).
        detrend: "constant", "linear", False or a callable.
        return_onesided: one-sided spectrum for real input.
        scaling: "density" or "spectrum".
        dim: the time dim.

    Returns:
        (f, Pxx): frequencies and the power spectrum with frequency along ``dim``.

    Raises:
        TypeError: ``x`` is not a tensor of an integer, float or complex dtype.
        ValueError: a window whose length differs from the segment, or as :func:`welch`.

    Example:
        >>> import torch
        >>> f, p = periodogram(torch.tensor([1.0, -1.0, 1.0, -1.0]), scaling="spectrum")
        >>> p
        tensor([0., 0., 1.])
    """
    x = as_floating("periodogram", "x", x, small_ints_single=True)
    if x.numel() == 0:  # scipy: empty in, empty out (shaped like x)
        empty = x.new_empty(x.shape, dtype=real_dtype_of(x.dtype))
        return empty, empty
    d = normalize_dim("periodogram", dim, max(x.ndim, 1))
    n = x.shape[d]
    window = "boxcar" if window is None else window
    if nfft is None:
        nperseg = n
    elif nfft >= n:
        nperseg = n
    else:
        x = x.narrow(d, 0, nfft)
        nperseg, nfft = nfft, None
    if isinstance(window, torch.Tensor) and window.numel() != nperseg:
        raise ValueError(
            f"periodogram: `window` must have the segment length {nperseg} (the size of the window "
            f"must be the same size of the input on the specified axis), got "
            f"len(window)={window.numel()}"
        )
    return _cross(
        "periodogram",
        x,
        None,
        fs,
        window,
        nperseg,
        0,
        nfft,
        detrend,
        return_onesided,
        scaling,
        dim,
        "mean",
    )


def coherence(
    x: torch.Tensor,
    y: torch.Tensor,
    fs: float = 1.0,
    window: Any = "hann_periodic",
    nperseg: int | None = None,
    noverlap: int | None = None,
    nfft: int | None = None,
    detrend: Detrend = "constant",
    dim: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude-squared coherence C_xy = |P_xy|^2 / (P_xx P_yy) by Welch's method.

    Torch implementation of `scipy.signal.coherence` (the parameters of :func:`csd`).

    Differences from scipy: ``dim`` replaces ``axis``; tensors in and out. Differentiable.

    Args:
        x: real or complex tensor, time along ``dim``.
        y: tensor broadcasting with ``x`` outside ``dim``.
        fs: sampling frequency.
        window: window spec or 1-D tensor.
        nperseg: segment length.
        noverlap: overlap.
        nfft: FFT length.
        detrend: "constant", "linear", False or a callable.
        dim: the time dim.

    Returns:
        (f, Cxy): frequencies and the coherence in [0, 1] with frequency along ``dim``.

    Raises:
        TypeError: an input is not a tensor of an integer, float or complex dtype.
        ValueError: as :func:`csd`.

    Example:
        >>> import torch
        >>> x = torch.randn(2048, dtype=torch.float64)
        >>> f, c = coherence(x, 2 * x, nperseg=128)
        >>> torch.allclose(c, torch.ones_like(c))
        True
    """
    args = (fs, window, nperseg, noverlap, nfft, detrend)
    f, pxx = welch(x, *args, dim=dim)
    _, pyy = welch(y, *args, dim=dim)
    _, pxy = csd(x, y, *args, dim=dim)
    return f, (pxy.real**2 + pxy.imag**2) / pxx / pyy
