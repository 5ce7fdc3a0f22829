r"""The privacy cost of hyperparameter tuning: random-stopping bounds and naive composition.

Tuning a private model means training it many times and keeping the best run. If the number of
runs :math:`K` is fixed, the runs compose and the cost grows with :math:`K`. Papernot & Steinke
(2022) show that when :math:`K` is *random* (Poisson or truncated negative binomial) and only the
best run is released, the total cost is close to that of a single run. Both results are Rényi-DP
(RDP) bounds computed from the single run's RDP curve :math:`\varepsilon(\lambda)`:

* Poisson, :math:`K \sim \mathrm{Poisson}(\mu)` (Theorem 6): if one run is
  :math:`(\lambda, \varepsilon(\lambda))`-RDP and :math:`(\hat\varepsilon, \hat\delta)`-DP with
  :math:`e^{\hat\varepsilon} = 1 + 1/(\lambda - 1)`, the tuned algorithm is
  :math:`(\lambda, \varepsilon(\lambda) + \mu\hat\delta + \log\mu/(\lambda-1))`-RDP.
* Truncated negative binomial with shape :math:`\eta > -1` and halting probability
  :math:`\gamma` (Theorem 2; :math:`\eta = 1` is the geometric distribution, :math:`\eta = 0`
  the logarithmic one): for every :math:`\hat\lambda`,

  .. math::

      \varepsilon'(\lambda) = \varepsilon(\lambda)
          + (1+\eta)\Big(1 - \tfrac{1}{\hat\lambda}\Big)\varepsilon(\hat\lambda)
          + \frac{(1+\eta)\log(1/\gamma)}{\hat\lambda} + \frac{\log \mathbb{E}[K]}{\lambda - 1},

  minimised here over :math:`\hat\lambda` in the order grid.

Both bounds are then made monotone in :math:`\lambda` (RDP never decreases with the order) and
converted to :math:`(\varepsilon, \delta)`-DP with the conversion of Balle et al. (2020) /
Canonne, Kamath & Steinke (2020):
:math:`\varepsilon = \min_\lambda \varepsilon'(\lambda) + \log(1 - 1/\lambda)
- (\log\delta + \log\lambda)/(\lambda - 1)`.

Where the single-run RDP curve comes from: a ``(noise_multiplier, sample_rate, steps)`` triple of a
DP-SGD run gives the Poisson-subsampled Gaussian curve (Opacus's RDP analysis, Mironov et al.
2019). A plain number :math:`\varepsilon_0` is read as a *pure* :math:`\varepsilon_0`-DP guarantee
(:math:`\delta_0 = 0`), whose tightest RDP curve is that of binary randomized response (every
:math:`\varepsilon_0`-DP mechanism is a post-processing of it). The result is also capped by
the pure-DP bounds :math:`K\varepsilon_0` (naive) and :math:`(2+\eta)\varepsilon_0` (truncated
negative binomial; :math:`3\varepsilon_0` for the geometric, as in Liu & Talwar 2019). An
:math:`(\varepsilon, \delta)` pair alone does not determine an RDP curve, so a DP-SGD run should
be passed as its triple.

Why this can be below dp-accounting's ``RepeatAndSelectDpEvent`` (by up to ~25 % when the noise
multiplier is below 1 and the sample rate above ~0.05; equal to ~1e-4 otherwise): both evaluate
the same theorems, but dp-accounting's RDP of the subsampled Gaussian at fractional orders is an
upper bound, and where its series does not converge (small orders, small noise, large rates) it
drops those orders. The truncated-negative-binomial bound is minimised over :math:`\hat\lambda`,
and small orders are exactly where that minimum often lies. Here the fractional orders come from
Opacus's series, which the tests check against numerical integration of the Rényi divergence;
with the same single-run curve the two libraries agree. The tests also integrate, numerically,
the Rényi divergence of a concrete repeated mechanism (the best of K runs of a Gaussian or
subsampled-Gaussian release, K Poisson or truncated negative binomial) and check that this
bound is never below it.

References:
    Papernot & Steinke, "Hyperparameter Tuning with Renyi Differential Privacy", ICLR 2022,
    arXiv:2110.03620. Liu & Talwar, "Private Selection from Private Candidates", STOC 2019.
    Balle et al., "Hypothesis Testing Interpretations and Renyi Differential Privacy",
    AISTATS 2020.
"""

import functools
import math
from collections.abc import Sequence

import numpy as np

from research_ext.core import (
    check_in_range,
    check_int,
    check_one_of,
    check_positive,
    check_probability,
    format_message,
)

__all__ = ["tuning_epsilon"]

_FN = "tuning_epsilon"
_DISTRIBUTIONS = ("poisson", "truncated_negative_binomial", "naive")
# Rényi orders: fine near 1, integers to 63, then a few large ones for small-epsilon regimes.
DEFAULT_ORDERS: tuple[float, ...] = (
    tuple(1.0 + k / 10.0 for k in range(1, 100))
    + tuple(float(a) for a in range(11, 64))
    + (80.0, 96.0, 128.0, 192.0, 256.0, 512.0, 1024.0)
)


def tuning_epsilon(
    single_run: float | tuple[float, float, int],
    delta: float,
    n_runs: float,
    *,
    distribution: str = "poisson",
    shape: float = 1.0,
    orders: Sequence[float] | None = None,
) -> float:
    r"""Epsilon of a hyperparameter search that releases only the best of its training runs.

    With ``distribution="poisson"`` the number of runs is :math:`K \sim \mathrm{Poisson}(\mu)`
    with :math:`\mu` = ``n_runs`` (Papernot & Steinke 2022, Theorem 6); with
    ``"truncated_negative_binomial"`` it is truncated negative binomial with shape
    :math:`\eta` = ``shape`` and mean ``n_runs`` (Theorem 2; ``shape=1`` is geometric,
    ``shape=0`` logarithmic); ``"naive"`` composes exactly ``n_runs`` runs,
    :math:`\varepsilon'(\lambda) = K\,\varepsilon(\lambda)`, the cost of a fixed-size search.
    The module docstring gives the formulas.

    Args:
        single_run: one training run's privacy: a ``(noise_multiplier, sample_rate, steps)``
            triple of DP-SGD with Poisson sampling (its exact RDP curve), or a float
            :math:`\varepsilon_0 \ge 0` read as a pure :math:`\varepsilon_0`-DP guarantee.
        delta: target :math:`\delta` of the whole search, in (0, 1).
        n_runs: the mean number of runs (>= 1); an int for ``"naive"``.
        distribution: ``"poisson"``, ``"truncated_negative_binomial"`` or ``"naive"``.
        shape: :math:`\eta > -1` of the truncated negative binomial (ignored otherwise).
        orders: Rényi orders (> 1) to evaluate; ``None`` uses ``DEFAULT_ORDERS``.

    Returns:
        The search's :math:`\varepsilon` at ``delta`` (``math.inf`` if unbounded).

    Raises:
        TypeError: if ``single_run`` is neither a number nor a triple, or a count is not an int.
        ValueError: for a value outside the ranges above or an unknown ``distribution``.

    Example:
        >>> run = (1.1, 256 / 60000, 14000)  # noise multiplier, sample rate, steps
        >>> one = tuning_epsilon(run, 1e-5, 1, distribution="naive")
        >>> ten = tuning_epsilon(run, 1e-5, 10, distribution="naive")
        >>> tuned = tuning_epsilon(run, 1e-5, 10, distribution="poisson")
        >>> one < tuned < ten
        True

    References:
        Papernot & Steinke, "Hyperparameter Tuning with Renyi Differential Privacy", ICLR 2022.
    """
    check_probability(_FN, "delta", delta, allow_one=False)
    check_one_of(_FN, "distribution", distribution, _DISTRIBUTIONS)
    if distribution == "naive":
        check_int(_FN, "n_runs", n_runs, minimum=1)
    else:
        check_in_range(_FN, "n_runs", n_runs, 1.0, math.inf, high_inclusive=False)
    grid = _check_orders(orders)
    if distribution == "truncated_negative_binomial":
        check_in_range(
            _FN, "shape", shape, -1.0, math.inf, low_inclusive=False, high_inclusive=False
        )
    tuned, pure_epsilon = tuned_rdp(single_run, n_runs, distribution, shape, grid)
    epsilon = _rdp_to_epsilon(grid, tuned, delta)
    if pure_epsilon is not None and distribution != "poisson":
        # Pure-DP bounds hold too: K * eps0 composed, (2 + eta) * eps0 for the truncated negative
        # binomial (Theorem 2 as both orders grow; Liu & Talwar's 3 eps0 for the geometric).
        factor = n_runs if distribution == "naive" else 2.0 + shape
        epsilon = min(epsilon, factor * pure_epsilon)
    return epsilon


def tuned_rdp(
    single_run: object, n_runs: float, distribution: str, shape: float, grid: np.ndarray
) -> tuple[np.ndarray, float | None]:
    """The search's RDP bound on ``grid`` (monotone in the order); and eps0 for a pure-DP run."""
    curve, pure_epsilon = _single_run_rdp(single_run, grid)
    if distribution == "naive":
        tuned = n_runs * curve
    elif distribution == "poisson":
        tuned = _poisson_rdp(grid, curve, float(n_runs), pure_epsilon)
    else:
        tuned = _tnb_rdp(grid, curve, float(n_runs), float(shape))
    return _monotone_envelope(tuned), pure_epsilon


def _check_orders(orders: Sequence[float] | None) -> np.ndarray:
    if orders is None:
        return np.asarray(DEFAULT_ORDERS, dtype=np.float64)
    grid = np.asarray(list(orders), dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 1):
        raise ValueError(
            format_message(_FN, "orders", "a non-empty sequence of finite numbers > 1", orders)
        )
    return np.sort(grid)


def _single_run_rdp(single_run: object, grid: np.ndarray) -> tuple[np.ndarray, float | None]:
    """The single run's RDP curve on ``grid`` and, for a pure-DP run, its epsilon."""
    if isinstance(single_run, int | float) and not isinstance(single_run, bool):
        epsilon0 = check_positive(_FN, "single_run", single_run, allow_zero=True)
        return _randomized_response_rdp(float(epsilon0), grid), float(epsilon0)
    if not isinstance(single_run, tuple | list) or len(single_run) != 3:
        raise TypeError(
            format_message(
                _FN,
                "single_run",
                "a float epsilon or a (noise_multiplier, sample_rate, steps) triple",
                single_run,
            )
        )
    noise_multiplier, sample_rate, steps = single_run
    check_positive(_FN, "noise_multiplier", noise_multiplier)
    check_probability(_FN, "sample_rate", sample_rate)
    check_int(_FN, "steps", steps, minimum=1)
    per_step = _subsampled_gaussian_rdp(
        float(noise_multiplier), float(sample_rate), tuple(grid.tolist())
    )
    return steps * np.asarray(per_step, dtype=np.float64), None


@functools.lru_cache(maxsize=64)
def _subsampled_gaussian_rdp(
    noise_multiplier: float, sample_rate: float, grid: tuple[float, ...]
) -> tuple[float, ...]:
    """One step's RDP curve (Opacus's analysis), cached: a study asks for the same run often."""
    from opacus.accountants.analysis.rdp import compute_rdp

    curve = compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(grid)
    )
    return tuple(float(v) for v in curve)


def _randomized_response_rdp(epsilon0: float, grid: np.ndarray) -> np.ndarray:
    r"""Rényi divergence of order :math:`\lambda` between Bernoulli(p) and Bernoulli(1 - p).

    With :math:`p = e^{\varepsilon_0}/(1 + e^{\varepsilon_0})`:
    :math:`D_\lambda = \log(p^\lambda (1-p)^{1-\lambda} + (1-p)^\lambda p^{1-\lambda})/(\lambda-1)`.
    """
    log_p = -math.log1p(math.exp(-epsilon0))
    log_q = -epsilon0 + log_p
    terms = np.logaddexp(grid * log_p + (1 - grid) * log_q, grid * log_q + (1 - grid) * log_p)
    return np.minimum(terms / (grid - 1), epsilon0)


def _delta_at(grid: np.ndarray, curve: np.ndarray, epsilon: float) -> float:
    r"""Smallest :math:`\delta` at ``epsilon`` implied by the RDP curve (the conversion, inverted).

    :math:`\log\delta = \min_\lambda (\lambda-1)(\varepsilon(\lambda) - \varepsilon
    + \log(1 - 1/\lambda)) - \log\lambda`.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        log_delta = (grid - 1) * (curve - epsilon + np.log1p(-1 / grid)) - np.log(grid)
    log_delta = np.where(np.isnan(log_delta), np.inf, log_delta)
    return float(min(1.0, math.exp(min(0.0, float(np.min(log_delta))))))


def _poisson_rdp(
    grid: np.ndarray, curve: np.ndarray, mean: float, pure_epsilon: float | None
) -> np.ndarray:
    out = np.empty_like(curve)
    for i, order in enumerate(grid):
        eps_hat = math.log1p(1 / (order - 1))
        delta_hat = _delta_at(grid, curve, eps_hat)
        if pure_epsilon is not None:
            # Randomized response's exact privacy profile bounds every pure-DP mechanism.
            e0 = math.exp(pure_epsilon) if pure_epsilon < 700 else math.inf
            exact = 0.0 if eps_hat >= pure_epsilon else (e0 - math.exp(eps_hat)) / (1 + e0)
            delta_hat = min(delta_hat, exact) if math.isfinite(exact) else delta_hat
        out[i] = curve[i] + mean * delta_hat + math.log(mean) / (order - 1)
    return out


def _tnb_rdp(grid: np.ndarray, curve: np.ndarray, mean: float, shape: float) -> np.ndarray:
    log_gamma = _tnb_log_gamma(mean, shape)
    with np.errstate(invalid="ignore"):
        hat_terms = (1 - 1 / grid) * curve - log_gamma / grid
    constant = (1 + shape) * float(np.nanmin(hat_terms))
    return curve + constant + math.log(mean) / (grid - 1)


def _tnb_log_mean(log_gamma: float, shape: float) -> float:
    r"""Log of the truncated negative binomial's mean.

    :math:`\mathbb{E}[K] = \eta(1-\gamma)/(\gamma(1-\gamma^\eta))`, and
    :math:`(1-\gamma)/(\gamma\log(1/\gamma))` for :math:`\eta = 0`.
    """
    if log_gamma == 0.0:
        return 0.0
    log_one_minus_gamma = math.log(-math.expm1(log_gamma))
    if shape == 0.0:
        return log_one_minus_gamma - log_gamma - math.log(-log_gamma)
    x = shape * log_gamma  # log(gamma**shape)
    # log|1 - gamma**shape|: x < 0 for shape > 0, x > 0 for -1 < shape < 0.
    log_denominator = math.log(-math.expm1(x)) if x < 0 else x + math.log(-math.expm1(-x))
    return math.log(abs(shape)) + log_one_minus_gamma - log_gamma - log_denominator


def _tnb_log_gamma(mean: float, shape: float) -> float:
    """Log of the halting probability whose mean is ``mean``, rounded towards a larger mean."""
    target = math.log(mean)
    if target == 0.0:
        return 0.0
    low, high = -1.0, 0.0  # log gamma; the mean falls as gamma grows
    while _tnb_log_mean(low, shape) < target:
        high, low = low, 2 * low
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if _tnb_log_mean(middle, shape) >= target:
            low = middle
        else:
            high = middle
    return low  # mean(low) >= mean: the conservative side


def _monotone_envelope(rdp: np.ndarray) -> np.ndarray:
    """RDP is non-decreasing in the order: a bound at a larger order also bounds smaller ones."""
    return np.minimum.accumulate(rdp[::-1])[::-1]


def _rdp_to_epsilon(grid: np.ndarray, rdp: np.ndarray, delta: float) -> float:
    with np.errstate(invalid="ignore"):
        eps = rdp + np.log1p(-1 / grid) - (math.log(delta) + np.log(grid)) / (grid - 1)
    eps = np.where(np.isnan(eps), np.inf, eps)
    return max(0.0, float(np.min(eps)))
