"""Caches of index and twiddle tensors, and the check for tensors seen through torch.func."""

import functools
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["cached", "is_functorch_wrapped"]


def is_functorch_wrapped(*tensors: torch.Tensor) -> bool:
    """Whether any tensor is seen through a torch.func transform (vmap, grad, jvp).

    Such a tensor may not be multiplied in place by an unwrapped one, nor written with ``out=``.
    """
    return any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def cached(builder: Callable[..., Any]) -> Callable[..., Any]:
    """Memoize a tensor builder keyed on its (hashable) arguments, e.g. (n, dtype, device)."""
    return functools.lru_cache(maxsize=256)(builder)
