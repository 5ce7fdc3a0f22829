"""Segment set-up shared by Welch's estimators and the short-time transforms.

``csd``/``welch``/``periodogram`` and ``stft``/``spectrogram``/``istft`` all cut a signal into
overlapping, detrended, windowed segments: this module holds that set-up once (the window and
``nperseg`` with scipy's defaults, the overlap and FFT length checks, the density/spectrum
scale), the detrending, the batched segment FFT, the frequency grid, the one-sided doubling
and scipy's boundary extensions (also used by ``filtfilt``'s padding).
"""

import numbers
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from research_ext.complex._scipy_signal.windows import window_tensor
from research_ext.complex._shared.arguments import real_dtype_of
from research_ext.complex._shared.callables import call_user
from research_ext.core import check_int, check_one_of, check_positive, format_message

__all__ = [
    "Detrend",
    "SegmentPlan",
    "check_overlap",
    "detrend_function",
    "extend",
    "frequencies",
    "onesided_weights",
    "plan_segments",
    "resolve_window",
    "segment_spectra",
]

Detrend = str | bool | Callable[[torch.Tensor], torch.Tensor]


def _constant_detrend(seg: torch.Tensor) -> torch.Tensor:
    return seg - seg.mean(-1, keepdim=True)


def _linear_detrend(seg: torch.Tensor) -> torch.Tensor:
    n = seg.shape[-1]
    t = torch.arange(n, dtype=real_dtype_of(seg.dtype), device=seg.device) - (n - 1) / 2
    centred = seg - seg.mean(-1, keepdim=True)
    if n < 2:
        return centred
    slope = (centred * t).sum(-1, keepdim=True) / (t * t).sum()
    return centred - slope * t


def detrend_function(fn: str, detrend: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The segment detrending for scipy's ``detrend=`` ("constant", "linear", False, callable)."""
    if detrend is False or detrend is None:
        return None
    if callable(detrend):
        user = detrend

        def call(seg: torch.Tensor) -> torch.Tensor:
            # A numpy-written callable returns an array: no gradient flows through it.
            return call_user(user, seg, seg.dtype)

        return call
    check_one_of(fn, "detrend", detrend, ("constant", "linear", False))
    return _constant_detrend if detrend == "constant" else _linear_detrend


def resolve_window(
    fn: str, window: Any, nperseg: int | None, n: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Resolve (window, nperseg) with scipy's defaults and its shortening warning."""
    if nperseg is not None:
        if isinstance(nperseg, numbers.Integral) and not isinstance(nperseg, bool):
            nperseg = int(nperseg)  # numpy integers too, as scipy
        check_int(fn, "nperseg", nperseg)
        if nperseg < 1:
            hint = f"Parameter nperseg={nperseg} leaves a segment without samples"
            raise ValueError(format_message(fn, "nperseg", "a positive int", nperseg, hint))
    if isinstance(window, str | tuple):
        nperseg = 256 if nperseg is None else nperseg
        if nperseg > n:
            warnings.warn(
                f"{fn}: nperseg={nperseg} is greater than the signal length {n}, using nperseg={n}",
                UserWarning,
                stacklevel=4,
            )
            nperseg = n
    win = window_tensor(fn, window, nperseg, dtype, device)
    if win.shape[0] > n:
        raise ValueError(
            f"{fn}: `window` must not be longer than the signal, got len(window)={win.shape[0]} "
            f"and x.shape[dim]={n}"
        )
    return win, win.shape[0]


def check_overlap(fn: str, nperseg: int, noverlap: Any, nfft: Any, default: int) -> tuple[int, int]:
    """(noverlap, nfft) with their defaults, checked against ``nperseg`` as scipy does."""
    noverlap = default if noverlap is None else check_int(fn, "noverlap", noverlap, minimum=0)
    if noverlap >= nperseg:
        raise ValueError(
            f"{fn}: `noverlap` must be less than nperseg={nperseg}, got noverlap={noverlap}"
        )
    nfft = nperseg if nfft is None else check_int(fn, "nfft", nfft, minimum=1)
    if nfft < nperseg:
        raise ValueError(f"{fn}: `nfft` must be >= nperseg={nperseg}, got nfft={nfft}")
    return noverlap, nfft


class SegmentPlan(NamedTuple):
    """How a signal is cut into segments, and the scale of their squared FFTs."""

    window: torch.Tensor  # (nperseg,)
    nperseg: int
    noverlap: int
    nfft: int
    step: int  # nperseg - noverlap
    scale: torch.Tensor  # 1 / (fs sum w^2) ("density") or 1 / (sum w)^2 ("spectrum")


def plan_segments(
    fn: str,
    n: int,
    fs: float,
    window: Any,
    nperseg: int | None,
    noverlap: int | None,
    nfft: int | None,
    scaling: str,
    default_overlap: Callable[[int], int],
    dtype: torch.dtype,
    device: torch.device,
) -> SegmentPlan:
    """The set-up of every segment-based estimator for a signal of ``n`` samples.

    ``scaling`` is "density" or "spectrum" (checked by the caller, which names it as its own
    public function does); ``default_overlap(nperseg)`` gives the overlap when ``noverlap`` is
    None (nperseg // 2 for Welch and the STFT, nperseg // 8 for the spectrogram).
    """
    win, nperseg = resolve_window(fn, window, nperseg, n, dtype, device)
    noverlap, nfft = check_overlap(fn, nperseg, noverlap, nfft, default_overlap(nperseg))
    check_positive(fn, "fs", fs)  # after the segment arguments, scipy's order
    scale = 1.0 / (fs * (win * win).sum()) if scaling == "density" else 1.0 / win.sum() ** 2
    return SegmentPlan(win, nperseg, noverlap, nfft, nperseg - noverlap, scale)


def segment_spectra(
    x: torch.Tensor,
    win: torch.Tensor,
    nperseg: int,
    step: int,
    nfft: int,
    detrend: Callable[[torch.Tensor], torch.Tensor] | None,
    onesided: bool,
) -> torch.Tensor:
    """(..., n) -> (..., nseg, nfreq): detrended, windowed FFT of every segment."""
    seg = x.unfold(-1, nperseg, step)
    if detrend is _constant_detrend:  # (seg - mean) w in one pass: seg w - mean w
        seg = torch.addcmul(-seg.mean(-1, keepdim=True) * win, seg, win)
    else:
        if detrend is not None:
            seg = detrend(seg)
        seg = seg * win
    return torch.fft.rfft(seg, n=nfft) if onesided else torch.fft.fft(seg, n=nfft)


def frequencies(
    nfft: int, fs: float, onesided: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The FFT's frequency grid in Hz (one-sided: 0 .. fs/2)."""
    if onesided:
        return torch.fft.rfftfreq(nfft, 1.0 / fs, dtype=dtype, device=device)
    return torch.fft.fftfreq(nfft, 1.0 / fs, dtype=dtype, device=device)


def onesided_weights(
    nfreq: int, nfft: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """2 for every one-sided bin that stands for a +-f pair (all but DC and an even Nyquist)."""
    weight = torch.full((nfreq,), 2.0, dtype=dtype, device=device)
    weight[0] = 1.0
    if nfft % 2 == 0:
        weight[-1] = 1.0
    return weight


def extend(fn: str, x: torch.Tensor, n: int, kind: str) -> torch.Tensor:
    """Scipy's even/odd/constant/zero extension of the last dim by ``n`` samples each side."""
    if n < 1:
        return x
    if kind in ("even", "odd") and n > x.shape[-1] - 1:
        raise ValueError(
            f"{fn}: the boundary extension nperseg//2={n} must not exceed x.shape[dim]-1="
            f"{x.shape[-1] - 1} for boundary={kind!r}"
        )
    if kind == "zeros":
        zeros = x.new_zeros((*x.shape[:-1], n))
        return torch.cat([zeros, x, zeros], -1)
    if kind == "constant":
        return torch.cat(
            [x[..., :1].expand(*x.shape[:-1], n), x, x[..., -1:].expand(*x.shape[:-1], n)], -1
        )
    left = x[..., 1 : n + 1].flip(-1)
    right = x[..., -n - 1 : -1].flip(-1)
    if kind == "odd":
        left, right = 2 * x[..., :1] - left, 2 * x[..., -1:] - right
    return torch.cat([left, x, right], -1)
