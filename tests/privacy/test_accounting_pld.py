"""Our numerical (PRV) accountant: an upper bound on epsilon, tight against independent ones."""

import itertools
import math

import pytest

from research_ext.privacy import epsilon
from research_ext.privacy.accounting._epsilon import opacus_prv_bounds
from research_ext.privacy.accounting._pld import pld_upper_epsilon
from tests.helpers import RTOL_OVER_DP_ACCOUNTING, RTOL_OVER_EXACT


def _dp_accounting(history, delta):
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for sigma, q, steps in history:
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
        acc.compose(event, steps)
    return acc.get_epsilon(delta)


def _check_against_dp_accounting(history, delta):
    ours = pld_upper_epsilon(history, delta)
    reference = _dp_accounting(history, delta)
    assert reference <= ours <= reference * (1 + RTOL_OVER_DP_ACCOUNTING) + 1e-9


FAST_GRID = [((4.0, 0.05, 100), 1e-5), ((2.0, 0.01, 500), 1e-8), ((4.0, 1.0, 10), 1e-6)]
SLOW_GRID = [
    ((sigma, q, steps), delta)
    for (sigma, q, steps), delta in zip(
        itertools.product((0.5, 1.0, 4.0), (0.001, 0.05, 1.0), (1, 100, 3000)),
        itertools.cycle((1e-5, 1e-8)),
    )
    if not (q == 1.0 and steps == 3000 and sigma < 4)  # epsilon in the thousands: slow there
]


@pytest.mark.parametrize(("phase", "delta"), FAST_GRID)
def test_never_below_dp_accounting_and_close_to_it(phase, delta):
    _check_against_dp_accounting((phase,), delta)


@pytest.mark.slow
@pytest.mark.parametrize(("phase", "delta"), SLOW_GRID)
def test_never_below_dp_accounting_over_a_grid(phase, delta):
    _check_against_dp_accounting((phase,), delta)


def test_phases_compose_like_dp_accounting():
    _check_against_dp_accounting(((2.0, 0.02, 300), (4.0, 0.05, 200)), 1e-5)


def _exact_gaussian(sigma, steps, delta):
    """Exact epsilon of ``steps`` Gaussian mechanisms (q = 1): a Gaussian with mu = sqrt(T)/sigma."""
    from scipy.optimize import brentq
    from scipy.special import log_ndtr, ndtr

    mu = math.sqrt(steps) / sigma

    def excess(eps):
        return ndtr(-eps / mu + mu / 2) - math.exp(eps + log_ndtr(-eps / mu - mu / 2)) - delta

    return brentq(excess, 0.0, mu * mu + 50 * mu + 50, xtol=1e-13, rtol=1e-14)


@pytest.mark.parametrize(
    ("sigma", "steps", "delta"),
    [(1.0, 1, 1e-5), (0.5, 1, 1e-8), (3.0, 10, 1e-5), (20.0, 1, 1e-5), (100.0, 1000, 1e-6)]
    + [(0.5, 3000, 1e-5), (1.0, 3000, 1e-8), (0.05, 1, 1e-5), (0.02, 1, 1e-5)],  # eps in 100s-1000s
)
def test_bounds_the_exact_epsilon_of_the_gaussian_mechanism(sigma, steps, delta):
    exact = _exact_gaussian(sigma, steps, delta)
    ours = pld_upper_epsilon(((sigma, 1.0, steps),), delta)
    assert exact <= ours <= exact * (1 + RTOL_OVER_EXACT)


@pytest.mark.parametrize(("sigma", "q", "steps"), [(0.84, 0.001, 5000), (1.1, 0.01, 1000)])
def test_between_opacus_prv_bounds(sigma, q, steps):
    # Opacus's PRV accountant (Gopi et al.'s error bounds), an independent implementation, is
    # kept as a cross-check only: ours is never below its lower bound nor above its upper one.
    low, _, high = opacus_prv_bounds(((sigma, q, steps),), 1e-5, 0.01)
    assert low <= epsilon(sigma, q, steps, 1e-5) <= high


def test_extremes_stay_finite_and_ordered():
    assert 0.0 < epsilon(1e3, 0.01, 10, 1e-5) < 1e-3
    assert epsilon(50.0, 0.5, 10**6, 1e-5) < epsilon(50.0, 0.5, 10**6, 1e-7)
    values = [epsilon(s, 0.01, 1000, 1e-5) for s in (0.6, 0.8, 1.0, 2.0)]
    assert values == sorted(values, reverse=True)
    assert all(math.isfinite(v) for v in values)
