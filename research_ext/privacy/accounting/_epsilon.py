"""Epsilon of the Poisson-subsampled Gaussian mechanism: RDP (``_rdp``), PRV (``_pld``), PLD.

``"prv"`` is our own numerical composition (``_pld``: a dominating discretisation of the privacy
loss, composed by FFT), tens of milliseconds per evaluation; Opacus's PRV accountant
(:func:`opacus_prv_bounds`) took seconds at 1e4-1e5 steps and stays here as an independent
cross-check for the tests only.
"""

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

from research_ext.core import check_int, check_one_of, check_positive, check_probability
from research_ext.privacy.accounting._pld import pld_upper_epsilon
from research_ext.privacy.accounting._rdp import history_rdp_epsilon

__all__ = ["ACCOUNTANTS", "epsilon", "epsilon_of_history"]

#: Accountants offered; each gives a certified upper bound on epsilon.
ACCOUNTANTS = ("prv", "rdp", "pld")

#: PLD discretization of the privacy loss (dp-accounting's ``value_discretization_interval``).
PLD_DISCRETIZATION = 1e-4

History = tuple[tuple[float, float, int], ...]


def _check(fn: str, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> None:
    check_positive(fn, "noise_multiplier", noise_multiplier, allow_zero=True)
    check_probability(fn, "sample_rate", sample_rate)
    check_int(fn, "steps", steps, minimum=0)
    check_probability(fn, "delta", delta, allow_one=False)


def epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "prv",
) -> float:
    r"""Privacy loss epsilon of ``steps`` Poisson-subsampled Gaussian steps at the given delta.

    Each step releases a sum of per-sample gradients clipped to norm C plus
    :math:`\mathcal N(0, \sigma^2 C^2 I)`, on a batch where every example is included
    independently with probability q; after T steps the run is :math:`(\varepsilon, \delta)`-DP.
    Every accountant returns a certified upper bound on the smallest such epsilon:

    * ``"prv"``: numerical composition of the privacy loss (Koskela et al. 2020, Gopi et al.
      2021) with a dominating ("connect-the-dots") discretisation of mesh 1e-4 to 1e-3, both
      add and remove directions, truncation mass added to delta; tight (within 3e-4 relative
      above dp-accounting's PLD, never below it, on the tests' grid) and tens of milliseconds.
    * ``"rdp"``: Rényi DP (Mironov et al. 2019) over integer orders up to 8192 (exact closed
      form, vectorised) and Opacus's fractional orders below 11; looser than PRV, never looser
      than Opacus's or dp-accounting's RDP accountants.
    * ``"pld"``: Google's dp-accounting privacy-loss-distribution accountant (needs the ``pld``
      extra); tight.

    Args:
        noise_multiplier: sigma, the noise std over the clipping norm (>= 0; 0 gives ``inf``).
        sample_rate: q, the Poisson sampling probability, in (0, 1].
        steps: T, the number of noisy steps (>= 0; 0 steps cost nothing).
        delta: target delta in (0, 1).
        accountant: ``"prv"`` (default), ``"rdp"`` or ``"pld"``.

    Returns:
        epsilon as a float (results are cached).

    Raises:
        ValueError, TypeError: if an argument is out of range or of the wrong type.
        ImportError: for ``accountant="pld"`` without dp-accounting installed.

    Example:
        >>> round(epsilon(1.0, 0.01, 1000, 1e-5, accountant="rdp"), 2)
        2.1
        >>> epsilon(1.0, 0.01, 1000, 1e-5) < epsilon(1.0, 0.01, 1000, 1e-5, accountant="rdp")
        True

    References:
        Abadi et al., "Deep Learning with Differential Privacy", 2016.
        Gopi, Lee, Wutschitz, "Numerical Composition of Differential Privacy", 2021.
        Mironov, Talwar, Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", 2019.
    """
    _check("epsilon", noise_multiplier, sample_rate, steps, delta)
    check_one_of("epsilon", "accountant", accountant, ACCOUNTANTS)
    return epsilon_of_history(
        ((float(noise_multiplier), float(sample_rate), steps),), delta, accountant
    )


def epsilon_of_history(
    history: Sequence[tuple[float, float, int]], delta: float, accountant: str = "prv"
) -> float:
    """Epsilon of a run made of phases ``(noise_multiplier, sample_rate, steps)`` (cached)."""
    key = tuple((float(s), float(q), int(t)) for s, q, t in history if t > 0)
    if not key:
        return 0.0
    if any(s == 0.0 for s, _, _ in key):
        return math.inf
    return _epsilon_cached(key, float(delta), accountant)


@functools.lru_cache(maxsize=4096)
def _epsilon_cached(history: History, delta: float, accountant: str) -> float:
    if accountant == "rdp":
        return rdp_epsilon(history, delta)
    if accountant == "pld":
        return pld_epsilon(history, delta)
    return pld_upper_epsilon(history, delta)


def rdp_epsilon(history: History, delta: float, orders: Sequence[float] | None = None) -> float:
    """RDP epsilon: integer orders to 8192 plus fractional ones (``_rdp``), or Opacus at ``orders``.

    The default orders reach far beyond Opacus's 63, so small epsilons are not capped by the
    order range (at 63 the bound can be several times too large).
    """
    if orders is None:
        return history_rdp_epsilon(history, delta)
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(s, q, t) for s, q, t in history]
    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": the bound stays valid, only less tight.
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta, alphas=list(orders)))


def _prv_accountant(history: History) -> Any:
    """Opacus's PRV accountant whose truncation domain is bounded with integer Rényi orders.

    The domain half-width follows Gopi et al. (2021, remark 5.6): the RDP epsilon of the whole
    run at delta_error / 4, of one step at delta_error / (8 T), and eps_error, plus 3. Any valid
    RDP bound serves; the vectorised integer orders of ``_rdp`` (to 8192) give a smaller, still
    valid, domain than Opacus's 150 orders, at a fraction of the cost. The grid is then widened
    to the next length with small prime factors, so the FFTs of the composition stay fast (a
    wider domain only truncates less).
    """
    from opacus.accountants import PRVAccountant
    from opacus.accountants.analysis.prv import Domain
    from scipy.fft import next_fast_len

    class _Accountant(PRVAccountant):  # type: ignore[misc]  # opacus ships no type information
        def _get_domain(
            self, prvs: Any, num_self_compositions: Any, eps_error: float, delta_error: float
        ) -> Any:
            total = sum(num_self_compositions)
            phases = tuple(
                (p.noise_multiplier, p.sample_rate, n)
                for p, n in zip(prvs, num_self_compositions, strict=True)
            )
            bound = history_rdp_epsilon(phases, delta_error / 4, fractional=False)
            for sigma, q, _ in phases:
                one = ((sigma, q, 1),)
                bound = max(
                    bound, history_rdp_epsilon(one, delta_error / (8 * total), fractional=False)
                )
            half_width = max(bound, eps_error) + 3
            mesh = eps_error / math.sqrt(total * math.log(12 / delta_error) / 2)
            # Opacus's aligned domain is [-k dt, (k + 1) dt] with 2k + 2 points (the Fourier
            # composition relies on that centring); pick k so that 2k + 2 is a fast length.
            size = next_fast_len(2 * math.ceil(half_width / mesh) + 2, real=True)
            while size % 2:
                size = next_fast_len(size + 1, real=True)
            k = size // 2 - 1
            return Domain(t_min=-k * mesh, t_max=(k + 1) * mesh, size=size)

    acc = _Accountant()
    acc.history = [(s, q, t) for s, q, t in history]
    return acc


def opacus_prv_bounds(
    history: History, delta: float, eps_error: float
) -> tuple[float, float, float]:
    """Opacus's PRV ``(lower, estimate, upper)``; upper - lower <= 2 * eps_error (tests only)."""
    acc = _prv_accountant(history)
    delta_error = delta / 1000  # Opacus's default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dprv = acc._get_dprv(eps_error=eps_error, delta_error=delta_error)
        low, estimate, high = dprv.compute_epsilon(delta, delta_error, eps_error)
    return float(low), float(estimate), float(high)


def pld_epsilon(history: History, delta: float) -> float:
    """PLD epsilon through dp-accounting (the optional ``pld`` extra)."""
    from research_ext.core import require

    dp_accounting = require("dp_accounting", extra="pld")
    pld = require("dp_accounting.pld.pld_privacy_accountant", extra="pld")
    acc = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    for s, q, t in history:
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(s))
        acc.compose(event, t)
    value = float(acc.get_epsilon(delta))
    return value if math.isfinite(value) else math.inf
