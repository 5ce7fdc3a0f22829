"""DP-SGD: per-sample gradient clipping, noise, Poisson sampling and privacy accounting."""

from research_ext.privacy._tuning import tuning_epsilon

__all__ = [
    "tuning_epsilon",
]
