r"""Rényi DP of the Poisson-subsampled Gaussian mechanism: pure functions of (sigma, q, orders).

For an integer order :math:`\alpha \ge 2` the RDP of one step is exact and closed-form (Mironov,
Talwar & Zhang 2019, section 3.3):

.. math::

    \varepsilon(\alpha) = \frac{1}{\alpha-1}\log \sum_{k=0}^{\alpha} \binom{\alpha}{k}
        (1-q)^{\alpha-k} q^k \exp\Big(\frac{k^2-k}{2\sigma^2}\Big),

evaluated here in log space for all orders at once (one vectorised log-sum-exp), so orders in the
thousands cost microseconds. Fractional orders below 11 come from Opacus's series (cached per
(sigma, q)). Large orders matter: at small epsilon the best order is in the hundreds or thousands,
and stopping at 63 (Opacus's default) overstates epsilon up to several fold.

Epsilon from RDP uses the conversion of Balle et al. (2020, Theorem 21) /
Canonne, Kamath & Steinke (2020):
:math:`\varepsilon = \min_\alpha \varepsilon(\alpha) + \log(1 - 1/\alpha) - (\log\delta +
\log\alpha)/(\alpha - 1)`.
"""

import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln

__all__ = ["INTEGER_ORDERS", "rdp_epsilon_from_curve", "subsampled_gaussian_rdp"]

#: Integer orders: every one to 63 (Opacus's), then geometrically spaced (ratio 2^(1/4)) up to
#: 2^13, which covers the best order down to epsilon of about 0.005 at delta 1e-5.
INTEGER_ORDERS: tuple[int, ...] = tuple(range(2, 64)) + tuple(
    sorted({int(round(64 * 2 ** (k / 4))) for k in range(0, 29)})
)
#: Fractional orders below 11 (Opacus's and dp-accounting's 1.1, 1.2, ..., 10.9).
FRACTIONAL_ORDERS: tuple[float, ...] = tuple(1 + x / 10 for x in range(1, 100) if x % 10)


@functools.lru_cache(maxsize=8)
def _flat_binomials(
    orders: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(alpha, k, log binom(alpha, k), starts, lengths)`` for every k <= alpha, end to end."""
    alpha_int = np.asarray(orders, dtype=np.int64)
    lengths = alpha_int + 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    alpha = np.repeat(alpha_int, lengths)
    k = np.arange(alpha.size) - np.repeat(starts, lengths)
    log_factorial = gammaln(np.arange(int(alpha_int.max()) + 1, dtype=np.float64) + 1)
    log_binom = log_factorial[alpha] - log_factorial[k] - log_factorial[alpha - k]
    return alpha.astype(np.float64), k.astype(np.float64), log_binom, starts, lengths


def _log_a_integer(q: float, sigma: float, orders: tuple[int, ...]) -> np.ndarray:
    """Log A_alpha for integer orders, all at once: one flat, segmented log-sum-exp over k <= alpha.

    The terms of every order are laid end to end (sum of alpha + 1 of them; the binomials are
    computed once) and reduced per order with ``reduceat``, so the cost is linear in the
    orders' sum with no per-order call.
    """
    alpha, k, log_binom, starts, lengths = _flat_binomials(orders)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = math.log(q) if q > 0 else -math.inf
        log_1q = math.log1p(-q) if q < 1 else -math.inf
        terms = log_binom + k * log_q + (alpha - k) * log_1q + (k * k - k) / (2 * sigma**2)
    terms = np.where(np.isnan(terms), -np.inf, terms)  # 0 * -inf at q = 1, k < alpha
    top = np.maximum.reduceat(terms, starts)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(under="ignore"):
        sums = np.add.reduceat(np.exp(terms - np.repeat(safe, lengths)), starts)
    with np.errstate(divide="ignore"):
        return np.log(sums) + safe


@functools.lru_cache(maxsize=256)
def _fractional(sigma: float, q: float) -> np.ndarray:
    from opacus.accountants.analysis.rdp import compute_rdp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(
            compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(FRACTIONAL_ORDERS)),
            dtype=np.float64,
        )


@functools.lru_cache(maxsize=1024)
def _integer(sigma: float, q: float) -> np.ndarray:
    orders = np.asarray(INTEGER_ORDERS, dtype=np.float64)
    if q == 1.0:
        return orders / (2 * sigma**2)
    return np.maximum(_log_a_integer(q, sigma, INTEGER_ORDERS), 0.0) / (orders - 1)


def subsampled_gaussian_rdp(
    sigma: float, q: float, *, fractional: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(orders, rdp)`` of one Poisson-subsampled Gaussian step (noise multiplier ``sigma``).

    Integer orders always; the fractional ones below 11 too unless ``fractional=False``.
    """
    orders = np.asarray(INTEGER_ORDERS, dtype=np.float64)
    rdp = _integer(float(sigma), float(q))
    if fractional:
        orders = np.concatenate([np.asarray(FRACTIONAL_ORDERS), orders])
        rdp = np.concatenate([_fractional(float(sigma), float(q)), rdp])
    return orders, rdp


def rdp_epsilon_from_curve(orders: np.ndarray, rdp: np.ndarray, delta: float) -> float:
    """Epsilon at ``delta`` from an RDP curve (the conversion in the module docstring)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        eps = rdp + np.log1p(-1 / orders) - (math.log(delta) + np.log(orders)) / (orders - 1)
    eps = np.where(np.isnan(eps), np.inf, eps)
    return max(0.0, float(np.min(eps)))


def history_rdp_epsilon(
    history: Sequence[tuple[float, float, int]], delta: float, *, fractional: bool = True
) -> float:
    """RDP epsilon of phases ``(sigma, q, steps)`` composed (RDP adds up over steps)."""
    total: np.ndarray | None = None
    orders = np.empty(0)
    for sigma, q, steps in history:
        orders, curve = subsampled_gaussian_rdp(sigma, q, fractional=fractional)
        total = steps * curve if total is None else total + steps * curve
    if total is None:
        return 0.0
    return rdp_epsilon_from_curve(orders, total, delta)
