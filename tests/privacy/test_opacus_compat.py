"""PrivacyEngine: an Opacus-idiom script runs under research_ext with only its import changed."""

import pathlib
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from research_ext.privacy import DPOptimizer, PrivacyEngine
from tests.helpers import ATOL_FLOAT64, RTOL_FLOAT64, RTOL_OPACUS_CALIBRATION

SCRIPT = pathlib.Path(__file__).with_name("opacus_idiom_script.py")
OPACUS_IMPORT = "from opacus import PrivacyEngine\n"
OURS_IMPORT = "from research_ext.privacy import PrivacyEngine\n"


def _load(ours: bool) -> dict:
    source = SCRIPT.read_text()
    assert source.count(OPACUS_IMPORT) == 1
    if ours:
        source = source.replace(OPACUS_IMPORT, OURS_IMPORT)
    namespace: dict = {"__name__": "opacus_idiom_script"}
    exec(compile(source, str(SCRIPT), "exec"), namespace)  # noqa: S102
    return namespace


@pytest.fixture(scope="module")
def scripts():
    return _load(ours=False), _load(ours=True)


@pytest.mark.parametrize(
    ("opacus_mode", "our_mode"), [("hooks", "hooks"), ("functorch", "functorch"), ("hooks", "ew")]
)
def test_one_step_without_noise_gives_opacus_clipped_gradients(scripts, opacus_mode, our_mode):
    theirs, ours = scripts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus's notices (secure RNG, sampling)
        expected = theirs["one_step"](mode=opacus_mode)
    got = ours["one_step"](mode=our_mode)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=RTOL_FLOAT64 * 1e3, atol=ATOL_FLOAT64 * 1e3)


@pytest.mark.slow
def test_training_on_digits_matches_opacus_in_epsilon_and_accuracy(scripts):
    theirs, ours = scripts
    results = {}
    for name, script in (("opacus", theirs), ("ours", ours)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results[name] = [script["train"](seed=s) for s in range(2)]
    (_, eps_o, sigma_o), (_, eps_r, sigma_r) = results["opacus"][0], results["ours"][0]
    # Both calibrate sigma to the target over the same plan (4 epochs of 22 steps at q = 1/22).
    assert eps_o <= 4.0 + 1e-6 and eps_r <= 4.0 + 1e-6
    assert eps_r == pytest.approx(eps_o, rel=RTOL_OPACUS_CALIBRATION)
    assert sigma_r == pytest.approx(sigma_o, rel=RTOL_OPACUS_CALIBRATION)
    mean_o = sum(r[0] for r in results["opacus"]) / 2
    mean_r = sum(r[0] for r in results["ours"]) / 2
    assert mean_o > 0.8 and mean_r > 0.8
    assert abs(mean_o - mean_r) < 0.06  # seed-to-seed spread of DP training here is ~0.02


def _data(n=40):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g))


def test_make_private_returns_the_users_objects_in_the_opacus_idiom():
    model = nn.Linear(4, 2)
    engine = PrivacyEngine(accountant="rdp")
    out_model, optimizer, loader = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(_data(), batch_size=10),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        noise_generator=torch.Generator().manual_seed(0),
    )
    assert out_model is model and isinstance(optimizer, DPOptimizer)
    assert isinstance(optimizer, torch.optim.Optimizer) and len(loader) == 4
    sizes = []
    for x, y in loader:
        sizes.append(len(x))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert len(set(sizes)) > 1  # Poisson batch sizes
    from research_ext.privacy import epsilon

    assert engine.get_epsilon(1e-5) == pytest.approx(epsilon(1.0, 0.25, 4, 1e-5, accountant="rdp"))


def test_ghost_mode_returns_the_criterion_as_opacus_does():
    model = nn.Linear(4, 2)
    criterion = nn.CrossEntropyLoss()
    out = PrivacyEngine().make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(_data(), batch_size=10),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        criterion=criterion,
        grad_sample_mode="ghost",
    )
    assert len(out) == 4 and out[2] is criterion and out[1].plan["<root>"].startswith("Linear")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_first": False}, ValueError, "batch_first"),
        ({"max_grad_norm": [1.0, 1.0], "clipping": "per_layer"}, ValueError, "per-parameter"),
        ({"grad_sample_mode": "ghost_fsdp"}, ValueError, "grad_sample_mode"),
        ({"rand_on_empty": True}, TypeError, "rand_on_empty"),
        ({"max_clipbound": 2.0, "clipping": "adaptive"}, TypeError, "max_clipbound"),
    ],
)
def test_arguments_without_an_equivalent_are_named(kwargs, error, match):
    model = nn.Linear(4, 2)
    base = dict(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(_data(), batch_size=10),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
    )
    with pytest.raises(error, match=match):
        PrivacyEngine().make_private(**{**base, **kwargs})


def test_gdp_accountant_is_refused_by_name():
    with pytest.raises(ValueError, match="gdp"):
        PrivacyEngine(accountant="gdp")


def test_adaptive_and_per_layer_clipping_train():
    for clipping, extra in (
        ("per_layer", {}),
        ("adaptive", {"target_unclipped_quantile": 0.5, "clipbound_learning_rate": 0.2}),
    ):
        model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
        engine = PrivacyEngine()
        model, optimizer, loader = engine.make_private_with_epsilon(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(_data(), batch_size=10),
            target_epsilon=5.0,
            target_delta=1e-5,
            epochs=1,
            max_grad_norm=1.0,
            clipping=clipping,
            **extra,
        )
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        assert 0 < engine.get_epsilon(1e-5) <= 5.0 + 1e-6
