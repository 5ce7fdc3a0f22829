"""Input and dtype checks shared by the complex layers."""

import torch
from torch import Tensor

from research_ext.core import format_message

__all__ = ["complex_dtype_for", "real_dtype_for", "require_complex", "split_apply"]

_TO_COMPLEX = {
    torch.float16: torch.complex32,
    torch.float32: torch.complex64,
    torch.float64: torch.complex128,
}


def require_complex(fn: str, x: object, name: str = "input") -> Tensor:
    """Raise ``TypeError`` unless ``x`` is a complex tensor; return it."""
    if not isinstance(x, Tensor):
        raise TypeError(format_message(fn, name, "a complex tensor", type(x).__name__))
    if not x.is_complex():
        raise TypeError(
            f"{fn}: `{name}` must have a complex dtype, got {name}.dtype={x.dtype}; "
            "convert real data with `x.to(torch.complex64)` (or complex128) first"
        )
    return x


def complex_dtype_for(fn: str, dtype: torch.dtype | None) -> torch.dtype:
    """Resolve a layer's parameter dtype: complex as given, or the complex partner of a real one."""
    if dtype is None:
        dtype = torch.get_default_dtype()
    if dtype.is_complex:
        return dtype
    if dtype in _TO_COMPLEX:
        return _TO_COMPLEX[dtype]
    raise TypeError(format_message(fn, "dtype", "a floating or complex torch dtype", dtype))


def real_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """Real dtype matching a complex one (complex64 -> float32, complex128 -> float64)."""
    return torch.empty((), dtype=dtype).real.dtype if dtype.is_complex else dtype


def split_apply(fn, x: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    """Apply a real map to the real and imaginary parts separately."""
    return torch.complex(fn(x.real), fn(x.imag))
