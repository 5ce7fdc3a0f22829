"""Complex-valued layers, Wirtinger calculus and scipy-style spectral ops on torch tensors."""

from research_ext.complex import nn
from research_ext.complex._calculus import grad_to_wirtinger, is_holomorphic, wirtinger

__all__ = [
    "grad_to_wirtinger",
    "is_holomorphic",
    "nn",
    "wirtinger",
]
