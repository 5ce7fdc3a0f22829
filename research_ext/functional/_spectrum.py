"""Extreme eigenvalues and spectral densities of symmetric operators by the Lanczos process.

Both functions run on the operator's device and only multiply by it. Lanczos keeps the whole Krylov
basis and reorthogonalizes every new vector against it twice (classical Gram-Schmidt, "twice is
enough"), which costs ``O(m n)`` memory for ``m`` steps but removes the ghost eigenvalues of plain
Lanczos. A breakdown (an invariant subspace) is handled without a host sync by continuing with a
fresh random direction, so repeated eigenvalues and tiny operators are handled too. The host is
consulted only every ``check_every`` steps, to test convergence: one small ``eigh`` of the
tridiagonal matrix and one ``bool`` of its residual test per check, never per step (a test pins
this); ``spectral_density`` runs its fixed number of steps without any.
"""

import math
import warnings
from typing import Any, NamedTuple

import torch

from research_ext.core import (
    DenseOperator,
    LinearOperator,
    check_int,
    check_one_of,
    check_positive,
    check_type,
    format_message,
    progress,
)

__all__ = [
    "EigvalshResult",
    "SpectralDensity",
    "eigvalsh",
    "plot_spectral_density",
    "spectral_density",
]


class EigvalshResult(NamedTuple):
    """Extreme eigenpairs from :func:`eigvalsh`, with the work done and error estimates.

    Attributes:
        eigenvalues: ``(k,)`` Ritz values in ascending order.
        eigenvectors: ``(n, k)`` orthonormal Ritz vectors (columns), or ``None`` unless requested.
        num_matvecs: number of operator-vector products spent.
        residuals: ``(k,)`` residual norms ``||A x_i - theta_i x_i||``; some eigenvalue of ``A`` lies
            within ``residuals[i]`` of ``eigenvalues[i]`` (a rigorous bound).
        error_estimate: ``(k,)`` the sharper ``min(r_i, r_i^2 / gap_i)`` with ``gap_i`` the distance
            to the nearest other Ritz value (the Kato-Temple estimate, rigorous once ``gap_i``
            separates ``theta_i`` from the rest of the spectrum).
        converged: whether every residual met ``tol`` before ``max_iter``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor | None
    num_matvecs: int
    residuals: torch.Tensor
    error_estimate: torch.Tensor
    converged: bool


class SpectralDensity(NamedTuple):
    """A smoothed spectral density from :func:`spectral_density`.

    Attributes:
        grid: ``(num_points,)`` evaluation points on the real line.
        density: ``(num_points,)`` the density on ``grid``; it integrates to about 1.
        nodes: ``(num_probes, num_steps)`` Gauss quadrature nodes (Ritz values) per probe.
        weights: ``(num_probes, num_steps)`` their weights; each row sums to 1.
    """

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor


def as_square_operator(fn: str, op: Any) -> LinearOperator:
    if isinstance(op, torch.Tensor) and op.ndim == 2:
        op = DenseOperator(op, is_hermitian=True)
    check_type(fn, "op", op, LinearOperator, "a LinearOperator or a 2-D tensor")
    if op.shape[0] != op.shape[1]:
        raise ValueError(format_message(fn, "op", "square (symmetric)", f"shape {op.shape}"))
    return op


def rademacher_probes(
    shape: tuple[int, ...], op: LinearOperator, gen: torch.Generator | None
) -> torch.Tensor:
    bits = torch.randint(0, 2, shape, generator=gen, device=_gen_device(gen, op))
    return (2.0 * bits - 1.0).to(device=op.device, dtype=op.dtype)


def _gen_device(gen: torch.Generator | None, op: LinearOperator) -> torch.device:
    return gen.device if gen is not None else op.device


def gaussian_probes(
    shape: tuple[int, ...], op: LinearOperator, gen: torch.Generator | None
) -> torch.Tensor:
    out = torch.randn(shape, generator=gen, device=_gen_device(gen, op), dtype=op.dtype)
    return out.to(op.device)


def _orthogonalize(known: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Remove from ``w (p, n)`` its components along ``known (p, j, n)``, twice.

    Twice is enough (Kahan-Parlett) for orthogonality to working precision.
    """
    for _ in range(2):
        coeffs = torch.bmm(known, w.unsqueeze(-1))
        w = w - torch.bmm(known.mT, coeffs).squeeze(-1)
    return w


def _lanczos_step(
    op: LinearOperator,
    basis: torch.Tensor,
    j: int,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    scale: torch.Tensor,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """One step on ``p`` independent probes; ``basis`` is ``(p, m + 1, n)``, row ``j`` current."""
    q = basis[:, j]
    w = op._matmat(q.mT).mT
    alpha[j] = (w * q).sum(dim=1)
    scale = torch.maximum(scale, alpha[j].abs().amax())
    known = basis[:, : j + 1]
    w = _orthogonalize(known, w)
    b = torch.linalg.vector_norm(w, dim=1)
    # An invariant subspace was found: continue from a random direction, decoupled (beta = 0).
    tiny = (b <= scale * torch.finfo(op.dtype).eps * 10).unsqueeze(-1)
    if j + 1 < basis.shape[1]:
        fresh = _orthogonalize(known, gaussian_probes(tuple(w.shape), op, gen))
        w = torch.where(tiny, fresh, w)
        basis[:, j + 1] = w / torch.linalg.vector_norm(w, dim=1, keepdim=True)
    beta[j] = torch.where(tiny.squeeze(-1), torch.zeros_like(b), b)
    return scale


def _tridiagonal(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``(p, m, m)`` symmetric tridiagonal matrices from ``alpha (m, p)`` and ``beta (m - 1, p)``."""
    t = torch.diag_embed(alpha.mT)
    off = torch.diag_embed(beta.mT, offset=1)
    return t + off + off.mT


def _wanted(m: int, k: int, which: str) -> list[int]:
    if which == "largest":
        return list(range(m - k, m))
    if which == "smallest":
        return list(range(k))
    low = k // 2
    return list(range(low)) + list(range(m - (k - low), m))


def eigvalsh(
    op: LinearOperator | torch.Tensor,
    k: int = 5,
    which: str = "largest",
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    check_every: int = 4,
    return_eigenvectors: bool = False,
    v0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    show_progress: bool | None = None,
) -> EigvalshResult:
    """Extreme eigenvalues of a symmetric operator by Lanczos with full reorthogonalization.

    Builds the Krylov basis ``Q_m`` of ``span{v0, A v0, ..., A^(m-1) v0}`` and the tridiagonal
    ``T_m = Q_m^T A Q_m``; the eigenvalues ``theta_i`` of ``T_m`` (Ritz values) converge to the
    extreme eigenvalues of ``A`` first. Ritz pair ``i`` has residual ``r_i = beta_m |s_(m,i)|``
    and the process stops once ``r_i <= tol * max_j |theta_j|`` for every wanted pair.

    Args:
        op: a symmetric ``LinearOperator`` of shape ``(n, n)`` (a curvature operator, say), or a
            symmetric 2-D tensor.
        k: how many eigenvalues, ``1 <= k <= n``.
        which: ``"largest"`` or ``"smallest"`` (algebraic), or ``"both"`` (``k // 2`` smallest
            and ``k - k // 2`` largest, like scipy's ``"BE"``).
        tol: relative residual tolerance; default ``max(sqrt(eps), 1e-6)`` of the dtype. Eigenvalue
            errors are then about ``tol^2 * ||A||^2 / gap`` (see ``error_estimate``).
        max_iter: most Lanczos steps (matvecs); default ``min(n, max(100, 30 k))``.
        check_every: test convergence (one small ``eigh`` and a host sync) every this many steps.
        return_eigenvectors: also return the ``(n, k)`` Ritz vectors.
        v0: ``(n,)`` starting vector; default a Gaussian draw from ``generator``.
        generator: random source for ``v0`` and for restarts after a breakdown.
        show_progress: a progress bar over Lanczos steps (default: in notebooks and terminals
            only; see :func:`research_ext.core.progress`).

    Returns:
        An :class:`EigvalshResult` (eigenvalues ascending, matvec count, residual bounds).

    Raises:
        TypeError: if ``op`` is not a ``LinearOperator`` or a 2-D tensor, or ``k`` not an int.
        ValueError: if ``op`` is not square, ``k`` is not in ``[1, n]``, or ``which`` is unknown.

    Warns:
        RuntimeWarning: if ``max_iter`` steps did not reach ``tol``.

    Example:
        >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
        >>> res = eigvalsh(A, k=3, generator=torch.Generator().manual_seed(0))
        >>> [round(float(x), 6) for x in res.eigenvalues], res.converged
        ([98.0, 99.0, 100.0], True)

    References:
        Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
        differential and integral operators", 1950. Parlett, "The Symmetric Eigenvalue Problem",
        1998 (ch. 13, bounds). Ghorbani, Krishnan, Xiao, "An Investigation into Neural Net
        Optimization via Hessian Eigenvalue Density", ICML 2019.
    """
    fn = "eigvalsh"
    op = as_square_operator(fn, op)
    n = op.shape[0]
    k = check_int(fn, "k", k, minimum=1, maximum=n)
    check_one_of(fn, "which", which, ("largest", "smallest", "both"))
    check_int(fn, "check_every", check_every, minimum=1)
    eps = torch.finfo(op.dtype).eps
    tol = max(math.sqrt(eps), 1e-6) if tol is None else check_positive(fn, "tol", tol)
    m_max = (
        min(n, max(100, 30 * k))
        if max_iter is None
        else check_int(fn, "max_iter", max_iter, minimum=k)
    )
    m_max = min(m_max, n)
    if v0 is None:
        v0 = gaussian_probes((n,), op, generator)
    elif v0.shape != (n,):
        raise ValueError(f"{fn}: `v0` must have shape ({n},), got {tuple(v0.shape)}")
    basis = torch.empty((1, m_max + 1, n), dtype=op.dtype, device=op.device)
    basis[0, 0] = (v0 / torch.linalg.vector_norm(v0)).to(op.dtype)
    alpha = torch.zeros((m_max, 1), dtype=op.dtype, device=op.device)
    beta = torch.zeros((m_max, 1), dtype=op.dtype, device=op.device)
    scale = torch.zeros((), dtype=op.dtype, device=op.device)
    converged = False
    with progress(total=m_max, desc=f"{fn} (Lanczos)", enable=show_progress, leave=False) as bar:
        for j in range(m_max):
            scale = _lanczos_step(op, basis, j, alpha, beta, scale, generator)
            bar.update(1)
            m = j + 1
            if m < k or (m % check_every and m != m_max):
                continue
            theta, vecs = torch.linalg.eigh(_tridiagonal(alpha[:m], beta[: m - 1])[0])
            residuals = (beta[m - 1, 0] * vecs[-1]).abs()
            wanted = _wanted(m, k, which)
            bound = tol * theta.abs().amax()
            if m == n or bool((residuals[wanted] <= bound).all()):
                converged = True
                break
    if not converged:
        warnings.warn(
            f"{fn}: Lanczos did not reach tol={tol:g} in max_iter={m_max} steps; "
            "see `residuals` / `error_estimate`, or raise `max_iter`",
            RuntimeWarning,
            stacklevel=2,
        )
    if m == n:  # the Krylov space is the whole space: T_n is similar to A
        residuals = torch.zeros_like(residuals)
    idx = torch.tensor(wanted, device=theta.device)
    values, res = theta[idx], residuals[idx]
    others = theta.unsqueeze(0) - values.unsqueeze(1)
    others[torch.arange(len(wanted)), idx] = math.inf
    gap = others.abs().amin(dim=1) if m > 1 else torch.full_like(values, math.inf)
    error = torch.minimum(res, res.square() / gap.clamp_min(torch.finfo(gap.dtype).tiny))
    vectors = None
    if return_eigenvectors:
        vectors = basis[0, :m].mT @ vecs[:, idx]
    return EigvalshResult(values, vectors, m, res, error, converged)


def spectral_density(
    op: LinearOperator | torch.Tensor,
    *,
    num_probes: int = 8,
    num_steps: int = 80,
    num_points: int = 1000,
    bandwidth: float | None = None,
    grid: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    show_progress: bool | None = None,
) -> SpectralDensity:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

    For Rademacher probes ``v`` (``||v||^2 = n``), ``v^T g(A) v / n`` is approximated by the
    Gauss quadrature ``sum_j tau_j g(theta_j)`` from ``num_steps`` Lanczos steps (nodes
    ``theta_j``: Ritz values; weights ``tau_j``: squared first components of the eigenvectors of
    ``T``). With a Gaussian kernel ``g`` of width ``bandwidth`` this gives the smoothed density
    ``phi(t) = mean_probes sum_j tau_j N(t; theta_j, bandwidth^2)``. All probes run together: each
    Lanczos step is one block product ``A @ V`` of shape ``(n, num_probes)``.

    Args:
        op: a symmetric ``LinearOperator`` or 2-D tensor, shape ``(n, n)``.
        num_probes: number of random probe vectors.
        num_steps: Lanczos steps per probe (capped at ``n``).
        num_points: grid size when ``grid`` is not given.
        bandwidth: Gaussian kernel width; default 1% of the range of the nodes.
        grid: ``(g,)`` points to evaluate the density on; default ``num_points`` points spanning
            the nodes plus 5% (and 3 bandwidths) on each side.
        generator: random source for the probes.
        show_progress: a progress bar over Lanczos steps (default: in notebooks and terminals
            only).

    Returns:
        A :class:`SpectralDensity` (grid, density, nodes, weights).

    Raises:
        TypeError: if ``op`` is not a ``LinearOperator`` or 2-D tensor.
        ValueError: if ``op`` is not square or a count is not a positive int.

    Example:
        >>> A = torch.diag(torch.linspace(-1.0, 1.0, 50, dtype=torch.float64))
        >>> sd = spectral_density(A, num_steps=50, generator=torch.Generator().manual_seed(0))
        >>> round(float(torch.trapezoid(sd.density, sd.grid)), 3)
        1.0

    References:
        Lin, Saad, Yang, "Approximating spectral densities of large matrices", SIAM Review 2016.
        Ghorbani, Krishnan, Xiao, "An Investigation into Neural Net Optimization via Hessian
        Eigenvalue Density", ICML 2019.
    """
    fn = "spectral_density"
    op = as_square_operator(fn, op)
    n = op.shape[0]
    p = check_int(fn, "num_probes", num_probes, minimum=1)
    m = min(check_int(fn, "num_steps", num_steps, minimum=1), n)
    check_int(fn, "num_points", num_points, minimum=2)
    probes = rademacher_probes((n, p), op, generator) / math.sqrt(n)
    basis = torch.empty((p, m + 1, n), dtype=op.dtype, device=op.device)
    basis[:, 0] = probes.mT
    alpha = torch.zeros((m, p), dtype=op.dtype, device=op.device)
    beta = torch.zeros((m, p), dtype=op.dtype, device=op.device)
    scale = torch.zeros((), dtype=op.dtype, device=op.device)
    with progress(total=m, desc=f"{fn} (SLQ)", enable=show_progress, leave=False) as bar:
        for j in range(m):
            scale = _lanczos_step(op, basis, j, alpha, beta, scale, generator)
            bar.update(1)
    theta, vecs = torch.linalg.eigh(_tridiagonal(alpha, beta[: m - 1]))
    weights = vecs[:, 0, :].square()
    lo, hi = theta.amin(), theta.amax()
    width = torch.clamp(hi - lo, min=torch.finfo(op.dtype).eps * (1 + hi.abs()))
    sigma = (
        0.01 * width
        if bandwidth is None
        else torch.tensor(
            check_positive(fn, "bandwidth", bandwidth), dtype=op.dtype, device=op.device
        )
    )
    if grid is None:
        pad = 0.05 * width + 3 * sigma
        steps = torch.linspace(0.0, 1.0, num_points, dtype=op.dtype, device=op.device)
        grid = lo - pad + steps * (hi - lo + 2 * pad)
    z = (grid.reshape(-1, 1, 1) - theta.unsqueeze(0)) / sigma
    kernel = torch.exp(-0.5 * z.square()) / (sigma * math.sqrt(2 * math.pi))
    density = (kernel * weights.unsqueeze(0)).sum(dim=2).mean(dim=1)
    return SpectralDensity(grid, density, theta, weights)


def plot_spectral_density(
    result: SpectralDensity, ax: Any = None, *, log_scale: bool = True, **kwargs: Any
) -> Any:
    """Plot a :class:`SpectralDensity` with matplotlib (imported here, not at module import).

    Args:
        result: the output of :func:`spectral_density`.
        ax: a matplotlib ``Axes``; default a new figure's axes.
        log_scale: logarithmic density axis (Hessian spectra span many decades).
        **kwargs: passed to ``ax.plot``.

    Returns:
        The ``Axes`` drawn on.

    Raises:
        ImportError: if matplotlib is not installed.

    Example:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> sd = spectral_density(torch.eye(4), num_steps=2)
        >>> plot_spectral_density(sd).get_xlabel()
        'eigenvalue'
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    floor = torch.finfo(result.density.dtype).tiny
    density = result.density.clamp_min(floor) if log_scale else result.density
    ax.plot(result.grid.detach().cpu().numpy(), density.detach().cpu().numpy(), **kwargs)
    if log_scale:
        ax.set_yscale("log")
        top = float(density.max())
        ax.set_ylim(top * 1e-8, top * 2)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    return ax
