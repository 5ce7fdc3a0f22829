"""Public DCT/DST API (scipy.fft's names, arguments and normalizations) over the ``r2r`` kernels."""

import operator
import textwrap
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from research_ext.complex._scipy_fft.r2r import r2r_last
from research_ext.complex._shared.arguments import (
    NORMS,
    check_real_or_complex,
    normalize_dim,
    normalize_dims,
    pad_or_trim,
)
from research_ext.core import check_int, check_one_of, format_message

__all__ = ["dct", "dctn", "dst", "dstn", "idct", "idctn", "idst", "idstn"]

_INVERSE_TYPE = {1: 1, 2: 3, 3: 2, 4: 4}
_INVERSE_NORM = {"backward": "forward", "forward": "backward", "ortho": "ortho"}


def _as_index(value: Any) -> Any:
    """Integer forms scipy takes (numpy integers, 0-d int tensors) as an int; others as given."""
    if value is None or isinstance(value, bool | int) or not hasattr(value, "__index__"):
        return value
    if getattr(value, "ndim", 0) > 0 and hasattr(value, "tolist"):  # a 1-d numpy array of sizes
        return tuple(operator.index(v) for v in value.tolist())
    return operator.index(value)


def _widen_half(x: Any) -> Any:
    """float16/bfloat16 input is transformed in float32, as scipy.fft does for float16."""
    if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16):
        return x.to(torch.float32)
    return x


def _check(fn: str, x: Any, type: Any, norm: Any, orthogonalize: Any) -> tuple[str, bool]:
    check_real_or_complex(fn, "x", x)
    check_one_of(fn, "type", type, (1, 2, 3, 4))
    if isinstance(type, bool):
        raise TypeError(format_message(fn, "type", "an int in 1, 2, 3, 4", type))
    check_one_of(fn, "norm", norm, NORMS)
    if orthogonalize is not None and not isinstance(orthogonalize, bool):
        raise TypeError(format_message(fn, "orthogonalize", "a bool or None", orthogonalize))
    norm = norm or "backward"
    return norm, (norm == "ortho") if orthogonalize is None else orthogonalize


def _apply(
    fn: str,
    kind: str,
    x: torch.Tensor,
    type: int,
    sizes: tuple[int | None, ...],
    dims: tuple[int, ...],
    norm: str,
    ortho: bool,
) -> torch.Tensor:
    """Transform ``x`` along each of ``dims`` (already checked) with lengths ``sizes``."""
    for n in sizes:
        if n is not None:
            check_int(fn, "n", n, minimum=1)
    is_complex = x.is_complex()
    if is_complex:  # real coefficients: transform the real and imaginary parts as one batch
        x = torch.view_as_real(x).movedim(-1, 0)
        dims = tuple(d + 1 for d in dims)
    for n, d in zip(sizes, dims, strict=True):
        length = x.shape[d] if n is None else n
        if length < 2 and (kind, type) == ("dct", 1):
            raise ValueError(
                format_message(fn, "n", "an int >= 2 for type 1 (the length of the transform)", n)
                if n is not None
                else f"{fn}: type 1 needs at least 2 points along dim, got x.shape[{d}]={length}"
            )
        if length < 1:
            raise ValueError(f"{fn}: cannot transform an empty dim, got x.shape={tuple(x.shape)}")
        last = d == x.ndim - 1  # the common case: no dim shuffling (each op costs microseconds)
        y = x if last else x.movedim(d, -1)
        if length != y.shape[-1]:
            y = pad_or_trim(y, length, -1)
        y = r2r_last(y, kind, type, norm, ortho)
        x = y if last else y.movedim(-1, d)
    return torch.complex(x[0], x[1]) if is_complex else x


def _one_dim(
    fn: str, kind: str, inverse: bool, x: Any, type: Any, n: Any, dim: Any, norm: Any, orth: Any
) -> torch.Tensor:
    x, n, dim = _widen_half(x), _as_index(n), _as_index(dim)
    norm_, ortho = _check(fn, x, type, norm, orth)
    if inverse:
        type, norm_ = _INVERSE_TYPE[type], _INVERSE_NORM[norm_]
    d = normalize_dim(fn, dim, x.ndim) if x.ndim else 0
    if x.ndim == 0:
        raise ValueError(f"{fn}: `x` must have at least one dim, got x.shape={tuple(x.shape)}")
    return _apply(fn, kind, x, type, (n,), (d,), norm_, ortho)


def _n_dim(
    fn: str, kind: str, inverse: bool, x: Any, type: Any, s: Any, dim: Any, norm: Any, orth: Any
) -> torch.Tensor:
    x, s, dim = _widen_half(x), _as_index(s), _as_index(dim)
    norm_, ortho = _check(fn, x, type, norm, orth)
    if inverse:
        type, norm_ = _INVERSE_TYPE[type], _INVERSE_NORM[norm_]
    if isinstance(s, int):
        s = (s,)
    elif isinstance(s, list | tuple):
        s = tuple(_as_index(v) for v in s)
    if isinstance(dim, int):
        dim = (dim,)
    elif isinstance(dim, list | tuple):
        dim = tuple(_as_index(v) for v in dim)
    if dim is None and s is not None:
        dims = tuple(range(x.ndim - len(s), x.ndim))
    else:
        dims = normalize_dims(fn, dim, x.ndim)
    sizes = (None,) * len(dims) if s is None else tuple(s)
    if len(sizes) != len(dims):
        raise ValueError(
            f"{fn}: `s` and `dim` must have the same length, got s={s!r} and dim={dim!r}"
        )
    return _apply(fn, kind, x, type, sizes, dims, norm_, ortho)


_DIFFERENCES = (
    "Differences from scipy: ``dim`` replaces ``{axis}``; the dtype follows the input (float32 "
    "stays float32, float16 is computed in float32 as scipy does; complex input is transformed "
    "part by part and stays complex); integer input raises ``TypeError`` instead of being "
    "promoted to float64; there is no ``overwrite_x`` or ``workers`` (torch's FFT threading "
    "applies){type1}. Autograd differentiates it exactly, to any order."
)
_TYPE1 = "; a type-I DCT of fewer than 2 points raises ``ValueError`` (scipy: ``RuntimeError``)"


_F = TypeVar("_F", bound=Callable[..., Any])


def _family_doc(kind: str, *, inverse: bool, multi: bool) -> Callable[[_F], _F]:
    """Splice the sections every DCT/DST function shares in before its ``Example:``."""
    which = " whose inverse is taken" if inverse else ""
    if multi:
        length = "s: lengths of the transform along ``dim`` (None: the sizes of ``x``)."
        dims = "dim: the dims to transform (unique; None: all, or the last ``len(s)``)."
        returns = "Tensor of ``x``'s dtype, with the sizes along ``dim`` replaced by ``s``."
        errors = (
            "unknown ``type``/``norm``, repeated dims, or ``s`` and ``dim`` of different\n"
            "            lengths."
        )
    else:
        length = "n: length of the transform; ``x`` is zero-padded or truncated along ``dim``."
        dims = "dim: the dim to transform."
        returns = "Tensor of ``x``'s dtype, with ``x.shape[dim]`` replaced by ``n``."
        errors = "unknown ``type`` or ``norm``, ``n < 1``, or a ``dim`` out of range."
    differences = _DIFFERENCES.format(
        axis="axes" if multi else "axis", type1=_TYPE1 if kind == "dct" else ""
    )
    shared = f"""{textwrap.fill(differences, 96, initial_indent="    ", subsequent_indent="    ")}

    Args:
        x: real or complex tensor (float16, float32, float64, complex64, complex128), any shape.
        type: the {kind.upper()} type{which} (1, 2, 3 or 4).
        {length}
        {dims}
        norm: None or "backward", "ortho", "forward".
        orthogonalize: use scipy's orthogonalized variant (None: only with ``norm="ortho"``).

    Returns:
        {returns} (float16 input gives float32.)

    Raises:
        TypeError: ``x`` is not a float/complex tensor, or an argument has the wrong type.
        ValueError: {errors}

"""

    def decorate(fn: _F) -> _F:
        if fn.__doc__ is None:  # python -OO
            return fn
        head, example = fn.__doc__.split("    Example:", 1)
        fn.__doc__ = f"{head.rstrip()}\n\n{shared}    Example:{example}"
        return fn

    return decorate


@_family_doc("dct", inverse=False, multi=False)
def dct(
    x: torch.Tensor,
    type: int = 2,
    n: int | None = None,
    dim: int = -1,
    norm: str | None = None,
    orthogonalize: bool | None = None,
) -> torch.Tensor:
    """Discrete cosine transform of ``x`` along ``dim``.

    Torch implementation of `scipy.fft.dct`. With ``norm=None`` ("backward") the type-II
    transform of ``x`` of length N is y[k] = 2 sum_n x[n] cos(pi k (2n + 1) / (2N)); types I, III
    and IV follow scipy's definitions. ``norm="forward"`` divides by 2N (2(N-1) for type I),
    ``"ortho"`` by the square root of that, and ``orthogonalize`` (default: ``norm == "ortho"``)
    rescales the first/last terms so the matrix is orthogonal.

    Example:
        >>> import torch
        >>> dct(torch.tensor([1.0, 1.0, 1.0, 1.0]))
        tensor([8., 0., 0., 0.])
        >>> x = torch.randn(3, 10, dtype=torch.float64)
        >>> torch.allclose(idct(dct(x, norm="ortho"), norm="ortho"), x)
        True

    References:
        J. Makhoul, "A fast cosine transform in one and two dimensions", IEEE Trans. ASSP 28(1),
        1980.
    """
    return _one_dim("dct", "dct", False, x, type, n, dim, norm, orthogonalize)


@_family_doc("dct", inverse=True, multi=False)
def idct(
    x: torch.Tensor,
    type: int = 2,
    n: int | None = None,
    dim: int = -1,
    norm: str | None = None,
    orthogonalize: bool | None = None,
) -> torch.Tensor:
    """Inverse discrete cosine transform of ``x`` along ``dim``.

    Torch implementation of `scipy.fft.idct`: ``idct(dct(x, t, norm=m), t, norm=m) == x``; the
    inverse of type II is type III divided by 2N (for the default ``norm``), of type I is type I
    divided by 2(N-1), of type III is type II divided by 2N and of type IV is type IV divided by 2N.

    Example:
        >>> import torch
        >>> idct(torch.tensor([8.0, 0.0, 0.0, 0.0]))
        tensor([1., 1., 1., 1.])
    """
    return _one_dim("idct", "dct", True, x, type, n, dim, norm, orthogonalize)


@_family_doc("dst", inverse=False, multi=False)
def dst(
    x: torch.Tensor,
    type: int = 2,
    n: int | None = None,
    dim: int = -1,
    norm: str | None = None,
    orthogonalize: bool | None = None,
) -> torch.Tensor:
    """Discrete sine transform of ``x`` along ``dim``.

    Torch implementation of `scipy.fft.dst`. With ``norm=None`` the type-II transform is
    y[k] = 2 sum_n x[n] sin(pi (k + 1)(2n + 1) / (2N)); types I, III and IV follow scipy's
    definitions, and ``norm``/``orthogonalize`` scale as for :func:`dct` (type I uses 2(N+1)).

    Example:
        >>> import torch
        >>> dst(torch.tensor([1.0]), type=1)
        tensor([2.])
    """
    return _one_dim("dst", "dst", False, x, type, n, dim, norm, orthogonalize)


@_family_doc("dst", inverse=True, multi=False)
def idst(
    x: torch.Tensor,
    type: int = 2,
    n: int | None = None,
    dim: int = -1,
    norm: str | None = None,
    orthogonalize: bool | None = None,
) -> torch.Tensor:
    """Inverse discrete sine transform of ``x`` along ``dim``.

    Torch implementation of `scipy.fft.idst`: ``idst(dst(x, t, norm=m), t, norm=m) == x``, the
    inverse of type II being type III (and of type III type II) with the matching normalization.

    Example:
        >>> import torch
        >>> x = torch.randn(5, dtype=torch.float64)
        >>> torch.allclose(idst(dst(x, type=4), type=4), x)
        True
    """
    return _one_dim("idst", "dst", True, x, type, n, dim, norm, orthogonalize)


@_family_doc("dct", inverse=False, multi=True)
def dctn(
    x: torch.Tensor,
    type: int = 2,
    s: int | tuple[int, ...] | None = None,
    dim: int | tuple[int, ...] | None = None,
    norm: str | None = None,
    orthogonalize: bool | None = None,
) -> torch.Tensor:
    """Multidimensional discrete cosine transform: :func:`dct` along each of ``dim`` in turn.

    Torch implementation of `scipy.fft.dctn`. ``s`` gives the transform length along each dim
    (pad/trim); ``dim=None`` means all dims, or the last ``len(s)`` dims when ``s`` is given.

    Example:
        >>> import torch
        >>> dctn(torch.ones(2, 2))
        tensor([[16.,  0.],
                [ 0.,  0.]])
    """
    return _n_dim("dctn", "dct", False, x, type, s, dim, norm, orthogonalize)


@_family_doc("dct", inverse=True, multi=True)
def idctn(
    x: torch.Tensor,
    type: int = 2,
    s: int | tuple[int, ...] | None = None,
    dim: int | tuple[int, ...] | None = None,
    norm: str | None = None,
    orthogonalize: bool | None = None,
) -> torch.Tensor:
    """Multidimensional inverse DCT: :func:`idct` along each of ``dim`` in turn.

    Torch implementation of `scipy.fft.idctn`; ``idctn(dctn(x, t, norm=m), t, norm=m) == x``.

    Example:
        >>> import torch
        >>> idctn(torch.tensor([[16.0, 0.0], [0.0, 0.0]]))
        tensor([[1., 1.],
                [1., 1.]])
    """
    return _n_dim("idctn", "dct", True, x, type, s, dim, norm, orthogonalize)


@_family_doc("dst", inverse=False, multi=True)
def dstn(
    x: torch.Tensor,
    type: int = 2,
    s: int | tuple[int, ...] | None = None,
    dim: int | tuple[int, ...] | None = None,
    norm: str | None = None,
    orthogonalize: bool | None = None,
) -> torch.Tensor:
    """Multidimensional discrete sine transform: :func:`dst` along each of ``dim`` in turn.

    Torch implementation of `scipy.fft.dstn`, with ``s``/``dim`` as in :func:`dctn`.

    Example:
        >>> import torch
        >>> dstn(torch.ones(1, 1), type=1)
        tensor([[4.]])
    """
    return _n_dim("dstn", "dst", False, x, type, s, dim, norm, orthogonalize)


@_family_doc("dst", inverse=True, multi=True)
def idstn(
    x: torch.Tensor,
    type: int = 2,
    s: int | tuple[int, ...] | None = None,
    dim: int | tuple[int, ...] | None = None,
    norm: str | None = None,
    orthogonalize: bool | None = None,
) -> torch.Tensor:
    """Multidimensional inverse DST: :func:`idst` along each of ``dim`` in turn.

    Torch implementation of `scipy.fft.idstn`; ``idstn(dstn(x, t, norm=m), t, norm=m) == x``.

    Example:
        >>> import torch
        >>> idstn(torch.tensor([[4.0]]), type=1)
        tensor([[1.]])
    """
    return _n_dim("idstn", "dst", True, x, type, s, dim, norm, orthogonalize)
