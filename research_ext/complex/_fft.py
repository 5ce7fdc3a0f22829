"""Shared plumbing of the spectral ops: argument checks, dim handling, cached index tensors.

Also :func:`next_fast_len`, the FFT-friendly length search every FFT-based op uses.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from research_ext.core import check_int, format_message

__all__ = [
    "cached",
    "check_real_or_complex",
    "next_fast_len",
    "normalize_dim",
    "normalize_dims",
    "pad_or_trim",
    "real_dtype_of",
]

NORMS = (None, "backward", "ortho", "forward")


def check_real_or_complex(fn: str, name: str, x: Any, *, complex_ok: bool = True) -> torch.Tensor:
    """Raise unless ``x`` is a floating (or complex) tensor; return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(format_message(fn, name, "a torch.Tensor", type(x).__name__))
    ok = x.dtype in (torch.float32, torch.float64) or (
        complex_ok and x.dtype in (torch.complex64, torch.complex128)
    )
    if not ok:
        kinds = "float32, float64, complex64 or complex128" if complex_ok else "float32 or float64"
        raise TypeError(f"{fn}: `{name}` must have dtype {kinds}, got {name}.dtype={x.dtype}")
    return x


def real_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """The real dtype with the precision of ``dtype`` (complex64 -> float32)."""
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def normalize_dim(fn: str, dim: Any, ndim: int, name: str = "dim") -> int:
    """Check ``dim`` against a tensor of ``ndim`` dims and return it as a non-negative int."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(format_message(fn, name, "an int", dim))
    if not -ndim <= dim < ndim:
        raise ValueError(format_message(fn, name, f"in [{-ndim}, {ndim - 1}] for ndim={ndim}", dim))
    return dim % ndim


def normalize_dims(fn: str, dims: Any, ndim: int, name: str = "dim") -> tuple[int, ...]:
    """Check a sequence of unique dims (or None = all dims); return them non-negative."""
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, int) and not isinstance(dims, bool):
        dims = (dims,)
    if not isinstance(dims, Sequence):
        raise TypeError(format_message(fn, name, "an int, a sequence of ints or None", dims))
    out = tuple(normalize_dim(fn, d, ndim, name) for d in dims)
    if len(set(out)) != len(out):
        raise ValueError(format_message(fn, name, "unique dims", dims))
    return out


def pad_or_trim(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Zero-pad or truncate ``x`` to length ``n`` along ``dim`` (scipy's ``n=`` convention)."""
    size = x.shape[dim]
    if n == size:
        return x
    if n < size:
        return x.narrow(dim, 0, n)
    shape = list(x.shape)
    shape[dim] = n - size
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def cached(builder: Callable[..., Any]) -> Callable[..., Any]:
    """Memoize a tensor builder keyed on its (hashable) arguments, e.g. (n, dtype, device)."""
    return functools.lru_cache(maxsize=256)(builder)


def _smallest_at_least(target: int, primes: tuple[int, ...]) -> int:
    best = 2 ** math.ceil(math.log2(target))
    # Enumerate products of the odd primes, then complete with the smallest power of two.
    stack = [(1, 0)]
    while stack:
        value, start = stack.pop()
        if value >= target:
            best = min(best, value)
            continue
        power2 = 1
        while value * power2 < target:
            power2 *= 2
        best = min(best, value * power2)
        for i in range(start, len(primes)):
            stack.append((value * primes[i], i))
    return best


def next_fast_len(target: int, real: bool = False) -> int:
    """Smallest FFT-friendly length ``>= target``.

    Torch implementation of `scipy.fft.next_fast_len`: the smallest 11-smooth integer (5-smooth
    when ``real=True``) that is at least ``target``. Differences from scipy: none in the returned
    value; it is pure Python (no tensor involved) and ``real`` is keyword or positional as in scipy.

    Args:
        target: the minimal length, a positive int.
        real: whether the FFT is a real one (``rfft``), for which scipy prefers 5-smooth lengths.

    Returns:
        The length, an int ``n >= target`` whose prime factors are all <= 11 (or <= 5).

    Raises:
        TypeError: ``target`` is not an int.
        ValueError: ``target`` is < 1.

    Example:
        >>> next_fast_len(1021), next_fast_len(1021, real=True)
        (1024, 1024)
        >>> next_fast_len(97)
        98
    """
    check_int("next_fast_len", "target", target, minimum=1)
    if target <= 6:
        return target
    return _smallest_at_least(target, (3, 5) if real else (3, 5, 7, 11))
