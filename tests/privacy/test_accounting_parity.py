"""Epsilon against Opacus's accountants and dp-accounting's PLD; calibration round trips."""

import pytest

from research_ext.privacy import PrivacyAccountant, epsilon, noise_multiplier_for
from tests.helpers import RTOL_ACCOUNTING_QUADRATURE, RTOL_RDP

CASES = [(1.1, 0.01, 1000), (0.8, 0.1, 50), (2.0, 0.05, 200)]
DELTA = 1e-5


def _pld(sigma, q, steps, delta):
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return acc.get_epsilon(delta)


@pytest.mark.parametrize(("sigma", "q", "steps"), CASES)
def test_prv_agrees_with_dp_accounting_pld(sigma, q, steps):
    ours = epsilon(sigma, q, steps, DELTA)
    reference = _pld(sigma, q, steps, DELTA)
    assert abs(ours - reference) / reference < 0.005


@pytest.mark.parametrize(("sigma", "q", "steps"), CASES[:1])
def test_rdp_is_never_looser_than_opacus_and_bounds_prv(sigma, q, steps):
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    rdp = epsilon(sigma, q, steps, DELTA, accountant="rdp")
    assert rdp <= acc.get_epsilon(DELTA) * (1 + RTOL_RDP)
    assert rdp >= epsilon(sigma, q, steps, DELTA)


def _dp_accounting_rdp(sigma, q, steps, delta, orders=None):
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    acc = RdpAccountant(orders=orders)
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return acc.get_epsilon(delta)


RDP_GRID = [
    (sigma, q, steps, delta)
    for sigma in (0.7, 1.5, 5.0)
    for q in (0.001, 0.05)
    for steps in (10, 1000, 100_000)
    for delta in (1e-5, 1e-8)
]


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), RDP_GRID)
def test_rdp_against_dp_accounting_over_a_grid(sigma, q, steps, delta):
    from research_ext.privacy.accounting._rdp import INTEGER_ORDERS, history_rdp_epsilon

    ours = epsilon(sigma, q, steps, delta, accountant="rdp")
    # never looser than dp-accounting's own RDP accountant (its default orders stop at 1024)
    assert ours <= _dp_accounting_rdp(sigma, q, steps, delta) * (1 + RTOL_RDP)
    # on the integer orders both evaluate the same closed form, independently
    integer = history_rdp_epsilon(((sigma, q, steps),), delta, fractional=False)
    reference = _dp_accounting_rdp(sigma, q, steps, delta, orders=list(INTEGER_ORDERS))
    assert integer == pytest.approx(reference, rel=RTOL_RDP)
    assert ours <= integer


@pytest.mark.parametrize(("sigma", "q"), [(0.7, 0.05), (2.0, 0.01), (1.0, 0.3)])
def test_fractional_orders_match_numerical_integration(sigma, q):
    # dp-accounting bounds fractional orders from above; ours (Opacus's series) is exact:
    # check it against the Rényi divergence of (1-q) N(0, s^2) + q N(1, s^2) from N(0, s^2),
    # integrated numerically.
    import math

    import numpy as np
    from scipy import integrate

    from research_ext.privacy.accounting._rdp import subsampled_gaussian_rdp

    orders, rdp = subsampled_gaussian_rdp(sigma, q)
    for order, value in zip(orders, rdp, strict=True):
        if order not in (1.5, 2.5, 4.3, 7.7, 10.9):
            continue

        def integrand(z, order=float(order)):
            log_base = -z * z / (2 * sigma**2) - math.log(math.sqrt(2 * math.pi) * sigma)
            log_ratio = np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * sigma**2))
            return math.exp(log_base + order * float(log_ratio))

        moment, _ = integrate.quad(integrand, -40, 40, limit=500, epsabs=0, epsrel=1e-12)
        assert value == pytest.approx(
            math.log(moment) / (order - 1), rel=RTOL_ACCOUNTING_QUADRATURE
        )


def test_rdp_is_not_capped_at_small_epsilon():
    # Opacus's orders stop at 63: here its RDP bound is several times too large.
    import warnings

    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(20.0, 0.01, 100)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "optimal order is the largest alpha"
        capped = acc.get_epsilon(DELTA)
    ours = epsilon(20.0, 0.01, 100, DELTA, accountant="rdp")
    assert ours < capped / 3
    assert ours <= _dp_accounting_rdp(20.0, 0.01, 100, DELTA) * (1 + RTOL_RDP)


# Calibration returns sigma within 0.5 % of the smallest sigma whose epsilon <= target.
TIGHTNESS = 1.005
CALIBRATION_GRID = [
    # (target epsilon, delta, sample rate, steps)
    (0.5, 1e-5, 0.001, 5000),  # the case: PRV was 3.1 % loose, RDP 1.9 %
    (1.0, 1e-5, 256 / 1797, 300),
    (8.0, 1e-5, 0.01, 1000),
    (2.0, 1e-7, 0.05, 200),
]
SLOW_CALIBRATION_GRID = [(3.0, 1e-5, 0.0043, 13953), (2.0, 1e-6, 0.001, 100_000)]


def _calibration_cases():
    # RDP is cheap everywhere; PRV and PLD evaluations take seconds, so only the case
    # (PRV) and one PLD case run in the fast suite.
    for accountant in ("prv", "pld", "rdp"):
        for i, case in enumerate(CALIBRATION_GRID + SLOW_CALIBRATION_GRID):
            fast = accountant == "rdp" and case in CALIBRATION_GRID
            fast = fast or (accountant, i) in {("prv", 0), ("pld", 1)}
            yield pytest.param(accountant, *case, marks=() if fast else pytest.mark.slow)


@pytest.mark.parametrize(
    ("accountant", "target", "delta", "q", "steps"), list(_calibration_cases())
)
def test_calibration_is_feasible_and_within_half_a_percent(accountant, target, delta, q, steps):
    # Its speed is measured by benchmarks/bench_privacy_calibration.py, not asserted here.
    sigma = noise_multiplier_for(target, delta, q, steps, accountant=accountant)
    assert epsilon(sigma, q, steps, delta, accountant=accountant) <= target
    # Tight: 0.5 % less noise overspends (by dp-accounting's tight PLD for PRV and PLD).
    smaller = sigma / TIGHTNESS
    if accountant == "rdp":  # the RDP bound itself is checked against dp-accounting above
        assert epsilon(smaller, q, steps, delta, accountant="rdp") > target
    else:
        assert _pld(smaller, q, steps, delta) > target


def test_accountant_history_composes_like_one_phase():
    acc = PrivacyAccountant("rdp")
    for _ in range(30):
        acc.step(noise_multiplier=1.0, sample_rate=0.05)
    acc.step(noise_multiplier=1.0, sample_rate=0.05, steps=20)
    assert acc.history == [[1.0, 0.05, 50]]
    assert acc.epsilon(DELTA) == epsilon(1.0, 0.05, 50, DELTA, accountant="rdp")
    acc.step(noise_multiplier=2.0, sample_rate=0.05, steps=10)
    assert acc.epsilon(DELTA) > epsilon(1.0, 0.05, 50, DELTA, accountant="rdp")
    restored = PrivacyAccountant("rdp")
    restored.load_state_dict(acc.state_dict())
    assert restored.history == acc.history


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_rate": 0.0}, r"epsilon: `sample_rate` must be a number in \(0.0, 1.0\]"),
        (
            {"sample_rate": 1.5},
            r"`sample_rate` must be a number in \(0.0, 1.0\], got sample_rate=1.5",
        ),
        ({"delta": 1.0}, r"epsilon: `delta` must be a number in \(0.0, 1.0\), got delta=1.0"),
        ({"noise_multiplier": -1.0}, r"`noise_multiplier` must be a finite number >= 0"),
        (
            {"accountant": "gdp"},
            r"`accountant` must be one of 'prv', 'rdp', 'pld', got accountant='gdp'",
        ),
    ],
)
def test_epsilon_rejects_bad_arguments(kwargs, match):
    args = {"noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 10, "delta": 1e-5} | kwargs
    with pytest.raises(ValueError, match=match):
        epsilon(**args)


def test_calibration_rejects_bad_arguments():
    with pytest.raises(
        ValueError, match=r"noise_multiplier_for: `target_epsilon` must be a finite number > 0"
    ):
        noise_multiplier_for(0.0, 1e-5, 0.01, 100)
    with pytest.raises(ValueError, match=r"`steps` must be a positive int, got steps=0"):
        noise_multiplier_for(1.0, 1e-5, 0.01, 0)
    with pytest.raises(
        ValueError, match=r"`target_epsilon` must be reachable with noise_multiplier <= 1e4"
    ):
        noise_multiplier_for(1e-9, 1e-5, 1.0, 10**6)
