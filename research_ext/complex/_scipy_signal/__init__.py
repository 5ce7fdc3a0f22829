"""The mirrors of ``scipy.signal``, one module per family.

Convolution, chirp z-transforms, analytic signals, IIR filters, resampling, spectral estimation,
STFT and windows. Public through :mod:`research_ext.complex.signal`.
"""
