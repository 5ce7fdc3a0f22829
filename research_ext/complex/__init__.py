"""Complex-valued layers, Wirtinger calculus and scipy-style spectral ops on torch tensors."""

from research_ext.complex import fft, nn, signal
from research_ext.complex._calculus import grad_to_wirtinger, is_holomorphic, wirtinger

__all__ = [
    "fft",
    "grad_to_wirtinger",
    "is_holomorphic",
    "nn",
    "signal",
    "wirtinger",
]
