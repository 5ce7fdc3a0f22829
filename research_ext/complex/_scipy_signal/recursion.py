"""The IIR recursion every filter runs on, and scipy's coefficient and dtype rules.

``lfilter``, ``sosfilt``, ``filtfilt``, ``sosfiltfilt`` and the initial-state helpers all run on
one block-vectorized recursion (:func:`filter_last`).

A sample-by-sample recursion is slow in eager torch and builds one autograd node per sample, so
the transposed direct form II recursion is solved block-wise in its state-space form
z[n+1] = A z[n] + B x[n], y[n] = C z[n] + D x[n]: inside a block of L samples the output is
the causal convolution of the input with the impulse response h[:L] plus the free response of
the block's initial state (rows C A^j); the block-to-block states follow z_{b+1} = A^L z_b + R u_b,
a linear recurrence solved for all blocks at once by a doubling (Hillis-Steele) scan in
log2(#blocks) matrix products. Everything is exact linear algebra on torch tensors, so it runs
on any device and autograd differentiates it with respect to the signal and the initial state.

Direct-form realizations of high-order filters with clustered poles have companion matrices
whose powers grow transiently by orders of magnitude; the block solver's rounding error grows
with them, so when max_j ||A^j|| exceeds a small bound (checked on the host from the
coefficients) the filter runs scipy's own per-sample recursion instead (exact, but one step per
sample). Such filters should be given as second-order sections (:func:`sosfilt`).
"""

import functools
import math
from typing import Any, NamedTuple

import numpy as np
import torch

from research_ext.complex._shared.arguments import as_floating, normalize_dim
from research_ext.core import format_message

__all__ = [
    "as_coefficients",
    "checked_zi",
    "coefficient_dtype",
    "coefficients",
    "filter_last",
    "prepare",
    "state_space",
    "steady_state",
]

_BLOCK = 128
# The block solver's rounding error grows with max_j ||A^j|| (measured: <= 20 keeps it within
# a few ulps of scipy); past this the exact per-sample loop runs instead.
_MAX_GROWTH = 20.0


def coefficient_dtype(value: Any) -> torch.dtype:
    """The dtype numpy gives coefficients (Python numbers and ints: float64), as a torch dtype."""
    if isinstance(value, torch.Tensor):
        return value.dtype if value.is_floating_point() or value.is_complex() else torch.float64
    kind = np.asarray(value).dtype
    if kind in (np.float32, np.float16):
        return torch.float32
    if kind == np.complex64:
        return torch.complex64
    return torch.complex128 if kind.kind == "c" else torch.float64


def as_coefficients(value: Any, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """Coefficients as a tensor; sequences go through numpy (float64), never torch's float32."""
    if not isinstance(value, torch.Tensor):
        value = torch.from_numpy(np.array(value, dtype=np.result_type(np.asarray(value), 1.0)))
    return value.to(device=device, dtype=dtype)


def coefficients(
    fn: str, b: Any, a: Any, like: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, a) normalized by a[0] and zero-padded to one length, in scipy's result dtype.

    scipy's result dtype is that of ``x``, ``b`` and ``a`` together, where Python numbers (and
    integer coefficients) count as float64: float32 coefficients with float32 ``x`` stay float32,
    a list of floats with float32 ``x`` gives float64.
    """
    dtype = torch.promote_types(coefficient_dtype(b), coefficient_dtype(a))
    device = None
    if like is not None:
        dtype, device = torch.promote_types(dtype, like.dtype), like.device
    b, a = as_coefficients(b, dtype, device), as_coefficients(a, dtype, device)
    if b.ndim > 1 or a.ndim > 1:
        raise ValueError(
            f"{fn}: `b` and `a` must be 1-D, got b.shape={tuple(b.shape)}, a.shape={tuple(a.shape)}"
        )
    b, a = b.reshape(-1), a.reshape(-1)
    if b.numel() == 0 or a.numel() == 0:
        raise ValueError(
            f"{fn}: `b` and `a` must be non-empty, got len(b)={b.numel()}, len(a)={a.numel()}"
        )
    if bool((a[0] == 0).detach().cpu()):
        raise ValueError(f"{fn}: `a[0]` must be non-zero, got a[0]=0")
    order = max(a.numel(), b.numel()) - 1
    b = torch.cat([b, b.new_zeros(order + 1 - b.numel())]) / a[0]
    a = torch.cat([a, a.new_zeros(order + 1 - a.numel())]) / a[0]
    return b, a


def state_space(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Companion matrices (A, B) of the transposed direct form II with order len(a) - 1."""
    order = a.numel() - 1
    A = torch.zeros(order, order, dtype=a.dtype, device=a.device)
    A[:, 0] = -a[1:]
    if order > 1:
        A[:-1, 1:] = torch.eye(order - 1, dtype=a.dtype, device=a.device)
    return A, b[1:] - a[1:] * b[0]


def _powers_times(A: torch.Tensor, v: torch.Tensor, count: int) -> torch.Tensor:
    """Rows A^j v for j < count, shape (count, order)."""
    rows, cur = [], v
    for _ in range(count):
        rows.append(cur)
        cur = A @ cur
    return torch.stack(rows)


def _transient_growth(A: torch.Tensor, n: int) -> float:
    """max_j ||A^j||_inf for j <= n (up to 4096 steps), computed on the host in float64."""
    M = A.detach().to("cpu", torch.complex128 if A.is_complex() else torch.float64)
    P, worst = torch.eye(M.shape[0], dtype=M.dtype), 1.0
    for _ in range(min(n, 4096)):
        P = P @ M
        norm = float(P.abs().sum(1).max())
        worst = max(worst, norm)
        if norm < 1e-3 or not math.isfinite(norm):
            break
    return worst if math.isfinite(worst) else math.inf


def _lfilter_loop(
    b: torch.Tensor, a: torch.Tensor, x: torch.Tensor, zi: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample-by-sample transposed direct form II (scipy's own recursion), for ill-conditioned A."""
    order = a.numel() - 1
    z = x.new_zeros((*x.shape[:-1], order)) if zi is None else zi.to(x.dtype)
    bb, aa = b.to(x.dtype), a.to(x.dtype)
    out = []
    for n in range(x.shape[-1]):
        xn = x[..., n : n + 1]
        yn = bb[0] * xn + z[..., :1]
        shifted = torch.cat([z[..., 1:], z.new_zeros((*z.shape[:-1], 1))], -1)
        z = shifted + bb[1:] * xn - aa[1:] * yn
        out.append(yn)
    return torch.cat(out, -1), z


class _Plan(NamedTuple):
    """A filter's block-solver constants for one signal length (None: run the per-sample loop)."""

    AjB: torch.Tensor  # (L, order): A^j B
    free: torch.Tensor  # (L, order): row j = C A^j
    power: torch.Tensor  # A^L
    power_r: torch.Tensor  # A^r, r the samples of the last block
    toeplitz: torch.Tensor  # (L, L) causal Toeplitz matrix of the impulse response h[:L]


@functools.lru_cache(maxsize=64)
def _plan(
    b: tuple[Any, ...], a: tuple[Any, ...], dtype: torch.dtype, device: str, n: int
) -> _Plan | None:
    """The constants of :func:`filter_last` for one filter and signal length, cached.

    Filtering with the same filter again (an optimizer's loop, a training step) skips the O(L)
    host-side set-up: 0.45 ms instead of 3 ms for 100 samples on one CPU thread.
    """
    bt = torch.tensor(b, dtype=dtype, device=device)
    at = torch.tensor(a, dtype=dtype, device=device)
    A, B = state_space(bt, at)
    if _transient_growth(A, n) > _MAX_GROWTH:
        return None
    order = at.numel() - 1
    L = min(_BLOCK, max(n, 1))
    count = math.ceil(n / L)
    # Impulse response h[0] = D, h[k] = C A^(k-1) B, and the free responses C A^j (C = e_0).
    AjB = _powers_times(A, B, L)
    h = torch.cat([bt[:1], AjB[: L - 1, 0]])
    eye0 = torch.zeros(order, dtype=A.dtype, device=A.device)
    eye0[0] = 1
    free = _powers_times(A.T, eye0, L)
    idx = torch.arange(L, device=A.device)
    toeplitz = torch.where(
        idx[:, None] >= idx[None, :], h[(idx[:, None] - idx[None, :]).clamp(min=0)], h.new_zeros(())
    )
    r = n - (count - 1) * L
    return _Plan(
        AjB, free, torch.linalg.matrix_power(A, L), torch.linalg.matrix_power(A, r), toeplitz
    )


def filter_last(
    b: torch.Tensor, a: torch.Tensor, x: torch.Tensor, zi: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Filter along the last dim; returns (y, zf)."""
    order = a.numel() - 1
    n = x.shape[-1]
    batch = x.shape[:-1]
    if order == 0:
        y = x * b[0]
        return y, x.new_zeros((*batch, 0))
    key = (tuple(b.detach().cpu().tolist()), tuple(a.detach().cpu().tolist()))
    plan = _plan(*key, b.dtype, str(b.device), n)
    if plan is None:
        return _lfilter_loop(b, a, x, zi)
    L = min(_BLOCK, max(n, 1))
    count = math.ceil(n / L)
    pad = count * L - n
    u = torch.cat([x, x.new_zeros((*batch, pad))], -1).unflatten(-1, (count, L))
    # Zero-state output inside each block: a causal Toeplitz product with h.
    y0 = u @ plan.toeplitz.T.to(u.dtype)
    # State carried into block b+1 from block b's input: sum_j A^(L-1-j) B u_j.
    drive = u @ plan.AjB.flip(0).to(u.dtype)  # (..., count, order)
    start = x.new_zeros((*batch, 1, order)) if zi is None else zi.to(x.dtype).unsqueeze(-2)
    acc = torch.cat([start, drive[..., :-1, :]], -2)
    step, mat = 1, plan.power.to(x.dtype)
    while step < count:  # doubling scan: S_b = sum_j M^(b-j) w_j
        acc = torch.cat([acc[..., :step, :], acc[..., step:, :] + acc[..., :-step, :] @ mat.T], -2)
        mat = mat @ mat
        step *= 2
    y = (y0 + acc @ plan.free.T.to(x.dtype)).flatten(-2)[..., :n]
    # Final state after the last real sample: propagate the last block's start through r samples.
    r = n - (count - 1) * L
    last = u[..., -1, :r]
    zf = acc[..., -1, :] @ plan.power_r.T.to(x.dtype) + last @ plan.AjB[:r].flip(0).to(x.dtype)
    return y, zf


def prepare(
    fn: str, b: Any, a: Any, x: Any, dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    x = as_floating(fn, "x", x)
    b_, a_ = coefficients(fn, b, a, x)
    dtype = torch.promote_types(x.dtype, b_.dtype)
    d = normalize_dim(fn, dim, max(x.ndim, 1))
    return b_.to(dtype), a_.to(dtype), x.to(dtype), d


def checked_zi(fn: str, zi: Any, x: torch.Tensor, d: int, order: int) -> torch.Tensor:
    """``zi`` shaped like ``x`` with ``order`` at ``dim`` (size 1 may broadcast elsewhere), as scipy."""
    z = torch.as_tensor(zi, device=x.device).to(x.dtype)
    expected = (*x.shape[:d], order, *x.shape[d + 1 :])
    fits = z.ndim == x.ndim and all(
        zs == es or (k != d and zs == 1)
        for k, (zs, es) in enumerate(zip(z.shape, expected, strict=True))
    )
    if not fits:
        raise ValueError(
            format_message(
                fn,
                "zi",
                f"of shape {expected} (x's shape with {order} at dim {d}; size 1 may broadcast "
                "outside dim)",
                f"shape {tuple(z.shape)}",
            )
        )
    return z


def steady_state(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    A, B = state_space(b, a)
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    return torch.linalg.solve(eye - A, B)
