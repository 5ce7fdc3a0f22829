"""Torch implementation of `scipy.signal`'s spectral tools: any device, differentiable, batched.

Analytic signals (``hilbert``, ``hilbert2``, ``envelope``), convolution and correlation
(``convolve``, ``correlate``, ``fftconvolve``, ``oaconvolve``, ``correlation_lags``), spectral
estimation (``periodogram``, ``welch``, ``csd``, ``coherence``, ``spectrogram``, ``stft``,
``istft``), windows (``get_window``), chirp z-transforms (``czt``, ``zoom_fft``), resampling
(``resample``, ``resample_poly``) and IIR filtering (``lfilter``, ``lfilter_zi``, ``lfiltic``,
``sosfilt``, ``sosfilt_zi``, ``sosfiltfilt``, ``filtfilt``). Names, positional order and semantics follow scipy, with
``dim=`` for ``axis=``; results are tensors whose dtype follows the input (for the IIR filters,
the input and the coefficients together, as scipy's; windows are float64 unless asked).
Integer (and bool) tensors are taken as scipy takes integer arrays: computed in float64 (the
spectral estimators: float32 for 8- and 16-bit data, numpy's promotion with complex64), and
``convolve``/``correlate`` return the integer dtype, rounded and wrapped as numpy's sums.
The deliberate differences from scipy, as measured by scipy's own test modules, are listed in
``docs/complex_scipy_deviations.md``.

Example:
    >>> import torch
    >>> import research_ext.complex as rxc
    >>> rxc.signal.fftconvolve(torch.ones(3), torch.ones(2))
    tensor([1., 2., 2., 1.])
"""

from research_ext.complex._scipy_signal.convolve import (
    convolve,
    correlate,
    correlation_lags,
    fftconvolve,
    oaconvolve,
)
from research_ext.complex._scipy_signal.czt import czt, zoom_fft
from research_ext.complex._scipy_signal.filtfilt import filtfilt, sosfiltfilt
from research_ext.complex._scipy_signal.hilbert import envelope, hilbert, hilbert2
from research_ext.complex._scipy_signal.lfilter import lfilter, lfilter_zi, lfiltic
from research_ext.complex._scipy_signal.resample import resample, resample_poly
from research_ext.complex._scipy_signal.sos import sosfilt, sosfilt_zi
from research_ext.complex._scipy_signal.spectral import coherence, csd, periodogram, welch
from research_ext.complex._scipy_signal.stft import istft, spectrogram, stft
from research_ext.complex._scipy_signal.windows import get_window

__all__ = [
    "coherence",
    "convolve",
    "correlate",
    "correlation_lags",
    "csd",
    "czt",
    "envelope",
    "fftconvolve",
    "filtfilt",
    "get_window",
    "hilbert",
    "hilbert2",
    "istft",
    "lfilter",
    "lfilter_zi",
    "lfiltic",
    "oaconvolve",
    "periodogram",
    "resample",
    "resample_poly",
    "sosfilt",
    "sosfilt_zi",
    "sosfiltfilt",
    "spectrogram",
    "stft",
    "welch",
    "zoom_fft",
]
