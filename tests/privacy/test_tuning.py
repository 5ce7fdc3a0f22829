"""tuning_epsilon against dp-accounting's RepeatAndSelect event and a direct implementation."""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy import optimize, special

from research_ext.privacy import tuning_epsilon

dp_accounting = pytest.importorskip("dp_accounting")
from dp_accounting import dp_event  # noqa: E402
from dp_accounting.rdp import RdpAccountant  # noqa: E402

ORDERS = (
    [1 + k / 10 for k in range(1, 100)] + list(range(11, 64)) + [80, 96, 128, 192, 256, 512, 1024]
)
# dp-accounting bounds the subsampled Gaussian's RDP slightly differently at fractional orders;
# with noise multiplier >= 1 the two agree to ~1e-5 relative.
RTOL_DP_ACCOUNTING = 2e-4
# Integer orders keep Opacus's RDP fast in the property tests.
FAST_ORDERS = [1.5, *range(2, 64), 96, 128, 256]
MNIST_RUN = (1.1, 256 / 60000, 14000)  # noise multiplier, sample rate, steps (60 epochs)


def _dp_accounting_epsilon(run, delta, mean, shape):
    noise, rate, steps = run
    single = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(rate, dp_event.GaussianDpEvent(noise)), steps
    )
    accountant = RdpAccountant(orders=ORDERS)
    if shape is None:
        accountant.compose(single, mean)
    else:
        accountant.compose(dp_event.RepeatAndSelectDpEvent(single, mean, shape))
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("run", [MNIST_RUN, (1.0, 0.01, 1000), (2.0, 1.0, 10)])
@pytest.mark.parametrize(
    ("distribution", "mean", "shape"),
    [
        ("naive", 1, None),
        ("naive", 10, None),
        ("poisson", 10, math.inf),
        ("poisson", 3.5, math.inf),
        ("truncated_negative_binomial", 10, 1.0),
        ("truncated_negative_binomial", 10, 0.0),
        ("truncated_negative_binomial", 5, 2.5),
        ("truncated_negative_binomial", 3, 0.5),
    ],
)
def test_matches_dp_accounting_repeat_and_select(run, distribution, mean, shape):
    delta = 1e-5
    kwargs = {} if shape in (None, math.inf) else {"shape": shape}
    ours = tuning_epsilon(run, delta, mean, distribution=distribution, orders=ORDERS, **kwargs)
    reference = _dp_accounting_epsilon(run, delta, mean, shape)
    assert ours == pytest.approx(reference, rel=RTOL_DP_ACCOUNTING)
    assert ours <= reference * (1 + 1e-9)


def test_issue_figures_for_an_mnist_like_run():
    single = tuning_epsilon(MNIST_RUN, 1e-5, 1, distribution="naive")
    naive = tuning_epsilon(MNIST_RUN, 1e-5, 10, distribution="naive")
    poisson = tuning_epsilon(MNIST_RUN, 1e-5, 10, distribution="poisson")
    geometric = tuning_epsilon(MNIST_RUN, 1e-5, 10, distribution="truncated_negative_binomial")
    assert single == pytest.approx(2.59, abs=0.02)
    assert naive == pytest.approx(9.57, abs=0.05)
    assert single < geometric < poisson < naive


def _direct_tnb_epsilon(noise, steps, delta, mean, shape):
    """Theorem 2 of Papernot & Steinke for a full-batch Gaussian run, from the pmf's series."""
    orders = np.asarray(ORDERS, dtype=float)
    curve = orders * steps / (2 * noise**2)  # Gaussian mechanism, sensitivity 1, composed

    def series_mean(gamma):
        k = np.arange(1, 200_000, dtype=float)
        log_pmf = (
            special.gammaln(k + shape)
            - special.gammaln(k + 1)
            - special.gammaln(shape)
            + k * np.log1p(-gamma)
            + shape * np.log(gamma)
        )
        sign = np.sign(special.gamma(shape))  # Gamma(shape) < 0 for -1 < shape < 0
        pmf = sign * np.exp(log_pmf) / (1 - gamma**shape)
        return float(np.sum(k * pmf))

    gamma = optimize.brentq(lambda g: series_mean(g) - mean, 1e-4, 1 - 1e-9, xtol=1e-14)
    best_hat = np.min((1 - 1 / orders) * curve + np.log(1 / gamma) / orders)
    rdp = curve + (1 + shape) * best_hat + np.log(mean) / (orders - 1)
    rdp = np.minimum.accumulate(rdp[::-1])[::-1]
    eps = rdp + np.log1p(-1 / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)
    return float(np.min(eps))


@pytest.mark.parametrize(("mean", "shape"), [(10, 1.0), (4, 0.5), (7, 3.0), (5, -0.5)])
def test_truncated_negative_binomial_matches_direct_implementation(mean, shape):
    ours = tuning_epsilon(
        (3.0, 1.0, 4),
        1e-6,
        mean,
        distribution="truncated_negative_binomial",
        shape=shape,
        orders=ORDERS,
    )
    assert ours == pytest.approx(_direct_tnb_epsilon(3.0, 4, 1e-6, mean, shape), rel=1e-6)


def _renyi_bernoulli(p, order):
    """Rényi divergence D_order(Bern(p) || Bern(1-p)) by its definition."""
    return math.log(p**order * (1 - p) ** (1 - order) + (1 - p) ** order * p ** (1 - order)) / (
        order - 1
    )


@pytest.mark.parametrize("epsilon0", [0.1, 1.0, 3.0])
def test_pure_dp_run_uses_randomized_response_curve(epsilon0):
    p = math.exp(epsilon0) / (1 + math.exp(epsilon0))
    delta = 1e-6
    orders = [a for a in ORDERS if a <= 64]  # the direct formula overflows beyond
    naive = tuning_epsilon(epsilon0, delta, 3, distribution="naive", orders=orders)
    direct = min(
        3 * _renyi_bernoulli(p, a) + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1)
        for a in orders
    )
    assert naive == pytest.approx(min(max(direct, 0.0), 3 * epsilon0), rel=1e-9)
    # Liu & Talwar: the geometric search over an eps0-DP run is 3*eps0-DP; RDP gets close to it.
    geometric = tuning_epsilon(epsilon0, delta, 10, distribution="truncated_negative_binomial")
    assert epsilon0 < geometric <= 3 * epsilon0
    assert tuning_epsilon(0.0, delta, 10, distribution="truncated_negative_binomial") == 0.0


@given(
    noise=st.floats(0.7, 5.0),
    rate=st.floats(1e-3, 1.0),
    steps=st.integers(1, 2000),
    mean=st.floats(1.0, 50.0),
    shape=st.floats(-0.9, 5.0),
)
def test_monotone_in_runs_and_never_below_one_run(noise, rate, steps, mean, shape):
    run = (noise, rate, steps)
    single = tuning_epsilon(run, 1e-5, 1, distribution="naive", orders=FAST_ORDERS)
    for distribution in ("poisson", "truncated_negative_binomial"):
        low = tuning_epsilon(
            run, 1e-5, mean, distribution=distribution, shape=shape, orders=FAST_ORDERS
        )
        high = tuning_epsilon(
            run, 1e-5, mean * 2, distribution=distribution, shape=shape, orders=FAST_ORDERS
        )
        assert single <= low * (1 + 1e-12) <= high * (1 + 1e-12)
    assert tuning_epsilon(run, 1e-5, 2, distribution="naive", orders=FAST_ORDERS) >= single


@given(noise=st.floats(0.7, 5.0), rate=st.floats(1e-3, 1.0), steps=st.integers(1, 2000))
def test_falls_with_noise_and_grows_with_steps(noise, rate, steps):
    base = tuning_epsilon((noise, rate, steps), 1e-5, 10, orders=FAST_ORDERS)
    assert tuning_epsilon((noise * 1.5, rate, steps), 1e-5, 10, orders=FAST_ORDERS) <= base * (
        1 + 1e-12
    )
    assert tuning_epsilon((noise, rate, steps + 100), 1e-5, 10, orders=FAST_ORDERS) >= base * (
        1 - 1e-12
    )
    assert tuning_epsilon((noise, rate, steps), 1e-3, 10, orders=FAST_ORDERS) <= base * (1 + 1e-12)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (
            (MNIST_RUN, 0.0, 10),
            {},
            ValueError,
            r"tuning_epsilon: `delta` must be a number in \(0.0, 1.0\), got delta=0.0",
        ),
        (
            (MNIST_RUN, 1e-5, 0.5),
            {},
            ValueError,
            r"`n_runs` must be a number in \[1.0, inf\), got n_runs=0.5",
        ),
        (
            (MNIST_RUN, 1e-5, 2.5),
            {"distribution": "naive"},
            TypeError,
            r"`n_runs` must be a positive int, got n_runs=2.5",
        ),
        (
            (MNIST_RUN, 1e-5, 3),
            {"distribution": "grid"},
            ValueError,
            r"`distribution` must be one of 'poisson', 'truncated_negative_binomial', 'naive', got distribution='grid'",
        ),
        (
            (MNIST_RUN, 1e-5, 3),
            {"distribution": "truncated_negative_binomial", "shape": -1.0},
            ValueError,
            r"`shape` must be a number in \(-1.0, inf\), got shape=-1.0",
        ),
        (
            (MNIST_RUN, 1e-5, 3),
            {"orders": [0.5, 2]},
            ValueError,
            r"`orders` must be a non-empty sequence of finite numbers > 1, got orders=\[0.5, 2\]",
        ),
        (
            ("2.0", 1e-5, 3),
            {},
            TypeError,
            r"`single_run` must be a float epsilon or a \(noise_multiplier, sample_rate, steps\) triple, got single_run='2.0'",
        ),
        (
            (-1.0, 1e-5, 3),
            {},
            ValueError,
            r"`single_run` must be a finite number >= 0, got single_run=-1.0",
        ),
        (
            ((0.0, 0.1, 10), 1e-5, 3),
            {},
            ValueError,
            r"`noise_multiplier` must be a finite number > 0, got noise_multiplier=0.0",
        ),
        (
            ((1.0, 1.5, 10), 1e-5, 3),
            {},
            ValueError,
            r"`sample_rate` must be a number in \(0.0, 1.0\], got sample_rate=1.5",
        ),
        (((1.0, 0.1, 0), 1e-5, 3), {}, ValueError, r"`steps` must be a positive int, got steps=0"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        tuning_epsilon(*args, **kwargs)
