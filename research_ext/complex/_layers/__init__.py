"""Complex-valued layers, one module per kind.

Activations, attention, dropout, Fourier/FNO, linear and convolution, normalisation with its
whitening kernel, pooling; their initialisers (``init``) and their shared dtype checks
(``checks``). Public through :mod:`research_ext.complex.nn`.
"""
