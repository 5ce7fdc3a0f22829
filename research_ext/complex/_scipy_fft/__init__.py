"""The mirrors of ``scipy.fft`` that torch lacks.

The DCT/DST family (``dct``) over the O(n log n) real-to-real kernels (``r2r``). Public through
:mod:`research_ext.complex.fft`.
"""
