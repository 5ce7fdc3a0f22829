"""Torch implementation of `scipy.fft`: DCT/DST of types I-IV, n-d variants and helpers.

The real-to-real transforms (``dct``, ``idct``, ``dst``, ``idst`` and their n-d forms) run in
O(n log n) through torch's real FFT, on any device, for float32/float64/complex64/complex128
input of any batch shape, and autograd differentiates them exactly. ``dim=`` replaces scipy's
``axis=``/``axes=``. The complex-to-complex transforms are torch's own :mod:`torch.fft` functions
(same positional order as scipy: ``x, n, dim, norm``), re-exported unchanged so they cost nothing.

Example:
    >>> import torch
    >>> import research_ext.complex as rxc
    >>> rxc.fft.dct(torch.ones(4, dtype=torch.float64), norm="ortho").round(decimals=12)
    tensor([2., 0., 0., 0.], dtype=torch.float64)
"""

from torch.fft import (
    fft,
    fft2,
    fftfreq,
    fftn,
    fftshift,
    hfft,
    ifft,
    ifft2,
    ifftn,
    ifftshift,
    ihfft,
    irfft,
    irfft2,
    irfftn,
    rfft,
    rfft2,
    rfftfreq,
    rfftn,
)

from research_ext.complex._scipy_fft.dct import dct, dctn, dst, dstn, idct, idctn, idst, idstn
from research_ext.complex._shared.fft_lengths import next_fast_len

__all__ = [
    "dct",
    "dctn",
    "dst",
    "dstn",
    "fft",
    "fft2",
    "fftfreq",
    "fftn",
    "fftshift",
    "hfft",
    "idct",
    "idctn",
    "idst",
    "idstn",
    "ifft",
    "ifft2",
    "ifftn",
    "ifftshift",
    "ihfft",
    "irfft",
    "irfft2",
    "irfftn",
    "next_fast_len",
    "rfft",
    "rfft2",
    "rfftfreq",
    "rfftn",
]
