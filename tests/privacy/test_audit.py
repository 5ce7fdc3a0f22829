"""Privacy auditing: estimators against direct formulas and simulations; broken engines caught."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from scipy import optimize, stats
from torch import nn
from torch.func import functional_call, grad, vmap

from research_ext.privacy.audit import (
    AuditResult,
    Canaries,
    audit,
    clopper_pearson_epsilon,
    dirac_canaries,
    input_canaries,
    one_run_epsilon,
    one_run_p_value,
    plot_audit,
)
from tests.helpers import ATOL_TAIL_PROBABILITY, RTOL_ACCOUNTING_SERIES, RTOL_CLOPPER_PEARSON

DELTA = 1e-5


def _rdp_epsilon(noise_multiplier, sample_rate, steps, delta):
    """The claimed epsilon, from dp-accounting's RDP accountant (an independent accountant)."""
    import dp_accounting

    accountant = dp_accounting.rdp.RdpAccountant(orders=[1.5, *range(2, 64), 80, 128, 256])
    event = dp_accounting.PoissonSampledDpEvent(
        sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


# --- estimators -------------------------------------------------------------------------------


def _p_value_by_loop(m, r, v, eps, delta):
    """Steinke, Nasr & Jagielski (2023), Theorem 3.3, written term by term."""
    p = math.exp(eps) / (1 + math.exp(eps))
    tail = sum(math.comb(r, j) * p**j * (1 - p) ** (r - j) for j in range(v, r + 1))
    worst = 0.0
    for i in range(1, v + 1):
        mass = sum(math.comb(r, j) * p**j * (1 - p) ** (r - j) for j in range(v - i, v))
        worst = max(worst, mass / i)
    return min(1.0, tail + 2 * m * delta * worst)


@pytest.mark.parametrize(
    ("m", "r", "v", "eps", "delta"),
    [
        (100, 100, 60, 0.0, 0.0),
        (200, 50, 45, 1.0, 1e-5),
        (1000, 300, 250, 1.5, 1e-3),
        (10, 4, 0, 2.0, 0.1),
    ],
)
def test_one_run_p_value_matches_term_by_term_formula(m, r, v, eps, delta):
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(
        _p_value_by_loop(m, r, v, eps, delta), rel=RTOL_ACCOUNTING_SERIES, abs=ATOL_TAIL_PROBABILITY
    )


def _gaussian_epsilon(mu, delta):
    """Exact epsilon of the Gaussian mechanism with sensitivity/std = mu (Balle & Wang 2018)."""

    def profile(e):
        return (
            stats.norm.cdf(-e / mu + mu / 2)
            - math.exp(e) * stats.norm.cdf(-e / mu - mu / 2)
            - delta
        )

    return optimize.brentq(profile, 0.0, 50.0)


def _simulated_scores(mu, m, generator):
    """One run of the Gaussian mechanism per canary: a member's score is shifted by mu."""
    member = torch.rand(m, generator=generator) < 0.5
    scores = torch.randn(m, generator=generator, dtype=torch.float64) + mu * member
    return scores, member


def test_one_run_bound_holds_and_has_power_on_gaussian_mechanism():
    mu, m, delta = 2.0, 1000, 1e-5
    true_eps = _gaussian_epsilon(mu, delta)
    g = torch.Generator().manual_seed(0)
    bounds = [one_run_epsilon(*_simulated_scores(mu, m, g), delta=delta)[0] for _ in range(30)]
    # valid with probability 0.95 per trial: at most a handful of 30 trials may exceed
    assert sum(b > true_eps for b in bounds) <= 4
    assert np.median(bounds) > 0.25 * true_eps  # and not vacuous


def test_one_run_bound_on_randomized_response_is_valid():
    eps_true, m = 1.0, 2000
    g = torch.Generator().manual_seed(1)
    exceed = 0
    for _ in range(30):
        member = torch.rand(m, generator=g) < 0.5
        keep = torch.rand(m, generator=g) < math.exp(eps_true) / (1 + math.exp(eps_true))
        scores = torch.where(keep, member, ~member).double()
        exceed += one_run_epsilon(scores, member, delta=0.0, num_guesses=[m])[0] > eps_true
    assert exceed <= 4


@pytest.mark.parametrize(("tp", "fp", "n"), [(90, 5, 100), (400, 20, 500), (30, 0, 30)])
def test_clopper_pearson_fixed_threshold_matches_scipy_exact_interval(tp, fp, n):
    scores_in = torch.cat([torch.ones(tp), -torch.ones(n - tp)])
    scores_out = torch.cat([torch.ones(fp), -torch.ones(n - fp)])
    confidence, delta = 0.95, 1e-4
    # alpha split over two rates and two directions: one-sided at alpha = two-sided at 1 - 2 alpha
    level = 1 - 2 * (1 - confidence) / 4
    tpr_low = stats.binomtest(tp, n).proportion_ci(level, method="exact").low
    fpr_high = stats.binomtest(fp, n).proportion_ci(level, method="exact").high
    tnr_low = stats.binomtest(n - fp, n).proportion_ci(level, method="exact").low
    fnr_high = stats.binomtest(n - tp, n).proportion_ci(level, method="exact").high
    expected = max(
        0.0, math.log((tpr_low - delta) / fpr_high), math.log((tnr_low - delta) / fnr_high)
    )
    ours = clopper_pearson_epsilon(
        scores_in, scores_out, delta=delta, confidence=confidence, threshold=0.0
    )
    assert ours == pytest.approx(expected, rel=RTOL_CLOPPER_PEARSON)


def test_clopper_pearson_threshold_search_is_valid_on_gaussian_mechanism():
    mu, n, delta = 1.5, 1000, 1e-5
    true_eps = _gaussian_epsilon(mu, delta)
    g = torch.Generator().manual_seed(2)
    bounds = [
        clopper_pearson_epsilon(
            torch.randn(n, generator=g) + mu, torch.randn(n, generator=g), delta=delta
        )
        for _ in range(20)
    ]
    assert max(bounds) <= true_eps
    assert min(bounds) > 0.2 * true_eps


@given(
    seed=st.integers(0, 2**31),
    shift=st.floats(0.0, 4.0),
    confidence=st.floats(0.5, 0.99),
    delta=st.floats(0.0, 1e-2),
)
def test_bounds_fall_with_confidence_and_delta(seed, shift, confidence, delta):
    scores, member = _simulated_scores(shift, 200, torch.Generator().manual_seed(seed))
    loose = one_run_epsilon(scores, member, delta=delta, confidence=confidence)[0]
    strict = one_run_epsilon(scores, member, delta=delta, confidence=(1 + confidence) / 2)[0]
    more_delta = one_run_epsilon(
        scores, member, delta=min(0.5, 10 * delta + 1e-4), confidence=confidence
    )[0]
    assert strict <= loose + 1e-9 and more_delta <= loose + 1e-9
    cp = clopper_pearson_epsilon(
        scores[member], scores[~member], delta=delta, confidence=confidence
    )
    cp_strict = clopper_pearson_epsilon(
        scores[member], scores[~member], delta=delta, confidence=(1 + confidence) / 2
    )
    assert 0.0 <= cp_strict <= cp + 1e-9


@given(m=st.integers(1, 60), data=st.data())
def test_p_value_rises_with_epsilon(m, data):
    r = data.draw(st.integers(0, m))
    v = data.draw(st.integers(0, r))
    delta = data.draw(st.floats(0.0, 1e-2))
    values = [one_run_p_value(m, r, v, e, delta) for e in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(
        0.0 <= a <= b + 1e-12 <= 1.0 + 1e-12 for a, b in zip(values, values[1:], strict=False)
    )


# --- canaries ---------------------------------------------------------------------------------


def test_input_canaries_shapes_and_labels(dtype):
    c = input_canaries(
        16, (1, 4, 4), 5, scale=2.0, dtype=dtype, generator=torch.Generator().manual_seed(0)
    )
    assert c.kind == "input" and len(c) == 16
    assert c.inputs.shape == (16, 1, 4, 4) and c.inputs.dtype == dtype
    assert c.targets.dtype == torch.int64 and int(c.targets.min()) >= 0 and int(c.targets.max()) < 5
    again = input_canaries(
        16, (1, 4, 4), 5, scale=2.0, dtype=dtype, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(c.inputs, again.inputs)
    half = c.select(torch.arange(16) % 2 == 0)
    assert torch.equal(half.inputs, c.inputs[::2]) and torch.equal(half.targets, c.targets[::2])


def test_input_canary_scores_are_negative_cross_entropy():
    model = nn.Linear(6, 3)
    c = input_canaries(10, (6,), 3, generator=torch.Generator().manual_seed(0))
    expected = torch.stack(
        [
            -nn.functional.cross_entropy(model(x[None]), t[None])
            for x, t in zip(c.inputs, c.targets, strict=False)
        ]
    )
    torch.testing.assert_close(c.scores(model), expected)

    def mse(out, t):
        return (out[:, 0] - t).pow(2)

    torch.testing.assert_close(c.scores(model, mse), -(model(c.inputs)[:, 0] - c.targets).pow(2))


def test_dirac_canaries_are_single_coordinate_gradients_of_the_given_norm():
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    c = dirac_canaries(model, 30, 0.7, generator=torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    flat_all = torch.cat([g.reshape(-1) for g in c.gradient_sum(params).values()])
    assert int((flat_all != 0).sum()) == 30  # distinct coordinates
    for i in range(len(c)):
        mask = torch.zeros(len(c), dtype=torch.bool)
        mask[i] = True
        grads = c.gradient_sum(params, mask)
        assert set(grads) == set(params)
        flat = torch.cat([g.reshape(-1) for g in grads.values()])
        assert torch.linalg.vector_norm(flat).item() == pytest.approx(0.7)
        assert int((flat != 0).sum()) == 1


def test_dirac_scores_measure_movement_against_the_canary_gradient():
    model = nn.Linear(8, 4)
    c = dirac_canaries(model, 20, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.all(c.scores(model) == 0)
    member = torch.arange(20) < 7
    grads = c.gradient_sum(dict(model.named_parameters()), member)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p -= 0.25 * grads[name]
    expected = torch.where(member, 0.25, 0.0).to(c.initial.dtype)
    torch.testing.assert_close(c.scores(model), expected)


# --- audits of DP-SGD -------------------------------------------------------------------------


def _explicit_dpsgd(
    model, data, included, *, sigma, max_grad_norm, q, steps, lr, clip=True, seed=0
):
    """A small DP-SGD written out here (per-sample grads by vmap, flat clipping, Gaussian noise).

    ``clip=False`` or ``sigma=0`` make it the deliberately broken engines the audit must catch.
    """
    g = torch.Generator().manual_seed(seed)
    inputs, targets = data
    if included.kind == "input" and len(included):
        inputs, targets = (
            torch.cat([inputs, included.inputs]),
            torch.cat([targets, included.targets]),
        )
    expected_batch = q * len(data[0])
    params = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss_one(p, x, t):
        return nn.functional.cross_entropy(functional_call(model, p, (x[None],)), t[None])

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    for _ in range(steps):
        batch = torch.rand(len(inputs), generator=g) < q
        total = {n: torch.zeros_like(p) for n, p in params.items()}
        if batch.any():
            grads = per_sample(params, inputs[batch], targets[batch])
            norms = torch.stack([v.flatten(1).pow(2).sum(1) for v in grads.values()]).sum(0).sqrt()
            factor = (max_grad_norm / norms).clamp(max=1.0) if clip else torch.ones_like(norms)
            for n in total:
                total[n] += torch.einsum("b,b...->...", factor, grads[n])
        if included.kind == "dirac" and len(included):
            sampled = torch.rand(len(included), generator=g) < q
            factor = min(1.0, max_grad_norm / included.grad_norm) if clip else 1.0
            for n, v in included.gradient_sum(params, sampled).items():
                total[n] += factor * v
        for n in params:
            noise = sigma * max_grad_norm * torch.randn(params[n].shape, generator=g)
            params[n] = params[n] - lr * (total[n] + noise) / expected_batch
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n])
    return model


def _sparse_data(n=200, d=100, k=4, seed=0):
    """Inputs whose last features are always zero (like MNIST's border pixels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    x[:, 2:] = 0
    return x, torch.randint(k, (n,), generator=g)


SIGMA, RATE, STEPS = 6.0, 0.5, 8  # claims epsilon ~1.0 at delta 1e-5


@pytest.mark.parametrize(
    ("broken", "grad_norm"),
    [({"sigma": 0.0}, 1.0), ({"clip": False}, 30.0)],
    ids=["noise_off", "clipping_off"],
)
def test_broken_engine_is_caught_by_dirac_audit(broken, grad_norm):
    claimed = _rdp_epsilon(SIGMA, RATE, STEPS, DELTA)
    data = _sparse_data()
    for seed in range(2):
        torch.manual_seed(seed)
        model = nn.Linear(100, 4)
        canaries = dirac_canaries(
            model, 300, grad_norm, generator=torch.Generator().manual_seed(seed)
        )
        kwargs = {
            "sigma": SIGMA,
            "max_grad_norm": 1.0,
            "q": RATE,
            "steps": STEPS,
            "lr": 1.0,
            "seed": seed,
        } | broken
        result = audit(
            lambda included, kw=kwargs, mdl=model: _explicit_dpsgd(mdl, data, included, **kw),
            canaries,
            eps_claimed=claimed,
            delta=DELTA,
            generator=torch.Generator().manual_seed(100 + seed),
        )
        assert result.is_violated, (result.eps_lower, claimed)
        assert result.eps_lower > claimed


@pytest.mark.parametrize("method", ["one_run", "clopper_pearson"])
def test_correct_engine_never_over_claims(method):
    claimed = _rdp_epsilon(SIGMA, RATE, STEPS, DELTA)
    data = _sparse_data()
    for seed in range(4):
        torch.manual_seed(seed)
        model = nn.Linear(100, 4)
        canaries = dirac_canaries(model, 300, 1.0, generator=torch.Generator().manual_seed(seed))
        kwargs = {
            "sigma": SIGMA,
            "max_grad_norm": 1.0,
            "q": RATE,
            "steps": STEPS,
            "lr": 1.0,
            "seed": seed,
        }
        result = audit(
            lambda included, kw=kwargs, mdl=model: _explicit_dpsgd(mdl, data, included, **kw),
            canaries,
            eps_claimed=claimed,
            delta=DELTA,
            method=method,
            generator=torch.Generator().manual_seed(200 + seed),
        )
        assert isinstance(result, AuditResult) and result.method == method
        assert not result.is_violated and result.eps_lower <= claimed
        assert result.scores.shape == (300,) and result.is_member.dtype == torch.bool


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(50, 128), nn.ReLU(), nn.Linear(128, 4))


def _input_audit(train, seed, sigma_claimed, steps):
    g = torch.Generator().manual_seed(seed)
    data = (torch.randn(200, 50, generator=g), torch.randint(4, (200,), generator=g))
    canaries = input_canaries(200, (50,), 4, generator=torch.Generator().manual_seed(seed))
    model = _mlp(seed)
    return audit(
        lambda included: train(model, data, included),
        canaries,
        eps_claimed=_rdp_epsilon(sigma_claimed, RATE, steps, DELTA),
        delta=DELTA,
        generator=torch.Generator().manual_seed(300 + seed),
    )


@pytest.mark.slow
def test_input_canary_audit_catches_noise_and_clipping_off_and_passes_correct_engine():
    steps, sigma = 60, 40.0  # the claim: epsilon ~0.36

    def broken(m, d, inc):
        return _explicit_dpsgd(
            m, d, inc, sigma=0.0, max_grad_norm=1.0, q=RATE, steps=steps, lr=2.0, clip=False
        )

    def correct(m, d, inc):
        return _explicit_dpsgd(
            m, d, inc, sigma=sigma, max_grad_norm=1.0, q=RATE, steps=steps, lr=2.0
        )

    for seed in range(3):
        assert _input_audit(broken, seed, sigma, steps).is_violated
        assert not _input_audit(correct, seed, sigma, steps).is_violated


def _digits():
    import sklearn.datasets as datasets

    data = datasets.load_digits()
    x = torch.as_tensor(data.data, dtype=torch.float32)
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-3), torch.as_tensor(data.target)


def test_engine_dpsgd_on_digits_noise_off_is_caught_and_correct_engine_passes():
    import research_ext.privacy as privacy

    x, y = _digits()
    sigma, rate, epochs = 4.0, 0.1, 10

    def train(included, noise_multiplier):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 10))
        inputs, targets = torch.cat([x, included.inputs]), torch.cat([y, included.targets])
        dp = privacy.DPSGD(
            model,
            torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9),
            loss_fn=nn.CrossEntropyLoss(),
            max_grad_norm=1.0,
            delta=DELTA,
            sample_rate=rate,
            dataset_size=len(inputs),
            noise_multiplier=noise_multiplier,
            accountant="rdp",
            generator=torch.Generator().manual_seed(0),
        )
        for _ in range(epochs):
            for batch in dp.loader((inputs, targets)):
                dp.step(batch)
        return model

    claimed = _rdp_epsilon(sigma, rate, epochs * 10, DELTA)
    canaries = input_canaries(300, (64,), 10, generator=torch.Generator().manual_seed(1))
    broken = audit(
        lambda inc: train(inc, 0.0),
        canaries,
        eps_claimed=claimed,
        delta=DELTA,
        generator=torch.Generator().manual_seed(2),
    )
    assert broken.is_violated, (broken.eps_lower, claimed)
    correct = audit(
        lambda inc: train(inc, sigma),
        canaries,
        eps_claimed=claimed,
        delta=DELTA,
        generator=torch.Generator().manual_seed(2),
    )
    assert not correct.is_violated, (correct.eps_lower, claimed)


# --- the documented engine recipe: feature canaries through DPSGD --------------------------------
#
# Standardised (or 1/16-scaled) digits, sigma 4, sample rate 0.1, 10 epochs, C = 1, SGD with
# momentum, 300 feature canaries of scale 100 (see research_ext.privacy.audit). A noise-off or
# clipping-off engine must be flagged in at least 19 of 20 seeds whatever the input scaling; a
# correct engine never. The input canaries of the earlier recipe flagged a noise-off engine in
# 5 of 6 seeds on standardised inputs and in 0 of 6 on 1/16-scaled ones.

RECIPE_SIGMA, RECIPE_RATE, RECIPE_EPOCHS = 4.0, 0.1, 10


def _scaled_digits(scaling):
    import sklearn.datasets as datasets

    data = datasets.load_digits()
    x = torch.as_tensor(data.data, dtype=torch.float32)
    if scaling == "standardised":
        x = (x - x.mean(0)) / x.std(0).clamp_min(1e-3)
    else:
        x = x / 16
    return x, torch.as_tensor(data.target)


def _no_clipping(sq_norms, thresholds, clipping):
    return {k: torch.ones_like(v) for k, v in sq_norms.items()}


def _engine_audit(seed, scaling, engine, monkeypatch):
    import research_ext.privacy as privacy
    from research_ext.privacy import _dpsgd
    from research_ext.privacy.audit import feature_canaries

    x, y = _scaled_digits(scaling)
    canaries = feature_canaries(300, 64, 10, generator=torch.Generator().manual_seed(seed))

    def train(included):
        torch.manual_seed(seed)
        model = canaries.wrap(nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 10)))
        inputs = torch.cat([canaries.pad(x), included.inputs])
        targets = torch.cat([y, included.targets])
        dp = privacy.DPSGD(
            model,
            torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9),
            loss_fn=nn.CrossEntropyLoss(),
            max_grad_norm=1.0,
            delta=DELTA,
            sample_rate=RECIPE_RATE,
            dataset_size=len(inputs),
            noise_multiplier=0.0 if engine == "noise_off" else RECIPE_SIGMA,
            accountant="rdp",
            generator=torch.Generator().manual_seed(seed),
        )
        with monkeypatch.context() as patch:
            if engine == "clipping_off":
                patch.setattr(_dpsgd, "clip_factors", _no_clipping)
            for _ in range(RECIPE_EPOCHS):
                for batch in dp.loader((inputs, targets)):
                    dp.step(batch)
        return model

    claimed = _rdp_epsilon(RECIPE_SIGMA, RECIPE_RATE, RECIPE_EPOCHS * 10, DELTA)
    result = audit(
        train,
        canaries,
        eps_claimed=claimed,
        delta=DELTA,
        generator=torch.Generator().manual_seed(1000 + seed),
    )
    return result, claimed


@pytest.mark.parametrize(
    ("engine", "scaling"),
    [("noise_off", "sixteenth"), ("clipping_off", "standardised"), ("correct", "sixteenth")],
)
def test_engine_recipe_one_seed(scaling, engine, monkeypatch):
    result, claimed = _engine_audit(0, scaling, engine, monkeypatch)
    if engine == "correct":
        assert not result.is_violated and result.eps_lower < claimed
    else:
        assert result.is_violated and result.eps_lower > 2 * claimed, (result.eps_lower, claimed)


@pytest.mark.slow
@pytest.mark.parametrize("scaling", ["standardised", "sixteenth"])
def test_engine_recipe_flags_broken_engines_in_19_of_20_seeds(scaling, monkeypatch):
    flagged = {"noise_off": 0, "clipping_off": 0, "correct": 0}
    for seed in range(20):
        for engine in flagged:
            result, _ = _engine_audit(seed, scaling, engine, monkeypatch)
            flagged[engine] += result.is_violated
    assert flagged["noise_off"] >= 19 and flagged["clipping_off"] >= 19, flagged
    assert flagged["correct"] == 0, flagged


def test_feature_canaries_touch_only_their_own_column():
    from research_ext.privacy.audit import FeatureCanaryModel, feature_canaries

    canaries = feature_canaries(5, 3, 4, scale=10.0, generator=torch.Generator().manual_seed(0))
    model = canaries.wrap(nn.Linear(3, 4))
    assert isinstance(model, FeatureCanaryModel)
    picked = canaries.select(torch.tensor([False, True, False, True, False]))
    data = canaries.pad(torch.randn(6, 3))
    inputs = torch.cat([data, picked.inputs])
    targets = torch.cat([torch.randint(4, (6,)), picked.targets])
    nn.functional.cross_entropy(model(inputs), targets).backward()
    moved = model.canary_head.weight.grad.abs().sum(0) > 0
    assert moved.tolist() == [False, True, False, True, False]
    with torch.no_grad():
        model.canary_head.weight.sub_(model.canary_head.weight.grad)
    scores = canaries.scores(model)
    assert (scores[[1, 3]] > 0).all() and (scores[[0, 2, 4]] == 0).all()
    with pytest.raises(TypeError, match=r"Canaries.scores: `model` must be the model returned"):
        canaries.scores(nn.Linear(8, 4))
    with pytest.raises(ValueError, match=r"Canaries.pad: `inputs` must be a tensor of shape"):
        canaries.pad(torch.zeros(2, 5))


def test_plot_audit_draws_both_histograms():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores, member = _simulated_scores(2.0, 100, torch.Generator().manual_seed(0))
    eps, r, v = one_run_epsilon(scores, member, delta=DELTA)
    result = AuditResult(eps, 1.0, DELTA, 0.95, "one_run", scores, member, r, v)
    ax = plot_audit(result)
    assert len(ax.patches) > 0 and "eps_claimed=1.00" in ax.get_title()
    plt.close(ax.figure)


# --- errors -----------------------------------------------------------------------------------


def test_bad_inputs():
    scores = torch.zeros(4)
    with pytest.raises(
        TypeError, match=r"one_run_epsilon: `is_member` must be a bool tensor of shape \(4,\)"
    ):
        one_run_epsilon(scores, torch.zeros(4), delta=0.0)
    with pytest.raises(
        TypeError, match=r"one_run_epsilon: `scores` must be a non-empty 1-D tensor"
    ):
        one_run_epsilon(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool), delta=0.0)
    with pytest.raises(
        ValueError,
        match=r"`num_guesses` must be a non-empty sequence of ints in \[1, 4\], got num_guesses=\[5\]",
    ):
        one_run_epsilon(scores, scores > 0, delta=0.0, num_guesses=[5])
    with pytest.raises(
        ValueError, match=r"`confidence` must be a number in \(0.0, 1.0\), got confidence=1.0"
    ):
        one_run_epsilon(scores, scores > 0, delta=0.0, confidence=1.0)
    with pytest.raises(
        ValueError,
        match=r"one_run_p_value: `num_correct` must be an int in \[0, 3\], got num_correct=4",
    ):
        one_run_p_value(10, 3, 4, 1.0, 0.0)
    with pytest.raises(
        ValueError,
        match=r"clopper_pearson_epsilon: `delta` must be a number in \[0.0, 1.0\), got delta=1.0",
    ):
        clopper_pearson_epsilon(scores, scores, delta=1.0)
    with pytest.raises(
        ValueError, match=r"input_canaries: `num_classes` must be an int >= 2, got num_classes=1"
    ):
        input_canaries(3, (2,), 1)
    with pytest.raises(
        TypeError,
        match=r"input_canaries: `input_shape` must be a tuple of positive ints, got input_shape=\[2\]",
    ):
        input_canaries(3, [2], 3)
    with pytest.raises(
        ValueError,
        match=r"dirac_canaries: `num_canaries` must be an int in \[1, 3\], got num_canaries=4",
    ):
        dirac_canaries(nn.Linear(2, 1), 4, 1.0)
    with pytest.raises(
        ValueError,
        match=r"dirac_canaries: `grad_norm` must be a finite number > 0, got grad_norm=0.0",
    ):
        dirac_canaries(nn.Linear(2, 1), 2, 0.0)
    canaries = input_canaries(4, (2,), 2)
    with pytest.raises(
        ValueError, match=r"Canaries.gradient_sum: `kind` must be 'dirac', got kind='input'"
    ):
        canaries.gradient_sum({})
    with pytest.raises(
        TypeError, match=r"Canaries.select: `mask` must be a bool tensor of shape \(4,\)"
    ):
        canaries.select(torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"audit: `canaries` must be a Canaries"):
        audit(lambda c: nn.Linear(1, 1), "canaries", eps_claimed=1.0, delta=0.0)
    with pytest.raises(
        ValueError,
        match=r"audit: `method` must be one of 'one_run', 'clopper_pearson', got method='lira'",
    ):
        audit(lambda c: nn.Linear(1, 1), canaries, eps_claimed=1.0, delta=0.0, method="lira")
    with pytest.raises(
        TypeError,
        match=r"audit: `train_fn` must be a callable returning the trained nn.Module, got train_fn='Tensor'",
    ):
        audit(lambda c: torch.zeros(1), canaries, eps_claimed=1.0, delta=0.0)
    with pytest.raises(TypeError, match=r"plot_audit: `result` must be an AuditResult"):
        plot_audit(None)
    assert isinstance(canaries, Canaries)
