"""Argument checks shared by the scipy mirrors: dtypes, dims, ``n=`` padding, ``norm=`` names."""

from collections.abc import Sequence
from typing import Any

import torch

from research_ext.core import format_message

__all__ = [
    "NORMS",
    "as_floating",
    "check_real_or_complex",
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


def as_floating(fn: str, name: str, x: Any, *, small_ints_single: bool = False) -> torch.Tensor:
    """``x`` as a floating (or complex) tensor: integer and bool tensors become float64.

    Float64 is scipy's first step for integer data (``np.result_type(x, float)``); with
    ``small_ints_single`` bool and 8/16-bit integers become float32, as numpy promotes them
    with complex64 (scipy's spectral estimators). Float16 and bfloat16 raise ``TypeError``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(format_message(fn, name, "a torch.Tensor", type(x).__name__))
    if not (x.is_floating_point() or x.is_complex()):
        single = small_ints_single and x.element_size() <= 2
        return x.to(torch.float32 if single else torch.float64)
    if x.dtype not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        kinds = "an integer, bool, float32, float64, complex64 or complex128 dtype"
        raise TypeError(f"{fn}: `{name}` must have {kinds}, got {name}.dtype={x.dtype}")
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
