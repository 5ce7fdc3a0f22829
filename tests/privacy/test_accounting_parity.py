"""Epsilon against Opacus's accountants and dp-accounting's PLD; calibration round trips."""

import pytest

from research_ext.privacy import PrivacyAccountant, epsilon, noise_multiplier_for

CASES = [(1.1, 0.01, 1000), (0.8, 0.1, 50), (2.0, 0.05, 200)]
DELTA = 1e-5


def _pld(sigma, q, steps, delta):
    dp_accounting = pytest.importorskip("dp_accounting")
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
def test_rdp_matches_opacus_and_bounds_prv(sigma, q, steps):
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    rdp = epsilon(sigma, q, steps, DELTA, accountant="rdp")
    assert rdp == pytest.approx(acc.get_epsilon(DELTA), rel=1e-12)
    assert rdp >= epsilon(sigma, q, steps, DELTA)


def test_pld_accountant_matches_dp_accounting():
    assert epsilon(1.1, 0.01, 1000, DELTA, accountant="pld") == pytest.approx(
        _pld(1.1, 0.01, 1000, DELTA), rel=1e-9
    )


def test_epsilon_is_monotone():
    base = epsilon(1.0, 0.02, 300, DELTA, accountant="rdp")
    assert epsilon(1.0, 0.02, 600, DELTA, accountant="rdp") > base  # more steps
    assert epsilon(1.5, 0.02, 300, DELTA, accountant="rdp") < base  # more noise
    assert epsilon(1.0, 0.04, 300, DELTA, accountant="rdp") > base  # higher sample rate
    assert epsilon(1.0, 0.02, 0, DELTA) == 0.0
    assert epsilon(0.0, 0.02, 5, DELTA) == float("inf")


@pytest.mark.parametrize(
    ("target", "q", "steps"),
    [
        pytest.param(3.0, 0.0043, 13953, marks=pytest.mark.slow),
        (1.0, 256 / 1797, 300),
        (8.0, 0.01, 1000),
    ],
)
def test_calibration_round_trip_is_feasible_and_tight(target, q, steps):
    # Its speed (<= 1 s) is measured by benchmarks/bench_privacy_calibration.py, not asserted here.
    sigma = noise_multiplier_for(target, DELTA, q, steps)
    spent = epsilon(sigma, q, steps, DELTA)
    assert spent <= target
    # Tight: 2% less noise would overspend (checked with the independent PLD accountant).
    assert _pld(sigma * 0.98, q, steps, DELTA) > target


def test_calibration_rdp_round_trip():
    sigma = noise_multiplier_for(2.0, DELTA, 0.01, 1000, accountant="rdp")
    assert epsilon(sigma, 0.01, 1000, DELTA, accountant="rdp") <= 2.0
    assert epsilon(sigma * 0.99, 0.01, 1000, DELTA, accountant="rdp") > 2.0


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
