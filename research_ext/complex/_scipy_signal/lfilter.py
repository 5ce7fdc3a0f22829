"""Direct-form filtering: ``lfilter`` and its initial states ``lfilter_zi`` and ``lfiltic``."""

from typing import Any

import numpy as np
import torch

from research_ext.complex._scipy_signal.recursion import (
    checked_zi,
    coefficients,
    filter_last,
    prepare,
    steady_state,
)
from research_ext.core import format_message

__all__ = ["lfilter", "lfilter_zi", "lfiltic"]


def lfilter(
    b: Any, a: Any, x: torch.Tensor, dim: int = -1, zi: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Filter ``x`` along ``dim`` with the rational transfer function B(z) / A(z).

    Torch implementation of `scipy.signal.lfilter`: a[0] y[n] = sum_k b[k] x[n-k] -
    sum_{k>=1} a[k] y[n-k], in the transposed direct form II whose delay states ``zi``/``zf`` are
    scipy's. Solved block-wise (see the module notes), so it is vectorized over the batch and over
    time and autograd differentiates it with respect to ``x`` and ``zi``.

    Differences from scipy: ``dim`` replaces ``axis``; ``b`` and ``a`` are constants (tensors
    or sequences; gradients do not flow into them); the dtype is the promotion of ``x`` and the
    coefficients, as scipy's (Python numbers count as float64: float32 ``x`` with float32
    coefficients stays float32, with a list of floats it gives float64); ill-conditioned direct forms (see the module notes) run
    a per-sample loop, slow for long signals; the coefficients are read on the host once.

    Args:
        b: numerator coefficients (1-D).
        a: denominator coefficients (1-D, ``a[0] != 0``).
        x: real or complex tensor, time along ``dim``.
        dim: the time dim.
        zi: initial delay states, shaped like ``x`` with ``max(len(a), len(b)) - 1`` along ``dim``
            (sizes 1 outside ``dim`` broadcast, as scipy).

    Returns:
        ``y`` (like ``x``), or ``(y, zf)`` when ``zi`` is given, ``zf`` the final states.

    Raises:
        TypeError: ``x`` is not a tensor of an integer, float or complex dtype.
        ValueError: empty coefficients, ``a[0] == 0``, or ``zi`` of the wrong shape (``zi`` must
            have ``x``'s dims, ``x``'s sizes or 1 outside ``dim``; it is never broadcast
            otherwise).

    Example:
        >>> import torch
        >>> x = torch.tensor([1.0, 0.0, 0.0, 0.0])
        >>> lfilter(torch.tensor([1.0]), torch.tensor([1.0, -0.5]), x)
        tensor([1.0000, 0.5000, 0.2500, 0.1250])
        >>> lfilter([1.0], [1.0, -0.5], x).dtype  # Python floats count as float64, as in scipy
        torch.float64
    """
    fn = "lfilter"
    b_, a_, x_, d = prepare(fn, b, a, x, dim)
    xl = x_.movedim(d, -1)
    zl = None
    if zi is not None:
        zl = checked_zi(fn, zi, x_, d, a_.numel() - 1).movedim(d, -1).expand(*xl.shape[:-1], -1)
    y, zf = filter_last(b_, a_, xl, zl)
    y = y.movedim(-1, d)
    return y if zi is None else (y, zf.movedim(-1, d))


def lfilter_zi(b: Any, a: Any) -> torch.Tensor:
    """Initial states of :func:`lfilter` for the steady state of a unit step input.

    Torch implementation of `scipy.signal.lfilter_zi`: zi = (I - A)^-1 B for the transposed
    direct form II matrices (A, B); ``lfilter(b, a, c * ones, zi=c * zi)`` starts in steady state.

    The dtype is scipy's: that of ``b`` and ``a`` together (Python numbers count as float64,
    float32 arrays or tensors stay float32).

    Args:
        b: numerator coefficients.
        a: denominator coefficients (``a[0] != 0``).

    Returns:
        1-D tensor of length ``max(len(a), len(b)) - 1``.

    Raises:
        ValueError: empty coefficients or ``a[0] == 0``.

    Example:
        >>> lfilter_zi([1.0], [1.0, -0.5])  # y = 2 in steady state, so the delay holds 0.5 y
        tensor([1.], dtype=torch.float64)
        >>> lfilter_zi(torch.tensor([1.0]), torch.tensor([1.0, -0.5])).dtype
        torch.float32
    """
    b_, a_ = coefficients("lfilter_zi", b, a, None)
    return steady_state(b_, a_)


def lfiltic(b: Any, a: Any, y: Any, x: Any = None) -> torch.Tensor:
    """Initial states of :func:`lfilter` that reproduce given past outputs and inputs.

    Torch implementation of `scipy.signal.lfiltic`: with ``y = [y[-1], y[-2], ...]`` and
    ``x = [x[-1], x[-2], ...]`` (most recent first; missing values are zeros), the transposed
    direct form II delays are zi[m] = sum_i (b[m+1+i] x[i] - a[m+1+i] y[i]) / a[0]. The dtype is
    that of ``b``, ``a``, ``y`` (and ``x``) together, as scipy's. Differentiable in ``y`` and
    ``x``.

    Args:
        b: numerator coefficients.
        a: denominator coefficients (``a[0] != 0``).
        y: past outputs, most recent first (1-D, any length; extra values are ignored).
        x: past inputs, most recent first (default zeros).

    Returns:
        1-D tensor of length ``max(len(a), len(b)) - 1``.

    Raises:
        ValueError: empty coefficients, ``a[0] == 0``, or ``y``/``x`` not 1-D.

    Example:
        >>> import torch
        >>> zi = lfiltic([1.0], [1.0, -0.5], torch.tensor([2.0], dtype=torch.float64))
        >>> lfilter([1.0], [1.0, -0.5], torch.zeros(2, dtype=torch.float64), zi=zi)[0]
        tensor([1.0000, 0.5000], dtype=torch.float64)
    """
    fn = "lfiltic"
    y_t = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    like = y_t if x is None else None
    x_t = None
    if x is not None:
        x_t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        like = torch.empty(0, dtype=torch.promote_types(y_t.dtype, x_t.dtype), device=y_t.device)
    if not (like is not None and (like.is_floating_point() or like.is_complex())):
        like = torch.empty(0, dtype=torch.float64, device=y_t.device)
    b_, a_ = coefficients(fn, b, a, like)
    order = a_.numel() - 1

    def past(name: str, v: torch.Tensor) -> torch.Tensor:
        if v.ndim > 1:
            raise ValueError(format_message(fn, name, "1-D", f"shape {tuple(v.shape)}"))
        v = v.reshape(-1).to(device=b_.device, dtype=b_.dtype)[:order]
        return torch.cat([v, v.new_zeros(order - v.numel())])

    ys = past("y", y_t)
    xs = past("x", x_t) if x_t is not None else ys.new_zeros(order)
    rows = [
        (b_[m + 1 :] * xs[: order - m]).sum() - (a_[m + 1 :] * ys[: order - m]).sum()
        for m in range(order)
    ]
    return torch.stack(rows) if rows else b_.new_zeros(0)
