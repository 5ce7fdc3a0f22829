import pytest
import torch
from torch import nn

from research_ext.errors import UnsupportedModuleError
from research_ext.privacy import add_gaussian_noise, clip_per_sample, per_sample_grads
from research_ext.privacy._engines import make_engine


def test_shapes_dtypes_and_empty_batch(dtype):
    model = nn.Linear(3, 2).to(dtype)
    grads = per_sample_grads(
        model, nn.MSELoss(), (torch.randn(4, 3, dtype=dtype), torch.randn(4, 2, dtype=dtype))
    )
    assert grads["weight"].shape == (4, 2, 3) and grads["weight"].dtype == dtype
    empty = per_sample_grads(
        model, nn.MSELoss(), (torch.zeros(0, 3, dtype=dtype), torch.zeros(0, 2, dtype=dtype))
    )
    assert empty["bias"].shape == (0, 2)


def test_batch_must_be_a_pair():
    with pytest.raises(
        TypeError, match=r"per_sample_grads: `batch` must be a pair \(inputs, targets\)"
    ):
        per_sample_grads(nn.Linear(2, 1), nn.MSELoss(), torch.zeros(3, 2))


def test_batchnorm_is_unsupported_under_vmap():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with pytest.raises(
        UnsupportedModuleError, match=r"per_sample_grads: torch.func could not compute"
    ):
        per_sample_grads(
            model, nn.CrossEntropyLoss(), (torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
        )


def test_loss_reductions_agree_across_engines():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,))
    results = []
    for loss_fn in (
        nn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(reduction="sum"),
        lambda out, tgt: nn.functional.cross_entropy(out, tgt, reduction="none"),
    ):
        engine = make_engine(model, loss_fn, "ghost")
        results.append(engine.run((x, y))[next(iter(engine.rules))])
    torch.testing.assert_close(results[0], results[1])
    torch.testing.assert_close(results[0], results[2])


def test_loss_of_wrong_shape_is_rejected():
    engine = make_engine(nn.Linear(3, 2), lambda out, tgt: out, "ghost")
    with pytest.raises(
        ValueError, match=r"loss_fn: must return a scalar or per-example losses of shape \(4,\)"
    ):
        engine.run((torch.randn(4, 3), torch.zeros(4)))


def test_clip_per_sample_errors():
    with pytest.raises(
        ValueError,
        match=r"clip_per_sample: `max_grad_norm` must be a finite number > 0, got max_grad_norm=0",
    ):
        clip_per_sample({"w": torch.ones(2, 3)}, 0)
    with pytest.raises(
        ValueError,
        match=r"clip_per_sample: `clipping` must be one of 'flat', 'per_layer', 'adaptive'",
    ):
        clip_per_sample({"w": torch.ones(2, 3)}, 1.0, clipping="none")
    with pytest.raises(
        TypeError, match=r"`max_grad_norm` must be a float unless clipping='per_layer'"
    ):
        clip_per_sample({"w": torch.ones(2, 3)}, {"": 1.0})


def test_add_gaussian_noise_is_reproducible_and_validates():
    a = add_gaussian_noise(torch.zeros(5), 1.0, generator=torch.Generator().manual_seed(1))
    b = add_gaussian_noise(torch.zeros(5), 1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(add_gaussian_noise(torch.ones(3), 0.0), torch.ones(3))
    with pytest.raises(
        ValueError, match=r"add_gaussian_noise: `std` must be a finite number >= 0, got std=-1.0"
    ):
        add_gaussian_noise(torch.ones(3), -1.0)
