"""DPSGD's step pinned exactly: the adaptive threshold update, accounting, the budget, empty batches.

Written from a mutation-testing pass over ``research_ext/privacy/_dpsgd.py`` (see
``tools/mutation.sh``). Everything here goes through ``DPSGD``'s public surface (``step``,
``max_grad_norm``, ``steps``, ``epsilon``), so it holds for any engine that computes the same
per-sample clipped sums.
"""

import math

import pytest
import torch
from torch import nn

from research_ext.errors import PrivacyBudgetExceededError
from research_ext.privacy import DPSGD, epsilon
from tests.helpers import ATOL_FLOAT64, RTOL_FLOAT64
from tests.privacy.zoo import loop_grads, make

APPROX = {"rel": RTOL_FLOAT64}


def _dp(model, **kwargs):
    args = dict(
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=1.0,
        delta=1e-5,
        sample_rate=0.25,
        dataset_size=24,
        noise_multiplier=0.0,
        accountant="rdp",
        generator=torch.Generator().manual_seed(7),
    )
    args.update(kwargs)
    return DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), **args)


def _norms(model, x, y):
    grads = loop_grads(model, nn.CrossEntropyLoss(), x, y)
    return torch.cat([g.flatten(1) for g in grads.values()], 1).norm(dim=1)


@pytest.mark.parametrize("micro", [False, True])
def test_adaptive_update_without_noise_follows_the_unclipped_fraction_exactly(micro):
    """C <- C exp(-lr (fraction - quantile)), fraction = (centred count) / qN + 1/2."""
    model, x, y = make("mlp", torch.float64, batch=6)
    norms = _norms(model, x, y)
    c = float(norms.sort().values[3])  # four norms <= C (the boundary one included), two above
    assert (norms <= c).sum() == 4
    dp = _dp(model, clipping="adaptive", max_grad_norm=c, adaptive_lr=0.3, adaptive_quantile=0.7)
    assert dp.max_grad_norm == c
    batch = [(x[:2], y[:2]), (x[2:], y[2:])] if micro else (x, y)
    dp.step(batch)
    # qN = 0.25 * 24 = 6; centred count (4 - 2) / 2 = 1; fraction 1/6 + 1/2
    fraction = 1.0 / 6.0 + 0.5
    assert dp.max_grad_norm == pytest.approx(c * math.exp(-0.3 * (fraction - 0.7)), **APPROX)


@pytest.mark.parametrize(
    ("max_grad_norm", "fraction"),
    [(1e6, 1.0), (1e-9, 0.0)],  # every example unclipped / every example clipped
)
def test_adaptive_update_at_the_extremes(max_grad_norm, fraction):
    model, x, y = make("mlp", torch.float64, batch=6)
    dp = _dp(model, clipping="adaptive", max_grad_norm=max_grad_norm)  # lr 0.2, quantile 0.5
    dp.step((x, y))
    expected = max_grad_norm * math.exp(-0.2 * (fraction - 0.5))
    assert dp.max_grad_norm == pytest.approx(expected, **APPROX)
    dp.step((x, y))
    assert dp.max_grad_norm == pytest.approx(expected * math.exp(-0.2 * (fraction - 0.5)), **APPROX)


def test_adaptive_update_with_count_noise_moves_the_threshold_randomly():
    """With noise the count is perturbed (std ``adaptive_count_noise``): two seeds disagree."""
    model, x, y = make("mlp", torch.float64, batch=6)
    thresholds = []
    for seed in (1, 2):
        dp = _dp(
            make("mlp", torch.float64, batch=6)[0],
            clipping="adaptive",
            max_grad_norm=1e6,
            noise_multiplier=1.0,
            adaptive_count_noise=3.0,
            generator=torch.Generator().manual_seed(seed),
        )
        dp.step((x, y))
        thresholds.append(dp.max_grad_norm)
    noiseless = 1e6 * math.exp(-0.2 * (1.0 - 0.5))
    assert thresholds[0] != thresholds[1]
    assert all(t != pytest.approx(noiseless, **APPROX) for t in thresholds)


def test_an_empty_batch_is_still_a_step(device):
    model, x, y = make("mlp", torch.float64, batch=6)
    model = model.to(device)
    before = [p.detach().clone() for p in model.parameters()]
    dp = _dp(
        model,
        clipping="adaptive",
        generator=torch.Generator(device=device).manual_seed(3),
        adaptive_quantile=0.25,
    )
    dp.step((x[:0].to(device), y[:0].to(device)))
    assert dp.steps == 1
    for p, q in zip(model.parameters(), before, strict=True):
        assert p.grad is not None and p.grad.shape == p.shape
        assert torch.count_nonzero(p.grad) == 0  # no noise: sigma = 0
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)
    # no example: the centred count is 0, the fraction 1/2
    assert dp.max_grad_norm == pytest.approx(math.exp(-0.2 * (0.5 - 0.25)), **APPROX)


def test_steps_are_accounted_at_the_runs_delta_or_another():
    model, x, y = make("mlp", torch.float64, batch=6)
    dp = _dp(model, noise_multiplier=1.3)
    assert dp.steps == 0 and dp.epsilon() == 0.0
    for _ in range(3):
        dp.step((x, y))
    assert dp.steps == 3
    assert dp.epsilon() == pytest.approx(epsilon(1.3, 0.25, 3, 1e-5, accountant="rdp"), **APPROX)
    other = dp.epsilon(1e-2)
    assert other == pytest.approx(epsilon(1.3, 0.25, 3, 1e-2, accountant="rdp"), **APPROX)
    assert other < dp.epsilon()


@pytest.mark.parametrize(
    ("plan", "planned"),
    [({"steps": 2}, 2), ({"epochs": 0.5}, 2)],  # q = 0.25: four steps an epoch
)
def test_the_budget_allows_exactly_the_planned_steps(plan, planned):
    model, x, y = make("mlp", torch.float64, batch=6)
    dp = _dp(model, noise_multiplier=None, target_epsilon=2.0, **plan)
    assert dp.planned_steps == planned
    for _ in range(planned):
        dp.step((x, y))
    after = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(
        PrivacyBudgetExceededError,
        match=rf"DPSGD.step: the noise was calibrated to target_epsilon over {planned} steps; "
        rf"step {planned + 1} would spend more than the target",
    ):
        dp.step((x, y))
    assert dp.steps == planned
    assert dp.epsilon() <= 2.0 * (1 + 1e-6)
    for p, q in zip(model.parameters(), after, strict=True):
        assert torch.equal(p.detach(), q)


@pytest.mark.parametrize("clipping", ["flat", "adaptive"])
def test_non_secure_noise_comes_from_the_generator_only(clipping):
    """Gradient and count noise are drawn from ``generator``, never from torch's global RNG."""
    _, x, y = make("mlp", torch.float64, batch=6)
    results = []
    for global_seed in (0, 1):
        m = make("mlp", torch.float64, batch=6)[0]
        dp = _dp(
            m,
            clipping=clipping,
            noise_multiplier=1.0,
            adaptive_count_noise=3.0,
            generator=torch.Generator().manual_seed(11),
        )
        torch.manual_seed(global_seed)
        dp.step((x, y))
        results.append(([p.detach().clone() for p in m.parameters()], dp.max_grad_norm))
    (first, c_first), (second, c_second) = results
    assert c_first == c_second
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_empty_micro_batches_are_skipped_not_the_end_of_the_batch():
    _, x, y = make("mlp", torch.float64, batch=6)
    results = []
    for batch in ([(x[:0], y[:0]), (x[:3], y[:3]), (x[3:3], y[3:3]), (x[3:], y[3:])], (x, y)):
        m = make("mlp", torch.float64, batch=6)[0]
        dp = _dp(m, max_grad_norm=0.5)
        dp.step(batch)
        assert dp.steps == 1
        results.append([p.detach().clone() for p in m.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64)
    assert not all(torch.equal(a, b) for a, b in zip(results[0], _fresh(), strict=True))


def _fresh():
    return [p.detach().clone() for p in make("mlp", torch.float64, batch=6)[0].parameters()]


def test_secure_noise_does_not_come_from_the_seeded_generator():
    """``secure=True``: identical runs with one generator seed still draw different noise."""
    _, x, y = make("mlp", torch.float64, batch=6)
    runs = []
    for secure in (True, True, False):
        m = make("mlp", torch.float64, batch=6)[0]  # identical models (seeded init)
        dp = _dp(m, noise_multiplier=1.0, secure=secure, generator=torch.Generator().manual_seed(5))
        dp.step((x, y))
        runs.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert not torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2]) and not torch.equal(runs[1], runs[2])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"noise_multiplier": 1.0, "target_epsilon": 2.0},
            r"^DPSGD: exactly one of `noise_multiplier` and `target_epsilon` must be given",
        ),
        (
            {"noise_multiplier": None, "target_epsilon": 2.0},
            r"^DPSGD: with `target_epsilon`, exactly one of `epochs` and `steps` must be given",
        ),
        ({"noise_multiplier": -1.0}, r"^DPSGD: `noise_multiplier` must be a finite number >= 0"),
    ],
)
def test_noise_arguments_are_refused_in_dpsgds_name(kwargs, match):
    model, _, _ = make("mlp", torch.float64, batch=6)
    with pytest.raises(ValueError, match=match):
        _dp(model, **kwargs)


@pytest.mark.parametrize("secure", [False, True])
def test_noisy_adaptive_steps_draw_on_the_models_device(device, secure):
    """Gradient and count noise are drawn on the generator's device, batch empty or not."""
    model, x, y = make("mlp", torch.float64, batch=6)
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    dp = _dp(
        model,
        clipping="adaptive",
        noise_multiplier=1.0,
        adaptive_count_noise=3.0,
        secure=secure,
        generator=torch.Generator(device=device).manual_seed(3),
    )
    dp.step((x[:0], y[:0]))
    dp.step((x, y))
    assert dp.steps == 2 and math.isfinite(dp.max_grad_norm) and dp.max_grad_norm > 0
    for p in model.parameters():
        assert p.grad is not None and p.grad.device == p.device
        assert torch.count_nonzero(p.grad) > 0  # noise was added
