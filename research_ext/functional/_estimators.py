"""Randomized trace and diagonal estimators for any square ``LinearOperator``.

All probes of one call are multiplied as blocks (``A @ Z`` with ``Z`` of shape ``(n, b)``), so a
curvature operator batches its products; ``batch_size`` bounds the block width when memory is
tight. Every estimate comes with its standard error, computed from the same samples.
"""

import math
from typing import Any, NamedTuple

import torch

from research_ext.core import LinearOperator, check_int, check_one_of, format_message, progress
from research_ext.functional._spectrum import as_square_operator, gaussian_probes, rademacher_probes

__all__ = ["Estimate", "diagonal", "trace"]


class Estimate(NamedTuple):
    """A randomized estimate with its standard error.

    Attributes:
        estimate: the estimate (a 0-d tensor for a trace, ``(n,)`` for a diagonal).
        std_error: the estimated standard error, same shape; the true value lies within about
            ``3 * std_error`` with probability ~99.7% (central limit theorem).
        num_matvecs: number of operator-vector products spent.
    """

    estimate: torch.Tensor
    std_error: torch.Tensor
    num_matvecs: int


def _probes(
    n: int, m: int, op: LinearOperator, distribution: str, gen: torch.Generator | None
) -> torch.Tensor:
    if distribution == "rademacher":
        return rademacher_probes((n, m), op, gen)
    return gaussian_probes((n, m), op, gen)


def _apply(
    op: LinearOperator, block: torch.Tensor, batch_size: int | None, bar: Any
) -> torch.Tensor:
    parts = [block] if batch_size is None else list(block.split(batch_size, dim=1))
    products = []
    for part in parts:
        products.append(op._matmat(part))
        bar.update(part.shape[1])
    return products[0] if len(products) == 1 else torch.cat(products, dim=1)


def _mean_and_error(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = samples.shape[-1]
    mean = samples.mean(dim=-1)
    if m < 2:
        return mean, torch.full_like(mean, math.inf)
    return mean, samples.std(dim=-1) / math.sqrt(m)


def trace(
    op: LinearOperator | torch.Tensor,
    num_samples: int = 100,
    method: str = "hutch++",
    *,
    distribution: str = "rademacher",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    show_progress: bool | None = None,
) -> Estimate:
    """Estimate ``tr(A)`` from ``num_samples`` products with random vectors.

    Hutchinson: ``tr(A) ~ (1/m) sum_i z_i^T A z_i`` with ``E[z z^T] = I``, variance
    ``2 ||A||_F^2 / m`` for Rademacher probes minus the diagonal's share. Hutch++ spends a third of
    the products on a sketch ``Q = orth(A S)``, takes ``tr(Q^T A Q)`` exactly with another third
    and runs Hutchinson on the deflated ``(I - QQ^T) A (I - QQ^T)`` with the rest, so its error
    falls as ``1/m`` instead of ``1/sqrt(m)`` when the spectrum decays (Hessians of networks).

    Args:
        op: a square ``LinearOperator`` or 2-D tensor, shape ``(n, n)``; Hutch++ assumes it
            symmetric.
        num_samples: total matvec budget ``m`` (``>= 3`` for Hutch++).
        method: ``"hutchinson"`` or ``"hutch++"``.
        distribution: probe distribution, ``"rademacher"`` (lower variance) or ``"gaussian"``.
        batch_size: most probes multiplied in one block (default: all at once).
        generator: random source for the probes.
        show_progress: a progress bar over matvecs (default: in notebooks and terminals only).

    Returns:
        An :class:`Estimate` with a 0-d ``estimate`` and ``std_error`` (for Hutch++ the error of
        its Hutchinson part, the only random term given ``Q``).

    Raises:
        TypeError: if ``op`` is not a ``LinearOperator`` or 2-D tensor.
        ValueError: if ``op`` is not square, ``num_samples`` too small, or an option unknown.

    Example:
        >>> A = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
        >>> est = trace(A, num_samples=30, generator=torch.Generator().manual_seed(0))
        >>> round(float(est.estimate), 6)  # 10 + 10 probes span the whole 10-dim space
        55.0

    References:
        Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
        smoothing splines", 1989. Meyer, Musco, Musco, Woodruff, "Hutch++: Optimal Stochastic
        Trace Estimation", SOSA 2021.
    """
    fn = "trace"
    op = as_square_operator(fn, op)
    check_one_of(fn, "method", method, ("hutchinson", "hutch++"))
    check_one_of(fn, "distribution", distribution, ("rademacher", "gaussian"))
    if batch_size is not None:
        check_int(fn, "batch_size", batch_size, minimum=1)
    n = op.shape[0]
    m = check_int(fn, "num_samples", num_samples, minimum=1 if method == "hutchinson" else 3)
    with progress(total=m, desc=f"{fn} ({method})", enable=show_progress, leave=False) as bar:
        if method == "hutchinson":
            z = _probes(n, m, op, distribution, generator)
            mean, err = _mean_and_error((z * _apply(op, z, batch_size, bar)).sum(dim=0))
            return Estimate(mean, err, m)
        third = min(m // 3, n)
        sketch = _apply(op, _probes(n, third, op, distribution, generator), batch_size, bar)
        q, _ = torch.linalg.qr(sketch)
        exact = (q * _apply(op, q, batch_size, bar)).sum()
        g = _probes(n, m - 2 * third, op, distribution, generator)
        g = g - q @ (q.mT @ g)
        mean, err = _mean_and_error((g * _apply(op, g, batch_size, bar)).sum(dim=0))
    return Estimate(exact + mean, err, m)


def diagonal(
    op: LinearOperator | torch.Tensor,
    num_samples: int = 100,
    method: str = "hutchinson",
    *,
    distribution: str = "rademacher",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    show_progress: bool | None = None,
) -> Estimate:
    """Estimate ``diag(A)`` from random products, or compute it exactly.

    Hutchinson's diagonal estimator ``diag(A) ~ (1/m) sum_i z_i * (A z_i)`` (elementwise) with
    Rademacher probes: entry ``j`` has variance ``sum_(k != j) A_jk^2 / m``. ``method="exact"``
    multiplies the ``n`` unit vectors in blocks of ``batch_size`` (``n`` matvecs, no error).

    Args:
        op: a square ``LinearOperator`` or 2-D tensor, shape ``(n, n)``.
        num_samples: number of probes ``m`` (ignored by ``"exact"``).
        method: ``"hutchinson"`` or ``"exact"``.
        distribution: ``"rademacher"`` or ``"gaussian"`` probes (Gaussian probes are divided by
            ``sum_i z_i^2`` entrywise, as Bekas et al. do).
        batch_size: most probes per block product (default: all at once).
        generator: random source for the probes.
        show_progress: a progress bar over matvecs (default: in notebooks and terminals only).

    Returns:
        An :class:`Estimate` with ``(n,)`` ``estimate`` and ``std_error``.

    Raises:
        TypeError: if ``op`` is not a ``LinearOperator`` or 2-D tensor.
        ValueError: if ``op`` is not square, ``num_samples`` < 1, or an option unknown.

    Example:
        >>> A = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
        >>> diagonal(A, num_samples=4).estimate.tolist()  # exact for a diagonal matrix
        [2.0, 3.0]

    References:
        Bekas, Kokiopoulou, Saad, "An estimator for the diagonal of a matrix", Applied Numerical
        Mathematics 2007.
    """
    fn = "diagonal"
    op = as_square_operator(fn, op)
    check_one_of(fn, "method", method, ("hutchinson", "exact"))
    check_one_of(fn, "distribution", distribution, ("rademacher", "gaussian"))
    if batch_size is not None:
        check_int(fn, "batch_size", batch_size, minimum=1)
    n = op.shape[0]
    if method == "exact":
        eye = torch.eye(n, dtype=op.dtype, device=op.device)
        with progress(total=n, desc=f"{fn} (exact)", enable=show_progress, leave=False) as bar:
            parts = [
                (b * _apply(op, b, None, bar)).sum(dim=0) for b in eye.split(batch_size or n, 1)
            ]
        diag = torch.cat(parts)
        return Estimate(diag, torch.zeros_like(diag), n)
    m = check_int(fn, "num_samples", num_samples, minimum=1)
    z = _probes(n, m, op, distribution, generator)
    with progress(total=m, desc=f"{fn} ({method})", enable=show_progress, leave=False) as bar:
        products = z * _apply(op, z, batch_size, bar)
    if distribution == "gaussian":
        if m < 2:
            raise ValueError(
                format_message(fn, "num_samples", "an int >= 2 for Gaussian probes", m)
            )
        products = products * (m / z.square().sum(dim=1, keepdim=True))
    mean, err = _mean_and_error(products)
    return Estimate(mean, err, m)
