"""Zero-phase (forward-backward) filtering: ``filtfilt`` and ``sosfiltfilt``.

Both extend the signal at its ends (``padtype``/``padlen``, scipy's defaults) and start each
pass from the steady state times the edge value; ``filtfilt(method="gust")`` instead picks the
initial states by Gustafsson's method.
"""

from typing import Any

import torch

from research_ext.complex._scipy_signal.recursion import filter_last, prepare, steady_state
from research_ext.complex._scipy_signal.segments import extend
from research_ext.complex._scipy_signal.sos import cascade_last, checked_sections, sosfilt_zi
from research_ext.complex._shared.arguments import as_floating, normalize_dim
from research_ext.core import check_int, check_one_of

__all__ = ["filtfilt", "sosfiltfilt"]


def _check_padding(fn: str, padtype: Any, padlen: Any, default: int, n: int) -> int:
    check_one_of(fn, "padtype", padtype, ("odd", "even", "constant", None))
    if padtype is None:
        return 0
    edge = default if padlen is None else check_int(fn, "padlen", padlen, minimum=0)
    if edge >= n:
        raise ValueError(
            f"{fn}: `padlen` must be less than the signal length x.shape[dim]={n}, got "
            f"padlen={edge} (the length of the input vector x must be greater than padlen)"
        )
    return edge


def _gust_last(
    b: torch.Tensor, a: torch.Tensor, x: torch.Tensor, irlen: int | None
) -> torch.Tensor:
    """Gustafsson's forward-backward filtering along the last dim (zero transients at both ends).

    The initial states of the forward and the backward pass are chosen so that filtering
    forward-then-backward and backward-then-forward agree in the least-squares sense
    (F. Gustafsson, "Determining the initial states in forward-backward filtering", IEEE Trans.
    Signal Processing 44(4), 1996). Only the first and last ``irlen`` samples are corrected when
    ``irlen`` is given and the signal is longer than 2 irlen.
    """
    order = a.numel() - 1
    n = x.shape[-1]
    if order == 0:
        return x * b[0] * b[0]

    def run(v: torch.Tensor) -> torch.Tensor:
        return filter_last(b, a, v, None)[0]

    span = n if irlen is None or n <= 2 * irlen else irlen
    # Free response of the filter from each unit initial state (columns), over `span` samples.
    unit = torch.zeros(order, dtype=b.dtype, device=b.device)
    unit[0] = 1
    free = filter_last(b, a, b.new_zeros(span), unit)[0]
    obs = torch.stack(
        [torch.cat([free.new_zeros(k), free[: span - k]]) for k in range(order)], dim=1
    )
    # Filtering each reversed free response (the effect of a final state on the second pass).
    rev = run(obs.flip(0).T).T
    blocks_m = (rev.flip(0) - obs, obs.flip(0) - rev)
    blocks_w = (rev.flip(0), obs.flip(0))
    if span == n:
        mat, wmat = torch.cat(blocks_m, 1), torch.cat(blocks_w, 1)
    else:
        mat = torch.block_diag(*blocks_m)
        wmat = torch.block_diag(*blocks_w)
    y_fb = run(run(x).flip(-1)).flip(-1)
    y_bf = run(run(x.flip(-1)).flip(-1))
    delta = y_bf - y_fb
    if span != n:
        delta = torch.cat([delta[..., :span], delta[..., n - span :]], -1)
    states = delta @ torch.linalg.pinv(mat).T.to(delta.dtype)
    correction = states @ wmat.T.to(delta.dtype)
    if span == n:
        return y_fb + correction
    middle = y_fb[..., span : n - span]
    head = y_fb[..., :span] + correction[..., :span]
    tail = y_fb[..., n - span :] + correction[..., span:]
    return torch.cat([head, middle, tail], -1)


def filtfilt(
    b: Any,
    a: Any,
    x: torch.Tensor,
    dim: int = -1,
    padtype: str | None = "odd",
    padlen: int | None = None,
    method: str = "pad",
    irlen: int | None = None,
) -> torch.Tensor:
    """Zero-phase filtering: :func:`lfilter` forwards, then backwards.

    Torch implementation of `scipy.signal.filtfilt`. With ``method="pad"`` ``x`` is extended by
    ``padlen`` (default 3 max(len(a), len(b))) samples at each end (odd, even, constant or no
    extension), filtered forwards and backwards starting from the steady states
    ``lfilter_zi * edge value``, and cropped back. With ``method="gust"`` no padding is used:
    Gustafsson's method picks the initial states of both passes so that forward-backward and
    backward-forward filtering agree (least squares), which removes the edge transients;
    ``irlen`` limits the correction to that many samples at each end (the length past which
    the impulse response is negligible). The result has zero phase and squared gain.

    Differences from scipy: ``dim`` replaces ``axis``. Differentiable in ``x``.

    Args:
        b: numerator coefficients.
        a: denominator coefficients.
        x: real or complex tensor, time along ``dim``.
        dim: the time dim.
        padtype: "odd", "even", "constant" or None (``method="pad"``).
        padlen: samples of extension at each end (0 for none; ``method="pad"``).
        method: "pad" or "gust".
        irlen: impulse response length for ``method="gust"`` (default: the whole signal).

    Returns:
        The filtered tensor, shaped like ``x``.

    Raises:
        TypeError: ``x`` is not a tensor of an integer, float or complex dtype.
        ValueError: unknown ``padtype`` or ``method``, ``padlen`` >= the signal length, or a
            bad ``irlen``.

    Example:
        >>> import torch
        >>> y = filtfilt([0.5, 0.5], [1.0], torch.ones(20, dtype=torch.float64))
        >>> torch.allclose(y, torch.ones(20, dtype=torch.float64))
        True
        >>> y = filtfilt([0.5, 0.5], [1.0], torch.ones(20, dtype=torch.float64), method="gust")
        >>> torch.allclose(y, torch.ones(20, dtype=torch.float64))
        True
    """
    fn = "filtfilt"
    check_one_of(fn, "method", method, ("pad", "gust"))
    b_, a_, x_, d = prepare(fn, b, a, x, dim)
    xl = x_.movedim(d, -1)
    if method == "gust":
        if irlen is not None:
            check_int(fn, "irlen", irlen, minimum=1)
        return _gust_last(b_, a_, xl, irlen).movedim(-1, d)
    default = 3 * max(torch.as_tensor(a).numel(), torch.as_tensor(b).numel())
    edge = _check_padding(fn, padtype, padlen, default, xl.shape[-1])
    ext = extend(fn, xl, edge, padtype) if edge > 0 and padtype is not None else xl
    zi = steady_state(b_.detach(), a_.detach())
    y, _ = filter_last(b_, a_, ext, zi * ext[..., :1])
    y, _ = filter_last(b_, a_, y.flip(-1), zi * y[..., -1:])
    y = y.flip(-1)
    if edge > 0:
        y = y[..., edge : y.shape[-1] - edge]
    return y.movedim(-1, d)


def sosfiltfilt(
    sos: Any,
    x: torch.Tensor,
    dim: int = -1,
    padtype: str | None = "odd",
    padlen: int | None = None,
) -> torch.Tensor:
    """Zero-phase filtering with second-order sections: :func:`sosfilt` forwards and backwards.

    Torch implementation of `scipy.signal.sosfiltfilt`: as :func:`filtfilt` with the cascade of
    sections, starting each pass from :func:`sosfilt_zi` times the edge value; the default
    ``padlen`` is scipy's, 3 (2 n_sections + 1 - min(#(b2 == 0), #(a2 == 0))).

    Differences from scipy: ``dim`` replaces ``axis``. Differentiable in ``x``.

    Args:
        sos: (n_sections, 6) second-order sections (a0 = 1).
        x: real or complex tensor, time along ``dim``.
        dim: the time dim.
        padtype: "odd", "even", "constant" or None.
        padlen: samples of extension at each end.

    Returns:
        The filtered tensor, shaped like ``x``.

    Raises:
        TypeError: ``x`` is not a tensor of an integer, float or complex dtype.
        ValueError: bad ``sos``, unknown ``padtype``, or ``padlen`` >= the signal length.

    Example:
        >>> import torch
        >>> sos = [[0.25, 0.5, 0.25, 1.0, 0.0, 0.0]]
        >>> y = sosfiltfilt(sos, torch.ones(20, dtype=torch.float64))
        >>> torch.allclose(y, torch.ones(20, dtype=torch.float64))
        True
    """
    fn = "sosfiltfilt"
    x = as_floating(fn, "x", x)
    sections = checked_sections(fn, sos, x)
    d = normalize_dim(fn, dim, max(x.ndim, 1))
    xl = x.to(sections.dtype).movedim(d, -1)
    zeros_b = int((sections[:, 2] == 0).sum())
    zeros_a = int((sections[:, 5] == 0).sum())
    default = 3 * (2 * sections.shape[0] + 1 - min(zeros_b, zeros_a))
    edge = _check_padding(fn, padtype, padlen, default, xl.shape[-1])
    ext = extend(fn, xl, edge, padtype) if edge > 0 and padtype is not None else xl
    zi = sosfilt_zi(sections.detach()).to(device=x.device)  # (n_sections, 2)
    lead = (slice(None),) + (None,) * (ext.ndim - 1)
    y, _ = cascade_last(sections, ext, zi[lead] * ext[..., :1])
    y, _ = cascade_last(sections, y.flip(-1), zi[lead] * y[..., -1:])
    y = y.flip(-1)
    if edge > 0:
        y = y[..., edge : y.shape[-1] - edge]
    return y.movedim(-1, d)
