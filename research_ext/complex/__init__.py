"""Complex-valued layers, Wirtinger calculus and scipy-style spectral ops on torch tensors."""

__all__: list[str] = []
