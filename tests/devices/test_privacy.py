"""research_ext.privacy on every available device against the per-example loop on the CPU.

One DP-SGD step (``DPSGD`` and the user-loop ``DPOptimizer``) runs on the ``device`` fixture's
device in every ``grad_sample_mode``; with the noise off its update must be the clipped sum of
the per-example gradients that an explicit batch-of-one loop computes on the CPU in float64
(the oracle of ``tests/privacy/test_per_sample_parity.py``), divided by the expected batch size.
With the noise on and a seeded CPU generator, the update must be the one the CPU computes: the
noise is drawn on the generator's device and moved, so it does not depend on the model's.
"""

import copy

import pytest
import torch
from torch import nn

from research_ext.privacy import (
    DPSGD,
    DPOptimizer,
    add_gaussian_noise,
    clip_per_sample,
    per_sample_grads,
)
from research_ext.privacy._engines import ENGINES
from tests.devices.common import assert_matches, assert_on
from tests.helpers import RTOL_MONTE_CARLO_4000
from tests.privacy.zoo import loop_grads, make

BATCH, DATASET_SIZE, SAMPLE_RATE = 5, 10, 0.5  # the expected batch qN = 5
MODELS = ("mlp", "cnn")


def _clipped_sum(model: nn.Module, x, y, max_grad_norm: float) -> dict[str, torch.Tensor]:
    """The per-example loop's flat-clipped sum on the CPU (factor min(1, C / (||g|| + 1e-6)))."""
    ref = loop_grads(model, nn.CrossEntropyLoss(), x, y)
    total = torch.cat([g.flatten(1) for g in ref.values()], dim=1).norm(dim=1)
    factor = torch.clamp(max_grad_norm / (total + 1e-6), max=1.0)
    return {n: (g * factor.reshape(-1, *[1] * (g.ndim - 1))).sum(0) for n, g in ref.items()}


def _median_norm(model: nn.Module, x, y) -> float:
    """A threshold that clips some examples and not others."""
    ref = loop_grads(model, nn.CrossEntropyLoss(), x, y)
    return float(torch.cat([g.flatten(1) for g in ref.values()], dim=1).norm(dim=1).median())


def _settings(max_grad_norm: float, mode: str, **kw) -> dict:
    return {
        "max_grad_norm": max_grad_norm,
        "delta": 1e-5,
        "sample_rate": SAMPLE_RATE,
        "dataset_size": DATASET_SIZE,
        "noise_multiplier": 0.0,
        "accountant": "rdp",
        "grad_sample_mode": mode,
        **kw,
    }


def _update(model: nn.Module, before: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """before - after (an SGD step with lr=1 gives the gradient the optimizer saw)."""
    return {n: before[n] - p.detach().cpu() for n, p in model.named_parameters()}


def _expected(ref_sum: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: s / (SAMPLE_RATE * DATASET_SIZE) for n, s in ref_sum.items()}


def _per_layer_clipped_sum(model: nn.Module, x, y, max_grad_norm: float) -> dict[str, torch.Tensor]:
    """The loop's per-layer clipped sum: each layer's own norm against C / sqrt(#layers)."""
    ref = loop_grads(model, nn.CrossEntropyLoss(), x, y)
    layers = sorted({n.rsplit(".", 1)[0] for n in ref})
    threshold = max_grad_norm / len(layers) ** 0.5
    out = {}
    for layer in layers:
        own = {n: g for n, g in ref.items() if n.rsplit(".", 1)[0] == layer}
        norm = torch.cat([g.flatten(1) for g in own.values()], dim=1).norm(dim=1)
        factor = torch.clamp(threshold / (norm + 1e-6), max=1.0)
        out |= {n: (g * factor.reshape(-1, *[1] * (g.ndim - 1))).sum(0) for n, g in own.items()}
    return out


@pytest.mark.parametrize("clipping", ["flat", "per_layer"])
@pytest.mark.parametrize("mode", ENGINES)
@pytest.mark.parametrize("name", MODELS)
def test_dpsgd_step_without_noise_is_the_loops_clipped_sum(device, name, mode, clipping):
    model, x, y = make(name, torch.float64, batch=BATCH)
    c = _median_norm(model, x, y)
    oracle = _clipped_sum if clipping == "flat" else _per_layer_clipped_sum
    want = _expected(oracle(model, x, y, c))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model = copy.deepcopy(model).to(device)
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        loss_fn=nn.CrossEntropyLoss(),
        **_settings(c, mode, clipping=clipping),
    )
    dp.step((x.to(device), y.to(device)))
    assert_on(list(model.parameters()), device)
    assert_matches(_update(model, before), want)


@pytest.mark.parametrize("mode", ENGINES)
@pytest.mark.parametrize("name", MODELS)
def test_dp_optimizer_user_loop_without_noise_is_the_loops_clipped_sum(device, name, mode):
    model, x, y = make(name, torch.float64, batch=BATCH)
    c = _median_norm(model, x, y)
    want = _expected(_clipped_sum(model, x, y, c))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model = copy.deepcopy(model).to(device)
    opt = DPOptimizer(model, torch.optim.SGD(model.parameters(), lr=1.0), **_settings(c, mode))
    xd, yd = x.to(device), y.to(device)
    nn.functional.cross_entropy(model(xd), yd).backward()
    opt.step()
    opt.zero_grad()
    assert_on(list(model.parameters()), device)
    assert_matches(_update(model, before), want)


def test_noisy_step_with_a_cpu_generator_equals_the_cpu_step(device):
    model, x, y = make("mlp", torch.float64, batch=BATCH)
    twin = copy.deepcopy(model).to(device)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    updates = []
    for m, dev in ((model, torch.device("cpu")), (twin, device)):
        settings = _settings(0.05, "auto", noise_multiplier=0.7)
        settings["generator"] = torch.Generator().manual_seed(7)
        dp = DPSGD(
            m, torch.optim.SGD(m.parameters(), lr=1.0), loss_fn=nn.CrossEntropyLoss(), **settings
        )
        dp.step((x.to(dev), y.to(dev)))
        updates.append(_update(m, before))
    assert_on(list(twin.parameters()), device)
    assert_matches(updates[1], updates[0])
    assert any(u.abs().max() > 0 for u in updates[0].values())


@pytest.mark.parametrize("name", MODELS)
def test_per_sample_grads_and_clipping(device, name):
    model, x, y = make(name, torch.float64, batch=BATCH)
    ref = loop_grads(model, nn.CrossEntropyLoss(), x, y)
    c = _median_norm(model, x, y)
    dev_model = copy.deepcopy(model).to(device)
    grads = per_sample_grads(dev_model, nn.CrossEntropyLoss(), (x.to(device), y.to(device)))
    assert_on(grads, device)
    assert_matches(grads, ref)
    clipped = clip_per_sample(grads, c)
    assert_on(clipped, device)
    total = torch.cat([g.flatten(1) for g in ref.values()], dim=1).norm(dim=1)
    factor = torch.clamp(c / (total + 1e-6), max=1.0)
    assert_matches(
        clipped, {n: g * factor.reshape(-1, *[1] * (g.ndim - 1)) for n, g in ref.items()}
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_gaussian_noise(device, dtype):
    n, std = 4000, 2.0
    base = torch.full((n,), 3.0, dtype=dtype)
    # A CPU generator: drawn on the CPU and moved, so every device gets the CPU's numbers.
    got = add_gaussian_noise(base.to(device), std, generator=torch.Generator().manual_seed(0))
    want = add_gaussian_noise(base, std, generator=torch.Generator().manual_seed(0))
    assert got.shape == base.shape and got.dtype == dtype and got.device.type == device.type
    assert_matches(got, want, dtype)
    # A generator on the device: its own stream, with the right moments.
    own = add_gaussian_noise(
        base.to(device), std, generator=torch.Generator(device=device).manual_seed(0)
    )
    assert own.shape == base.shape and own.dtype == dtype and own.device.type == device.type
    noise = (own - 3.0).double().cpu()
    assert abs(float(noise.mean())) <= RTOL_MONTE_CARLO_4000 * std
    assert abs(float(noise.std()) - std) <= RTOL_MONTE_CARLO_4000 * std
    zero = add_gaussian_noise(base.to(device), 0.0)
    assert zero.device.type == device.type and torch.equal(zero.cpu(), base)
