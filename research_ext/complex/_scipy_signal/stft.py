"""Short-time Fourier analysis: ``stft``, ``istft`` and ``spectrogram`` (scipy's legacy API).

Segments come from ``Tensor.unfold`` after scipy's boundary extension and padding; the inverse
overlap-adds the windowed inverse FFTs with ``torch.nn.functional.fold`` and divides by the
summed squared window (the NOLA normalization).
"""

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from research_ext.complex._scipy_signal.segments import (
    Detrend,
    check_overlap,
    detrend_function,
    extend,
    frequencies,
    onesided_weights,
    plan_segments,
    segment_spectra,
)
from research_ext.complex._scipy_signal.windows import window_tensor
from research_ext.complex._shared.arguments import (
    as_floating,
    normalize_dim,
    real_dtype_of,
)
from research_ext.core import check_one_of

__all__ = ["istft", "spectrogram", "stft"]

_BOUNDARIES = ("even", "odd", "constant", "zeros", None)


def _short_time(
    fn: str,
    x: Any,
    fs: float,
    window: Any,
    nperseg: int | None,
    noverlap: int | None,
    nfft: int | None,
    detrend: Any,
    return_onesided: bool,
    scaling: str,
    dim: int,
    boundary: str | None,
    padded: bool,
    default_overlap: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Scipy's legacy ``_spectral_helper`` in "stft" mode: (f, t, X, nfft), X (..., nseg, nfreq)."""
    x = as_floating(fn, "x", x, small_ints_single=True)
    check_one_of(fn, "boundary", boundary, _BOUNDARIES)
    detrend_fn = detrend_function(fn, detrend)
    d = normalize_dim(fn, dim, max(x.ndim, 1))
    xl = x.movedim(d, -1)
    rdtype = real_dtype_of(x.dtype)
    plan = plan_segments(
        fn,
        xl.shape[-1],
        fs,
        window,
        nperseg,
        noverlap,
        nfft,
        scaling,
        default_overlap,
        rdtype,
        x.device,
    )
    nperseg, nfft, step = plan.nperseg, plan.nfft, plan.step
    if boundary is not None:
        xl = extend(fn, xl, nperseg // 2, boundary)
    if padded:
        extra = (-(xl.shape[-1] - nperseg) % step) % nperseg
        xl = torch.cat([xl, xl.new_zeros((*xl.shape[:-1], extra))], -1)
    if x.is_complex() and return_onesided:
        warnings.warn(
            f"{fn}: input is complex, switching to return_onesided=False", UserWarning, stacklevel=3
        )
    onesided = return_onesided and not x.is_complex()
    # sqrt(scale) rides on the window, so the spectrum needs no extra pass.
    win = plan.window * plan.scale.sqrt()
    spec = segment_spectra(xl, win, nperseg, step, nfft, detrend_fn, onesided)
    nseg = spec.shape[-2]
    times = (nperseg / 2 + step * torch.arange(nseg, dtype=rdtype, device=x.device)) / fs
    if boundary is not None:
        times = times - (nperseg / 2) / fs
    freqs = frequencies(nfft, fs, onesided, rdtype, x.device)
    return freqs, times, spec, nfft


def _place(spec: torch.Tensor, d: int) -> torch.Tensor:
    """(..., nseg, nfreq) -> frequencies at ``d`` and segments last (scipy's layout)."""
    return spec.transpose(-1, -2).movedim(-2, d)


def stft(
    x: torch.Tensor,
    fs: float = 1.0,
    window: Any = "hann_periodic",
    nperseg: int = 256,
    noverlap: int | None = None,
    nfft: int | None = None,
    detrend: Detrend = False,
    return_onesided: bool = True,
    boundary: str | None = "zeros",
    padded: bool = True,
    dim: int = -1,
    scaling: str = "spectrum",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Short-time Fourier transform.

    Torch implementation of `scipy.signal.stft` (the legacy function): X[f, m] = sqrt(scale)
    FFT(w * detrend(x_ext[m h : m h + nperseg]))[f], hop h = nperseg - noverlap, where x_ext is
    ``x`` extended by nperseg // 2 samples at each end (``boundary``) and zero-padded to a whole
    number of segments (``padded``); scale = 1/(sum w)^2 ("spectrum") or 1/(fs sum w^2) ("psd").

    Differences from scipy: ``dim`` replaces ``axis``; tensors in and out; float32 gives
    complex64. Differentiable; :func:`istft` inverts it.

    Args:
        x: real or complex tensor, time along ``dim``.
        fs: sampling frequency.
        window: window spec or 1-D tensor.
        nperseg: segment length.
        noverlap: overlap (default nperseg // 2).
        nfft: FFT length (default nperseg).
        detrend: "constant", "linear", False or a callable.
        return_onesided: one-sided spectrum for real input (complex input warns and switches).
        boundary: "zeros", "even", "odd", "constant" or None.
        padded: zero-pad to a whole number of segments.
        dim: the time dim.
        scaling: "spectrum" or "psd".

    Returns:
        (f, t, Zxx): frequencies, segment times and the complex STFT of shape
        ``x.shape`` with ``dim`` replaced by (frequencies) and a new last dim of segments.

    Raises:
        TypeError: ``x`` is not a tensor of an integer, float or complex dtype.
        ValueError: bad window, overlap, nfft, boundary or scaling.

    Warns:
        UserWarning: ``nperseg`` shortened, or complex input with ``return_onesided``.

    Example:
        >>> import torch
        >>> x = torch.randn(1000, dtype=torch.float64)
        >>> f, t, z = stft(x, nperseg=64)
        >>> torch.allclose(istft(z, nperseg=64)[1][:1000], x)
        True
    """
    check_one_of("stft", "scaling", scaling, ("spectrum", "psd"))
    f, t, z, _ = _short_time(
        "stft",
        x,
        fs,
        window,
        nperseg,
        noverlap,
        nfft,
        detrend,
        return_onesided,
        "density" if scaling == "psd" else "spectrum",
        dim,
        boundary,
        padded,
        lambda n: n // 2,
    )
    return f, t, _place(z, normalize_dim("stft", dim, max(x.ndim, 1)))


def _unwrap(p: torch.Tensor, dim: int) -> torch.Tensor:
    """numpy.unwrap with the default discontinuity pi."""
    dd = p.diff(dim=dim)
    mod = torch.remainder(dd + math.pi, 2 * math.pi) - math.pi
    mod = torch.where((mod == -math.pi) & (dd > 0), torch.full_like(mod, math.pi), mod)
    correct = torch.where(dd.abs() < math.pi, torch.zeros_like(dd), mod - dd)
    first = p.narrow(dim, 0, 1)
    return torch.cat([first, p.narrow(dim, 1, p.shape[dim] - 1) + correct.cumsum(dim)], dim)


def spectrogram(
    x: torch.Tensor,
    fs: float = 1.0,
    window: Any = ("tukey_periodic", 0.25),
    nperseg: int | None = None,
    noverlap: int | None = None,
    nfft: int | None = None,
    detrend: Detrend = "constant",
    return_onesided: bool = True,
    scaling: str = "density",
    dim: int = -1,
    mode: str = "psd",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spectrogram: the un-averaged Welch periodograms of consecutive segments.

    Torch implementation of `scipy.signal.spectrogram`: S[f, m] = scale |X_m(f)|^2 for
    ``mode="psd"`` (one-sided bins doubled), or the complex STFT ("complex"), its magnitude,
    its angle, or the angle unwrapped along frequency ("phase"); noverlap defaults to
    nperseg // 8 and there is no boundary extension or padding.

    Differences from scipy: ``dim`` replaces ``axis``; tensors in and out. Differentiable.

    Args:
        x: real or complex tensor, time along ``dim``.
        fs: sampling frequency.
        window: window spec or 1-D tensor.
        nperseg: segment length (default 256, shortened with a warning).
        noverlap: overlap (default nperseg // 8).
        nfft: FFT length (default nperseg).
        detrend: "constant", "linear", False or a callable.
        return_onesided: one-sided spectrum for real input.
        scaling: "density" or "spectrum".
        dim: the time dim.
        mode: "psd", "complex", "magnitude", "angle" or "phase".

    Returns:
        (f, t, Sxx): frequencies, segment-centre times and the spectrogram with frequency at
        ``dim`` and segments in a new last dim.

    Raises:
        TypeError: ``x`` is not a tensor of an integer, float or complex dtype.
        ValueError: bad mode, window, overlap, nfft, detrend or scaling.

    Warns:
        UserWarning: ``nperseg`` shortened, or complex input with ``return_onesided``.

    Example:
        >>> import torch
        >>> f, t, s = spectrogram(torch.randn(4096), nperseg=256)
        >>> tuple(s.shape)
        (129, 18)
    """
    fn = "spectrogram"
    check_one_of(fn, "mode", mode, ("psd", "complex", "magnitude", "angle", "phase"))
    check_one_of(fn, "scaling", scaling, ("density", "spectrum"))
    f, t, z, nfft_used = _short_time(
        fn,
        x,
        fs,
        window,
        nperseg,
        noverlap,
        nfft,
        detrend,
        return_onesided,
        scaling,
        dim,
        None,
        False,
        lambda n: n // 8,
    )
    d = normalize_dim(fn, dim, max(x.ndim, 1))
    if mode == "psd":  # computed in the FFT's own layout, then placed
        s = z.real.square().addcmul_(z.imag, z.imag)
        if not x.is_complex() and return_onesided:
            s = s.mul_(onesided_weights(s.shape[-1], nfft_used, s.dtype, s.device))
        return f, t, _place(s, d)
    if mode == "magnitude":
        return f, t, _place(z.abs(), d)
    if mode == "angle":
        return f, t, _place(z.angle(), d)
    if mode == "phase":
        return f, t, _unwrap(_place(z.angle(), d), d)
    return f, t, _place(z, d)


def istft(
    Zxx: torch.Tensor,
    fs: float = 1.0,
    window: Any = "hann_periodic",
    nperseg: int | None = None,
    noverlap: int | None = None,
    nfft: int | None = None,
    input_onesided: bool = True,
    boundary: bool = True,
    time_dim: int = -1,
    freq_dim: int = -2,
    scaling: str = "spectrum",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse short-time Fourier transform by windowed overlap-add.

    Torch implementation of `scipy.signal.istft`: x = sum_m w x_m(t - m h) / sum_m w^2(t - m h),
    where x_m is the inverse FFT of segment m rescaled by sum w ("spectrum") or sqrt(fs sum w^2)
    ("psd"); with ``boundary`` the nperseg // 2 extension samples are removed.

    Differences from scipy: ``time_dim``/``freq_dim`` replace ``time_axis``/``freq_axis``;
    tensors in and out (float32 spectra give float32 signals); the NOLA check reads the window
    on the host. Differentiable.

    Args:
        Zxx: complex STFT with frequencies along ``freq_dim`` and segments along ``time_dim``.
        fs: sampling frequency.
        window: window spec or 1-D tensor (the one used by :func:`stft`).
        nperseg: segment length (default from the number of frequencies).
        noverlap: overlap (default nperseg // 2).
        nfft: FFT length (default from the number of frequencies).
        input_onesided: whether ``Zxx`` is one-sided (real output).
        boundary: whether :func:`stft` extended the signal (the extension is removed).
        time_dim: the segment dim.
        freq_dim: the frequency dim.
        scaling: "spectrum" or "psd".

    Returns:
        (t, x): sample times and the signal; time in the last dim, or, as scipy, at
            ``time_dim`` (counted without ``freq_dim``) when ``time_dim`` is not the last dim.

    Raises:
        TypeError: ``Zxx`` is not a tensor of an integer, float or complex dtype.
        ValueError: fewer than 2 dims, equal dims, bad nperseg/noverlap/nfft/window/scaling.

    Warns:
        UserWarning: the NOLA condition fails (the STFT may not be invertible).

    Example:
        >>> import torch
        >>> x = torch.randn(512, dtype=torch.float64)
        >>> t, y = istft(stft(x, nperseg=32)[2], nperseg=32)
        >>> torch.allclose(y, x)
        True
    """
    fn = "istft"
    Zxx = as_floating(fn, "Zxx", Zxx)
    check_one_of(fn, "scaling", scaling, ("spectrum", "psd"))
    if Zxx.ndim < 2:
        raise ValueError(f"{fn}: `Zxx` must have at least 2 dims, got Zxx.shape={tuple(Zxx.shape)}")
    td = normalize_dim(fn, time_dim, Zxx.ndim, "time_dim")
    fd = normalize_dim(fn, freq_dim, Zxx.ndim, "freq_dim")
    if td == fd:
        raise ValueError(f"{fn}: `time_dim` and `freq_dim` must differ, got both {time_dim}")
    z = Zxx.movedim((fd, td), (-2, -1))
    if not z.is_complex():
        z = torch.complex(z, torch.zeros_like(z))
    nseg = z.shape[-1]
    n_default = 2 * (z.shape[-2] - 1) if input_onesided else z.shape[-2]
    nperseg = n_default if nperseg is None else nperseg
    if not isinstance(nperseg, int) or nperseg < 1:
        raise ValueError(f"{fn}: `nperseg` must be a positive int, got nperseg={nperseg!r}")
    if nfft is None:
        nfft = nperseg if input_onesided and nperseg == n_default + 1 else n_default
    noverlap, nfft = check_overlap(fn, nperseg, noverlap, nfft, nperseg // 2)
    step = nperseg - noverlap
    rdtype = real_dtype_of(z.dtype)
    win = window_tensor(fn, window, nperseg, rdtype, z.device)
    frames = (
        torch.fft.irfft(z, n=nfft, dim=-2) if input_onesided else torch.fft.ifft(z, n=nfft, dim=-2)
    )
    frames = frames[..., :nperseg, :]
    if scaling == "spectrum":
        frames = frames * win.sum()
    else:
        frames = frames * torch.sqrt(fs * (win * win).sum())
    frames = frames * win[:, None]
    length = nperseg + (nseg - 1) * step
    batch = frames.shape[:-2]

    def overlap_add(f: torch.Tensor) -> torch.Tensor:
        flat = f.reshape(-1, nperseg, nseg)
        out = F.fold(flat, output_size=(1, length), kernel_size=(1, nperseg), stride=(1, step))
        return out.reshape(*batch, length)

    x = (
        torch.complex(overlap_add(frames.real), overlap_add(frames.imag))
        if frames.is_complex()
        else overlap_add(frames)
    )
    wsq = (win * win)[None, :, None].expand(1, nperseg, nseg)
    norm = F.fold(wsq, output_size=(1, length), kernel_size=(1, nperseg), stride=(1, step)).reshape(
        length
    )
    if boundary:
        x = x[..., nperseg // 2 : length - nperseg // 2]
        norm = norm[nperseg // 2 : length - nperseg // 2]
    if bool((norm.detach().cpu() <= 1e-10).any()):
        hint = "" if boundary else " Possibly due to missing boundary"
        warnings.warn(
            f"{fn}: NOLA condition failed, STFT may not be invertible.{hint}",
            UserWarning,
            stacklevel=2,
        )
    x = x / torch.where(norm > 1e-10, norm, torch.ones_like(norm))
    times = torch.arange(x.shape[-1], dtype=rdtype, device=z.device) / fs
    if x.ndim > 1 and td != Zxx.ndim - 1:  # scipy puts the time axis back where it was
        x = x.movedim(-1, td - 1 if fd < td else td)
    return times, x
