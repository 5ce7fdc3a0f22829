"""DP-SGD: per-sample gradient clipping, noise, Poisson sampling and privacy accounting."""

__all__: list[str] = []
