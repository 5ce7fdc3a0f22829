import pytest
import torch
from torch import nn

from research_ext.core import call_with_params, module_buffers, module_params, progress, require


def test_require_returns_module():
    assert require("json", extra="none").dumps([1]) == "[1]"


def test_require_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'research-ext\[hpo\]'"):
        require("surely_not_a_module_xyz", extra="hpo")


def test_progress_off_and_forced_on(capsys):
    assert list(progress(range(3), enable=False)) == [0, 1, 2]
    bar = progress(total=2, enable=True, desc="steps")
    bar.update(2)
    bar.close()
    assert "steps" in capsys.readouterr().err


def test_progress_silent_when_not_a_tty(capsys):
    list(progress(range(3), desc="quiet"))
    assert "quiet" not in capsys.readouterr().err


def test_module_params_and_call():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model[0].bias.requires_grad_(False)
    assert list(module_params(model)) == ["0.weight", "1.weight", "1.bias"]
    assert "0.bias" in module_params(model, trainable_only=False)
    assert set(module_buffers(model)) == {
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    model.eval()
    params = {k: torch.zeros_like(v) for k, v in module_params(model).items()}
    out = call_with_params(model, params, torch.ones(3, 2))
    assert torch.equal(out, torch.zeros(3, 2))
    # The model's own parameters are untouched.
    assert model[1].weight.abs().sum() > 0


def test_call_with_params_gradients_flow():
    lin = nn.Linear(3, 1)
    params = module_params(lin, detach=True)
    params = {k: v.clone().requires_grad_() for k, v in params.items()}
    x = torch.randn(4, 3)
    call_with_params(lin, params, (x,)).sum().backward()
    torch.testing.assert_close(params["weight"].grad, x.sum(0, keepdim=True))


@pytest.mark.parametrize(
    "fn,args",
    [
        (module_params, ()),
        (module_buffers, ()),
        (call_with_params, ({}, torch.ones(1))),
    ],
)
def test_module_helpers_reject_non_modules(fn, args):
    with pytest.raises(
        TypeError, match=rf"{fn.__name__}: `model` must be an nn.Module, got model='lin'"
    ):
        fn("lin", *args)


def test_progress_argument_errors():
    with pytest.raises(ValueError, match=r"progress: `total` must be an int >= 0, got total=-1"):
        progress(total=-1, enable=False)
    with pytest.raises(
        TypeError, match=r"progress: `enable` must be True, False or None, got enable='yes'"
    ):
        progress(range(2), enable="yes")  # type: ignore[arg-type]
