"""IIR filtering: ``lfilter``, ``sosfilt``, ``filtfilt``, ``lfilter_zi``, vectorized by blocks.

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

import math
from typing import Any, cast

import torch

from research_ext.complex._fft import check_real_or_complex, normalize_dim
from research_ext.core import check_one_of, format_message

__all__ = ["filtfilt", "lfilter", "lfilter_zi", "sosfilt"]

_BLOCK = 128
# The block solver's rounding error grows with max_j ||A^j|| (measured: <= 20 keeps it within
# a few ulps of scipy); past this the exact per-sample loop runs instead.
_MAX_GROWTH = 20.0


def _coefficients(fn: str, b: Any, a: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(
        like.dtype,
        torch.float64 if like.dtype in (torch.float64, torch.complex128) else torch.float32,
    )
    b = torch.as_tensor(b, dtype=dtype, device=like.device).reshape(-1)
    a = torch.as_tensor(a, dtype=dtype, device=like.device).reshape(-1)
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


def _state_space(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def _lfilter_loop(b: torch.Tensor, a: torch.Tensor, x: torch.Tensor, zi: torch.Tensor | None):
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


def _lfilter_last(b: torch.Tensor, a: torch.Tensor, x: torch.Tensor, zi: torch.Tensor | None):
    """Filter along the last dim; returns (y, zf)."""
    order = a.numel() - 1
    n = x.shape[-1]
    batch = x.shape[:-1]
    if order == 0:
        y = x * b[0]
        return y, x.new_zeros((*batch, 0))
    A, B = _state_space(b, a)
    if _transient_growth(A, n) > _MAX_GROWTH:
        return _lfilter_loop(b, a, x, zi)
    L = min(_BLOCK, max(n, 1))
    count = math.ceil(n / L)
    # Impulse response h[0] = D, h[k] = C A^(k-1) B, and the free responses C A^j (C = e_0).
    AjB = _powers_times(A, B, L)  # (L, order): A^j B
    h = torch.cat([b[:1], AjB[: L - 1, 0]])
    eye0 = torch.zeros(order, dtype=A.dtype, device=A.device)
    eye0[0] = 1
    free = _powers_times(A.T, eye0, L)  # row j = C A^j
    power = torch.linalg.matrix_power(A, L)
    pad = count * L - n
    u = torch.cat([x, x.new_zeros((*batch, pad))], -1).unflatten(-1, (count, L))
    # Zero-state output inside each block: a causal Toeplitz product with h.
    idx = torch.arange(L, device=x.device)
    toeplitz = torch.where(
        idx[:, None] >= idx[None, :], h[(idx[:, None] - idx[None, :]).clamp(min=0)], h.new_zeros(())
    )
    y0 = u @ toeplitz.T.to(u.dtype)
    # State carried into block b+1 from block b's input: sum_j A^(L-1-j) B u_j.
    drive = u @ AjB.flip(0).to(u.dtype)  # (..., count, order)
    start = x.new_zeros((*batch, 1, order)) if zi is None else zi.to(x.dtype).unsqueeze(-2)
    acc = torch.cat([start, drive[..., :-1, :]], -2)
    step, mat = 1, power.to(x.dtype)
    while step < count:  # doubling scan: S_b = sum_j M^(b-j) w_j
        acc = torch.cat([acc[..., :step, :], acc[..., step:, :] + acc[..., :-step, :] @ mat.T], -2)
        mat = mat @ mat
        step *= 2
    y = (y0 + acc @ free.T.to(x.dtype)).flatten(-2)[..., :n]
    # Final state after the last real sample: propagate the last block's start through r samples.
    r = n - (count - 1) * L
    last = u[..., -1, :r]
    zf = acc[..., -1, :] @ torch.linalg.matrix_power(A, r).T.to(x.dtype) + last @ AjB[:r].flip(
        0
    ).to(x.dtype)
    return y, zf


def _prepare(fn: str, b: Any, a: Any, x: Any, dim: int):
    check_real_or_complex(fn, "x", x)
    b_, a_ = _coefficients(fn, b, a, x)
    dtype = torch.promote_types(x.dtype, b_.dtype)
    d = normalize_dim(fn, dim, max(x.ndim, 1))
    return b_.to(dtype), a_.to(dtype), x.to(dtype), d


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
    coefficients (float32 stays float32); ill-conditioned direct forms (see the module notes) run
    a per-sample loop, slow for long signals; the coefficients are read on the host once.

    Args:
        b: numerator coefficients (1-D).
        a: denominator coefficients (1-D, ``a[0] != 0``).
        x: real or complex tensor, time along ``dim``.
        dim: the time dim.
        zi: initial delay states, shaped like ``x`` with ``max(len(a), len(b)) - 1`` along ``dim``.

    Returns:
        ``y`` (like ``x``), or ``(y, zf)`` when ``zi`` is given, ``zf`` the final states.

    Raises:
        TypeError: ``x`` is not a float/complex tensor.
        ValueError: empty coefficients, ``a[0] == 0``, or ``zi`` of the wrong shape.

    Example:
        >>> import torch
        >>> lfilter([1.0], [1.0, -0.5], torch.tensor([1.0, 0.0, 0.0, 0.0]))
        tensor([1.0000, 0.5000, 0.2500, 0.1250])
    """
    fn = "lfilter"
    b_, a_, x_, d = _prepare(fn, b, a, x, dim)
    xl = x_.movedim(d, -1)
    zl = None
    if zi is not None:
        order = a_.numel() - 1
        zl = torch.as_tensor(zi, device=x.device).to(x_.dtype)
        expected = (*xl.shape[:-1], order)
        zl = zl.movedim(d, -1) if zl.ndim == xl.ndim else zl
        if tuple(zl.shape) != expected and zl.shape[-1] == order and zl.ndim <= xl.ndim:
            zl = zl.expand(expected)
        if tuple(zl.shape) != expected:
            raise ValueError(
                format_message(
                    fn, "zi", f"of shape {expected} (with dim {d} last)", f"shape {tuple(zl.shape)}"
                )
            )
    y, zf = _lfilter_last(b_, a_, xl, zl)
    y = y.movedim(-1, d)
    return y if zi is None else (y, zf.movedim(-1, d))


def lfilter_zi(b: Any, a: Any) -> torch.Tensor:
    """Initial states of :func:`lfilter` for the steady state of a unit step input.

    Torch implementation of `scipy.signal.lfilter_zi`: zi = (I - A)^-1 B for the transposed
    direct form II matrices (A, B); ``lfilter(b, a, c * ones, zi=c * zi)`` starts in steady state.

    Differences from scipy: returns a float64 tensor (or complex128 for complex coefficients).

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
    """
    b_, a_ = _coefficients("lfilter_zi", b, a, torch.zeros((), dtype=torch.float64))
    A, B = _state_space(b_, a_)
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    return torch.linalg.solve(eye - A, B)


def sosfilt(
    sos: Any, x: torch.Tensor, dim: int = -1, zi: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Filter ``x`` with a cascade of second-order sections.

    Torch implementation of `scipy.signal.sosfilt`: each row [b0, b1, b2, a0, a1, a2] of ``sos``
    is applied in turn with :func:`lfilter`.

    Differences from scipy: ``dim`` replaces ``axis``; see :func:`lfilter`.

    Args:
        sos: (n_sections, 6) second-order sections.
        x: real or complex tensor, time along ``dim``.
        dim: the time dim.
        zi: initial states, shape (n_sections, ..., 2, ...) with 2 at ``dim`` + 1.

    Returns:
        ``y``, or ``(y, zf)`` when ``zi`` is given.

    Raises:
        TypeError: ``x`` is not a float/complex tensor.
        ValueError: ``sos`` is not (n, 6) or a section has ``a0 == 0``.

    Example:
        >>> import torch
        >>> sos = [[1.0, 0.0, 0.0, 1.0, -0.5, 0.0]]
        >>> sosfilt(sos, torch.tensor([1.0, 0.0, 0.0]))
        tensor([1.0000, 0.5000, 0.2500])
    """
    sections = torch.as_tensor(sos, dtype=torch.float64)
    if sections.ndim != 2 or sections.shape[1] != 6:
        raise ValueError(
            format_message(
                "sosfilt", "sos", "of shape (n_sections, 6)", f"shape {tuple(sections.shape)}"
            )
        )
    y, finals = x, []
    for i, row in enumerate(sections):
        if zi is None:
            y = cast(torch.Tensor, lfilter(row[:3], row[3:], y, dim=dim))
        else:
            y, zf = cast(
                tuple[torch.Tensor, torch.Tensor], lfilter(row[:3], row[3:], y, dim=dim, zi=zi[i])
            )
            finals.append(zf)
    return y if zi is None else (y, torch.stack(finals))


def filtfilt(
    b: Any,
    a: Any,
    x: torch.Tensor,
    dim: int = -1,
    padtype: str | None = "odd",
    padlen: int | None = None,
) -> torch.Tensor:
    """Zero-phase filtering: :func:`lfilter` forwards, then backwards, with edge padding.

    Torch implementation of `scipy.signal.filtfilt` (``method="pad"``): ``x`` is extended by
    ``padlen`` (default 3 max(len(a), len(b))) samples at each end (odd, even, constant or no
    extension), filtered forwards and backwards starting from the steady states
    ``lfilter_zi * edge value``, and cropped back; the result has zero phase and squared gain.

    Differences from scipy: ``dim`` replaces ``axis``; only ``method="pad"`` (no Gustafsson).

    Args:
        b: numerator coefficients.
        a: denominator coefficients.
        x: real or complex tensor, time along ``dim``.
        dim: the time dim.
        padtype: "odd", "even", "constant" or None.
        padlen: samples of extension at each end (0 for none).

    Returns:
        The filtered tensor, shaped like ``x``.

    Raises:
        TypeError: ``x`` is not a float/complex tensor.
        ValueError: unknown ``padtype``, or ``padlen`` >= the signal length.

    Example:
        >>> import torch
        >>> y = filtfilt([0.5, 0.5], [1.0], torch.ones(20, dtype=torch.float64))
        >>> torch.allclose(y, torch.ones(20, dtype=torch.float64))
        True
    """
    from research_ext.complex._stft import _extend

    fn = "filtfilt"
    check_one_of(fn, "padtype", padtype, ("odd", "even", "constant", None))
    b_, a_, x_, d = _prepare(fn, b, a, x, dim)
    xl = x_.movedim(d, -1)
    edge = (
        3 * max(torch.as_tensor(a).numel(), torch.as_tensor(b).numel())
        if padlen is None
        else padlen
    )
    if padtype is None:
        edge = 0
    if edge >= xl.shape[-1]:
        raise ValueError(
            f"{fn}: the signal length must be greater than padlen={edge}, got x.shape[dim]={xl.shape[-1]}"
        )
    ext = _extend(fn, xl, edge, padtype) if edge > 0 and padtype is not None else xl
    zi = lfilter_zi(b_.detach().cpu(), a_.detach().cpu()).to(device=x.device, dtype=x_.dtype)
    y, _ = _lfilter_last(b_, a_, ext, zi * ext[..., :1])
    y, _ = _lfilter_last(b_, a_, y.flip(-1), zi * y[..., -1:])
    y = y.flip(-1)
    if edge > 0:
        y = y[..., edge : y.shape[-1] - edge]
    return y.movedim(-1, d)
