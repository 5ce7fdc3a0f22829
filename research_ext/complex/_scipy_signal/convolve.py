"""N-d convolution and correlation: FFT, overlap-add and direct methods, chosen by cost.

Every method computes the ``"full"`` convolution over the convolution dims (other dims
broadcast, as in scipy's ``axes=`` rule) and then crops it for ``"same"`` or ``"valid"``.
The FFT method uses real transforms for real inputs and lengths that torch's FFT on the
input's device handles fast (``fft_lengths.fast_len``: 7-smooth, on CPU a multiple of 8), not scipy's
pocketfft lengths. Along each dim it prices one transform of the whole against overlap-save
blocks of every candidate length with ``fft_lengths.transform_cost`` and runs the cheaper: on CPU a
transform of a million points costs 3-5x more per point than batches of short ones (cache), so
a long signal with a short kernel is always cut into blocks. The block method (what
``oaconvolve`` runs: overlap-save, which gives overlap-add's result with fewer passes) always
splits when a split exists. The direct method is torch's ``conv1d``/``conv2d``/``conv3d``
(grouped when both inputs carry a batch).
"""

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from research_ext.complex._shared.arguments import (
    as_floating,
    normalize_dims,
)
from research_ext.complex._shared.caching import is_functorch_wrapped
from research_ext.complex._shared.fft_lengths import fast_len, transform_cost
from research_ext.core import check_int, check_one_of

__all__ = ["convolve", "correlate", "correlation_lags", "fftconvolve", "oaconvolve"]

_MODES = ("full", "valid", "same")
_METHODS = ("auto", "direct", "fft", "oa")


def _check_input(fn: str, name: str, x: Any) -> torch.Tensor:
    """Float16 is taken as scipy does (computed in float32), integers as float64."""
    if isinstance(x, torch.Tensor) and x.dtype == torch.float16:
        return x
    return as_floating(fn, name, x)


def _prepare(
    fn: str, in1: Any, in2: Any, mode: Any, dim: Any
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    in1 = _check_input(fn, "in1", in1)
    in2 = _check_input(fn, "in2", in2)
    check_one_of(fn, "mode", mode, _MODES)
    if in1.ndim != in2.ndim:
        raise ValueError(
            f"{fn}: `in1` and `in2` must have the same number of dims, got in1.ndim={in1.ndim}, "
            f"in2.ndim={in2.ndim} (in1 and in2 should have the same dimensionality)"
        )
    dims = normalize_dims(fn, dim, in1.ndim)
    for d in range(in1.ndim):
        a, b = in1.shape[d], in2.shape[d]
        if d not in dims and a != b and 1 not in (a, b):
            raise ValueError(
                f"{fn}: `in1` and `in2` must broadcast along the dims not convolved, got "
                f"in1.shape={tuple(in1.shape)} and in2.shape={tuple(in2.shape)} (dim {d})"
            )
    # float16 is computed in float32 (scipy's FFT does the same; torch's half convolutions
    # are CPU-less or inexact) and the result is cast back to the promoted dtype.
    dtype = torch.promote_types(torch.result_type(in1, in2), torch.float32)
    in1, in2 = in1.to(dtype), in2.to(dtype)
    if mode == "valid":
        s1 = [in1.shape[d] for d in dims]
        s2 = [in2.shape[d] for d in dims]
        if not (
            all(a >= b for a, b in zip(s1, s2, strict=True))
            or all(b >= a for a, b in zip(s1, s2, strict=True))
        ):
            raise ValueError(
                f"{fn}: for mode='valid' one input must be at least as large as the other along "
                f"every convolved dim, got in1.shape={tuple(in1.shape)} and "
                f"in2.shape={tuple(in2.shape)}"
            )
    return in1, in2, dims


def _crop(
    full: torch.Tensor, s1: list[int], s2: list[int], dims: tuple[int, ...], mode: str
) -> torch.Tensor:
    """Centre-crop the full convolution to the ``mode`` sizes (scipy's ``_centered``)."""
    for d, a, b in zip(dims, s1, s2, strict=True):
        if mode == "full":
            continue
        target = a if mode == "same" else max(a, b) - min(a, b) + 1
        start = (full.shape[d] - target) // 2
        full = full.narrow(d, start, target)
    return full


# The block path's extra ops (pad, strided windows, crop) cost about 25 us of dispatch, in
# transform_cost's units (about 0.5 ns a point on CPU): short inputs stay in one transform.
_BLOCK_OVERHEAD = 50_000.0


def _candidates(kernel: int, full: int, device: torch.device, real: bool) -> list[int]:
    """Block FFT lengths worth pricing: fast lengths from 2 kernels up to one transform."""
    out, base = set(), 64
    while base < full:
        for quarters in (4, 5, 6, 7):
            n = fast_len(max(base * quarters // 4, 2 * kernel), device, real)
            if n < full:
                out.add(n)
        base *= 2
    return sorted(out)


def _plan(
    signal: int, kernel: int, device: torch.device, real: bool, itemsize: int, blocks: bool
) -> tuple[int, int]:
    """(block length, FFT length) along one dim; block 0 means one transform of the whole.

    Prices one transform of fast_len(s1 + s2 - 1) (three FFTs) against every block length (two
    FFTs per block plus one for the kernel) with :func:`transform_cost`, plus three elementwise
    passes (pad, spectrum product, crop) per transformed point. ``blocks=True`` (``oaconvolve``)
    takes the cheapest split whenever one exists.
    """
    full = signal + kernel - 1
    single = fast_len(full, device, real)
    best, plan = math.inf, (0, single)
    if not blocks:
        best = 3 * transform_cost(single, device, itemsize) + 3 * single
    if kernel < 2 or 2 * kernel > signal:
        return (0, single)
    for nfft in _candidates(kernel, full, device, real):
        block = nfft - kernel + 1
        count = math.ceil(full / block)
        if count < 2:
            continue
        cost = (2 * count + 1) * transform_cost(nfft, device, itemsize) + 3 * count * nfft
        cost += 0.0 if blocks else _BLOCK_OVERHEAD
        if cost < best:
            best, plan = cost, (block, nfft)
    return plan


def _fft_full(
    in1: torch.Tensor, in2: torch.Tensor, dims: tuple[int, ...], blocks: bool
) -> torch.Tensor:
    """Full convolution by real (or complex) FFTs, whole or in overlap-save blocks per dim."""
    s1 = [in1.shape[d] for d in dims]
    s2 = [in2.shape[d] for d in dims]
    if sum(b > a for a, b in zip(s1, s2, strict=True)) > sum(
        a > b for a, b in zip(s1, s2, strict=True)
    ):
        in1, in2, s1, s2 = in2, in1, s2, s1
    real = not (in1.is_complex() or in2.is_complex())
    itemsize = in1.element_size() // (2 if in1.is_complex() else 1)
    plans = [
        _plan(a, b, in1.device, real, itemsize, blocks) if a >= b else (0, 0)
        for a, b in zip(s1, s2, strict=True)
    ]
    # Overlap-save: along each blocked dim, windows of nfft samples of in1 (zero-padded by
    # kernel - 1 in front) start every `block` samples (a strided view); the last `block`
    # samples of each circular convolution are exact and tile the full output.
    x, k = in1, in2
    fft_dims, fshape, offset = [], [], 0
    for d, a, b, (block, nfft) in zip(dims, s1, s2, plans, strict=True):
        dd = d + offset
        if block == 0:
            fft_dims.append(dd)
            fshape.append(nfft or fast_len(a + b - 1, in1.device, real))
            continue
        count = math.ceil((a + b - 1) / block)
        back = (count - 1) * block + nfft - (a + b - 1)
        x = F.pad(x.movedim(dd, -1), (b - 1, back)).unfold(-1, nfft, block)
        x = x.movedim((-2, -1), (dd, dd + 1))
        k = k.unsqueeze(dd)
        fft_dims.append(dd + 1)
        fshape.append(nfft)
        offset += 1
    forward, inverse = (
        (torch.fft.rfftn, torch.fft.irfftn) if real else (torch.fft.fftn, torch.fft.ifftn)
    )
    sp, kp = forward(x, s=fshape, dim=fft_dims), forward(k, s=fshape, dim=fft_dims)
    # In place on the fresh spectrum unless it broadcasts, autograd needs its value for the
    # kernel's gradient, or a torch.func transform batches one factor only.
    in_place = not (torch.is_grad_enabled() and kp.requires_grad)
    in_place = in_place and not is_functorch_wrapped(sp, kp)
    in_place = in_place and torch.broadcast_shapes(sp.shape, kp.shape) == sp.shape
    sp = sp.mul_(kp) if in_place else sp * kp
    y = inverse(sp, s=fshape, dim=fft_dims)
    for fd, a, b, (block, _) in reversed(list(zip(fft_dims, s1, s2, plans, strict=True))):
        if block == 0:
            y = y.narrow(fd, 0, a + b - 1)
        else:
            y = y.narrow(fd, b - 1, block).flatten(fd - 1, fd).narrow(fd - 1, 0, a + b - 1)
    return y


def _direct_full(in1: torch.Tensor, in2: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Full convolution by torch's convNd: flattened broadcast batch, flipped kernel."""
    if in1.is_complex() or in2.is_complex():
        # Both share one complex dtype after _prepare: four real convolutions.
        rr = _direct_full(in1.real, in2.real, dims) - _direct_full(in1.imag, in2.imag, dims)
        ii = _direct_full(in1.real, in2.imag, dims) + _direct_full(in1.imag, in2.real, dims)
        return torch.complex(rr, ii)
    nd = len(dims)
    rest = [d for d in range(in1.ndim) if d not in dims]
    x = in1.permute(*rest, *dims)
    k = in2.permute(*rest, *dims)
    batch = torch.broadcast_shapes(x.shape[: len(rest)], k.shape[: len(rest)])
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    xs, ks = x.shape[len(rest) :], k.shape[len(rest) :]
    k = k.flip(list(range(len(rest), k.ndim)))
    pad = [s - 1 for s in ks]
    if k.shape[: len(rest)].numel() == 1:
        xb = x.expand(*batch, *xs).reshape(-1, 1, *xs)
        out = conv(xb, k.reshape(1, 1, *ks), padding=pad)
        out = out.reshape(*batch, *out.shape[2:])
    else:
        groups = math.prod(batch)
        xb = x.expand(*batch, *xs).reshape(1, groups, *xs)
        kb = k.expand(*batch, *ks).reshape(groups, 1, *ks)
        out = conv(xb, kb, padding=pad, groups=groups).reshape(
            *batch, *[a + b - 1 for a, b in zip(xs, ks, strict=True)]
        )
    inverse = [0] * in1.ndim
    for i, d in enumerate([*rest, *dims]):
        inverse[d] = i
    return out.permute(*inverse)


def _choose(in1: torch.Tensor, in2: torch.Tensor, dims: tuple[int, ...]) -> str:
    """Method of method="auto": direct for tiny kernels, else fft (which prices blocks itself)."""
    s1 = math.prod(in1.shape[d] for d in dims)
    s2 = math.prod(in2.shape[d] for d in dims)
    small, big = min(s1, s2), max(s1, s2)
    if len(dims) <= 3 and (small <= 4 or small * big <= 1024):
        return "direct"
    return "fft"


def _result_dtype(in1: torch.Tensor, in2: torch.Tensor) -> torch.dtype:
    """The promoted dtype, numpy's when integers take part (as scipy's result dtype)."""
    # numpy promotes int64 with float16 to float64 (torch: float16), and torch refuses to mix
    # uint16/32/64 with signed integers.
    if all(t.is_floating_point() or t.is_complex() for t in (in1, in2)):
        return torch.result_type(in1, in2)
    pair = (torch.empty(0, dtype=t.dtype).numpy().dtype for t in (in1, in2))
    return torch.from_numpy(np.empty(0, dtype=np.result_type(*pair))).dtype


def _convolve(
    fn: str, in1: Any, in2: Any, mode: str, dim: Any, method: str, dtype: torch.dtype | None = None
) -> torch.Tensor:
    out = _convolve_promoted(fn, in1, in2, mode, dim, method)
    # in1 and in2 are tensors here (_prepare checked them)
    dtype = _result_dtype(in1, in2) if dtype is None else dtype
    if dtype.is_floating_point or dtype.is_complex:
        return out if out.dtype == dtype else out.to(dtype)
    if fn in ("convolve", "correlate"):
        # scipy: integer data give integers (rounded, and wrapped to the dtype as numpy's
        # integer sums wrap); computed exactly in float64 below 2**53.
        return out.round().to(torch.int64).to(dtype)
    return out  # fftconvolve/oaconvolve: float64, as scipy


def _warn_non_finite(in1: torch.Tensor, in2: torch.Tensor) -> None:
    """scipy.signal.convolve's warning when its FFT method meets a nan or inf."""
    if is_functorch_wrapped(in1) or is_functorch_wrapped(in2) or torch.compiler.is_compiling():
        return  # no data-dependent branch inside torch.func transforms or compiled graphs
    if not bool(torch.isfinite(in1).all() and torch.isfinite(in2).all()):
        warnings.warn(
            "Use of fft convolution on input with NAN or inf results in NAN or inf output. "
            "Consider using method='direct' instead.",
            RuntimeWarning,
            stacklevel=5,
        )


def _convolve_promoted(
    fn: str, in1: Any, in2: Any, mode: str, dim: Any, method: str
) -> torch.Tensor:
    in1, in2, dims = _prepare(fn, in1, in2, mode, dim)
    if in1.numel() == 0 or in2.numel() == 0:
        return in1.new_zeros(0)
    if not dims:
        return in1 * in2
    if method == "auto":
        method = _choose(in1, in2, dims)
    if method == "direct" and len(dims) > 3:
        method = "fft"
    if fn in ("convolve", "correlate") and method != "direct":
        _warn_non_finite(in1, in2)
    if method == "direct":
        full = _direct_full(in1, in2, dims)
    else:
        full = _fft_full(in1, in2, dims, blocks=method == "oa")
    s1 = [in1.shape[d] for d in dims]
    s2 = [in2.shape[d] for d in dims]
    out = _crop(full, s1, s2, dims, mode)
    if mode == "same":  # scipy crops the broadcast dims to in1's shape too (centred)
        for d in range(out.ndim):
            if d not in dims and out.shape[d] != in1.shape[d]:
                out = out.narrow(d, (out.shape[d] - in1.shape[d]) // 2, in1.shape[d])
    return out


def fftconvolve(
    in1: torch.Tensor,
    in2: torch.Tensor,
    mode: str = "full",
    dim: int | tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Convolve two n-d tensors with the FFT.

    Torch implementation of `scipy.signal.fftconvolve`: (in1 * in2)[n] = sum_k in1[k] in2[n - k]
    over the dims ``dim`` (all dims when None), computed as irfftn(rfftn(in1) rfftn(in2)) on
    lengths fast for torch's FFT on the input's device, whole or in overlap-save blocks,
    whichever a cost model says is cheaper; the other dims broadcast. ``mode`` "full" returns every
    overlap (s1 + s2 - 1), "same" the centre part of the size of ``in1``, "valid" the part that
    needs no zero padding (|s1 - s2| + 1).

    As in scipy, "same" returns exactly ``in1``'s shape (broadcast dims are centre-cropped too).

    Differences from scipy: ``dim`` replaces ``axes``; the result dtype is the promoted dtype of
    the inputs (float32 stays float32; float16 is computed in float32 and returned as float16,
    where scipy returns float32); integer input is computed and returned in float64, as
    scipy. Differentiable in both inputs.

    Args:
        in1: real or complex tensor.
        in2: tensor with the same number of dims as ``in1``.
        mode: "full", "valid" or "same".
        dim: dims to convolve over (None: all).

    Returns:
        The convolution; real when both inputs are real.

    Raises:
        TypeError: an input is not a tensor, or has a dtype other than integer, float or complex.
        ValueError: unknown ``mode``; different numbers of dims; non-broadcastable other dims;
            "valid" with neither input at least as large as the other.

    Example:
        >>> import torch
        >>> x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
        >>> y = fftconvolve(x, torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64))
        >>> torch.allclose(y, torch.tensor([0.0, 1.0, 2.5, 4.0, 1.5], dtype=torch.float64))
        True
    """
    return _convolve("fftconvolve", in1, in2, mode, dim, "fft")


def oaconvolve(
    in1: torch.Tensor,
    in2: torch.Tensor,
    mode: str = "full",
    dim: int | tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Convolve two n-d tensors with the overlap-add method.

    Torch implementation of `scipy.signal.oaconvolve`: the larger input is cut into blocks of
    length L, each block is convolved with the smaller input by FFTs of length
    nfft = L + s_small - 1 (the cheapest by a cost model of torch's FFT on the input's device, at
    least 2 s_small) and the pieces are put back at their offsets (we use the overlap-save
    arrangement, which needs fewer passes than overlap-add and gives the same result).

    Differences from scipy: ``dim`` replaces ``axes``; the dtype follows the inputs; the block
    length is our own choice (the result agrees to rounding); :func:`fftconvolve` also splits
    into blocks where that is cheaper, so the two differ only where one transform of the whole
    would be cheaper. Differentiable in both inputs.

    Args:
        in1: real or complex tensor.
        in2: tensor with the same number of dims as ``in1``.
        mode: "full", "valid" or "same".
        dim: dims to convolve over (None: all).

    Returns:
        The convolution; real when both inputs are real.

    Raises:
        TypeError: an input is not a tensor, or has a dtype other than integer, float or complex.
        ValueError: as :func:`fftconvolve`.

    Example:
        >>> import torch
        >>> x = torch.randn(1000, dtype=torch.float64)
        >>> h = torch.randn(31, dtype=torch.float64)
        >>> torch.allclose(oaconvolve(x, h), fftconvolve(x, h))
        True
    """
    return _convolve("oaconvolve", in1, in2, mode, dim, "oa")


def convolve(
    in1: torch.Tensor,
    in2: torch.Tensor,
    mode: str = "full",
    method: str = "auto",
    *,
    dim: int | tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Convolve two n-d tensors, choosing the direct, FFT or overlap-add method.

    Torch implementation of `scipy.signal.convolve`: (in1 * in2)[n] = sum_k in1[k] in2[n - k].
    ``method="auto"`` uses torch's ``convNd`` only for tiny kernels (<= 4 samples, or <= 1024
    multiply-adds in all) and the FFT otherwise, which itself splits a long input into
    overlap-save blocks where a cost model of torch's FFT says that is cheaper; it
    never runs the direct method on long kernels. As in scipy, float16 input is accepted
    (computed in float32, returned in the promoted dtype of the inputs), and an FFT-based
    method on input with a nan or inf warns ``RuntimeWarning`` (its nan/inf spreads over the
    output; scipy looks at the output's first element, we at the inputs).

    Differences from scipy: the extra keyword ``dim`` limits the convolved dims (the others
    broadcast; scipy convolves over all); "direct" over more than 3 dims uses the FFT.
    Integer input gives integers as in scipy (computed in float64, so exact while the sums stay
    below 2**53, then rounded and wrapped to the dtype as numpy's integer sums wrap).
    Differentiable.

    Args:
        in1: real or complex tensor.
        in2: tensor with the same number of dims as ``in1``.
        mode: "full", "valid" or "same".
        method: "auto", "direct", "fft" or "oa".
        dim: dims to convolve over (None: all).

    Returns:
        The convolution; real when both inputs are real.

    Raises:
        TypeError: an input is not a tensor, or has a dtype other than integer, float or complex.
        ValueError: unknown ``mode`` or ``method``, or the shape errors of :func:`fftconvolve`.

    Example:
        >>> import torch
        >>> convolve(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 0.5]), mode="same")
        tensor([1.0000, 2.5000, 4.0000])
    """
    check_one_of("convolve", "method", method, _METHODS)
    return _convolve("convolve", in1, in2, mode, dim, method)


def correlate(
    in1: torch.Tensor,
    in2: torch.Tensor,
    mode: str = "full",
    method: str = "auto",
    *,
    dim: int | tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Cross-correlate two n-d tensors.

    Torch implementation of `scipy.signal.correlate`: z[k] = sum_l in1[l + k] conj(in2[l]),
    i.e. the convolution of ``in1`` with ``in2`` reversed and conjugated, cropped by ``mode``;
    the lags of the output are :func:`correlation_lags`.

    Differences from scipy: as :func:`convolve` (the ``dim`` keyword; integer input gives
    integers, float16 and the nan/inf warning as there).

    Args:
        in1: real or complex tensor.
        in2: tensor with the same number of dims as ``in1``.
        mode: "full", "valid" or "same".
        method: "auto", "direct", "fft" or "oa".
        dim: dims to correlate over (None: all).

    Returns:
        The cross-correlation.

    Raises:
        TypeError: an input is not a tensor, or has a dtype other than integer, float or complex.
        ValueError: unknown ``mode`` or ``method``, or the shape errors of :func:`fftconvolve`.

    Example:
        >>> import torch
        >>> correlate(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0]))
        tensor([1., 3., 5., 3.])
    """
    check_one_of("correlate", "method", method, _METHODS)
    both = isinstance(in1, torch.Tensor) and isinstance(in2, torch.Tensor)
    dtype = _result_dtype(in1, in2) if both else None
    in2 = _check_input("correlate", "in2", in2)
    dims = normalize_dims("correlate", dim, in2.ndim)
    reversed_in2 = in2.flip(list(dims)) if dims else in2
    if reversed_in2.is_complex():
        reversed_in2 = reversed_in2.conj()
    return _convolve("correlate", in1, reversed_in2, mode, dim, method, dtype)


def correlation_lags(
    in1_len: int, in2_len: int, mode: str = "full", *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Lag indices of the 1-D cross-correlation of inputs of lengths ``in1_len`` and ``in2_len``.

    Torch implementation of `scipy.signal.correlation_lags`: "full" gives -(in2_len - 1) ...
    in1_len - 1, "same" the centred ``in1_len`` of those, "valid" 0 ... in1_len - in2_len (or
    in1_len - in2_len ... 0 when ``in2`` is longer).

    Differences from scipy: returns an int64 tensor on ``device``.

    Args:
        in1_len: length of the first input, a positive int.
        in2_len: length of the second input, a positive int.
        mode: "full", "valid" or "same".
        device: device of the result.

    Returns:
        1-D int64 tensor of lags, aligned with :func:`correlate`'s output.

    Raises:
        TypeError: a length is not an int.
        ValueError: a length < 1 or unknown ``mode``.

    Example:
        >>> correlation_lags(3, 2)
        tensor([-1,  0,  1,  2])
    """
    fn = "correlation_lags"
    check_int(fn, "in1_len", in1_len, minimum=1)
    check_int(fn, "in2_len", in2_len, minimum=1)
    check_one_of(fn, "mode", mode, _MODES)
    if mode == "valid":
        bound = in1_len - in2_len
        return (
            torch.arange(bound + 1, device=device)
            if bound >= 0
            else torch.arange(bound, 1, device=device)
        )
    lags = torch.arange(-in2_len + 1, in1_len, device=device)
    if mode == "same":
        mid, bound = lags.shape[0] // 2, in1_len // 2
        lags = lags[mid - bound : mid + bound + in1_len % 2]
    return lags
