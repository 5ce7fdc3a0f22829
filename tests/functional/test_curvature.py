"""Curvature operators: argument validation and error text, data handling."""

import pytest
import torch
from torch import nn

import research_ext.functional as rf
from tests.functional.test_curvature_parity import make_problem

# Block products run under both branches: the CPU loop and the vmapped pass accelerators run.
pytestmark = pytest.mark.usefixtures("curvature_branch")


def test_model_without_trainable_parameters():
    model, loss_fn, x, y = make_problem("mse")
    model.requires_grad_(False)
    with pytest.raises(
        ValueError,
        match=r"hessian_operator: `model` must be a module with trainable parameters, got model='Sequential'",
    ):
        rf.hessian_operator(model, loss_fn, (x, y))
    with pytest.raises(ValueError, match="ggn_operator: `model` must be a module with trainable"):
        rf.ggn_operator(nn.ReLU(), loss_fn, (x, y))


def test_bad_model_loss_and_data_types():
    model, loss_fn, x, y = make_problem("mse")
    with pytest.raises(TypeError, match="hessian_operator: `model` must be an nn.Module"):
        rf.hessian_operator(lambda t: t, loss_fn, (x, y))
    with pytest.raises(
        TypeError, match="hessian_operator: `loss_fn` must be callable, got loss_fn='mse'"
    ):
        rf.hessian_operator(model, "mse", (x, y))
    with pytest.raises(
        TypeError,
        match=r"hessian_operator: `data` must be an \(inputs, targets\) batch or an iterable of batches",
    ):
        rf.hessian_operator(model, loss_fn, x)
    with pytest.raises(TypeError, match=r"`data` must be an \(inputs, targets\) batch"):
        rf.hessian_operator(model, loss_fn, 3)


def test_params_selection_errors():
    model, loss_fn, x, y = make_problem("mse")
    with pytest.raises(
        ValueError, match=r"`params` must be names of parameters of `model`, got params=\['nope'\]"
    ):
        rf.ggn_operator(model, loss_fn, (x, y), params=["0.weight", "nope"])
    with pytest.raises(
        TypeError, match="ggn_operator: `params` must be a sequence of names, got params='0.weight'"
    ):
        rf.ggn_operator(model, loss_fn, (x, y), params="0.weight")
    with pytest.raises(ValueError, match="`model` must be a module with trainable parameters"):
        rf.ggn_operator(model, loss_fn, (x, y), params=[])


def test_reduction_and_fisher_options():
    model, loss_fn, x, y = make_problem("ce")
    with pytest.raises(
        ValueError,
        match="hessian_operator: `reduction` must be one of 'mean', 'sum', got reduction='none'",
    ):
        rf.hessian_operator(model, nn.CrossEntropyLoss(reduction="none"), (x, y))
    with pytest.raises(
        ValueError,
        match="fisher_operator: `kind` must be one of 'empirical', 'mc', 'exact', got kind='true'",
    ):
        rf.fisher_operator(model, loss_fn, (x, y), kind="true")
    with pytest.raises(
        ValueError, match="fisher_operator: `mc_samples` must be a positive int, got mc_samples=0"
    ):
        rf.fisher_operator(model, loss_fn, (x, y), mc_samples=0)
    with pytest.raises(
        NotImplementedError, match="fisher_operator: kind='mc' needs the model's likelihood"
    ):
        rf.fisher_operator(model, nn.NLLLoss(), (x, y), kind="mc")


def test_explicit_reduction_overrides_loss():
    model, _, x, y = make_problem("mse")
    mean = rf.ggn_operator(model, lambda f, t: ((f - t) ** 2).mean(), (x, y)).to_dense()
    summed = rf.ggn_operator(
        model, lambda f, t: ((f - t) ** 2).sum(), [(x[:3], y[:3]), (x[3:], y[3:])], reduction="sum"
    ).to_dense()
    torch.testing.assert_close(summed, mean * y.numel())


def test_empty_iterable_and_operand_shape():
    model, loss_fn, x, y = make_problem("mse")
    op = rf.hessian_operator(model, loss_fn, [])
    with pytest.raises(
        ValueError, match=r"hessian_operator: `data` must be a non-empty iterable, got data=\[\]"
    ):
        op @ torch.ones(op.shape[0], dtype=torch.float64)
    op = rf.hessian_operator(model, loss_fn, (x, y))
    with pytest.raises(ValueError, match=r"expected \(31,\), got \(3,\)"):
        op @ torch.ones(3, dtype=torch.float64)


def test_dict_and_tuple_inputs():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 1), nn.Linear(3, 1)

        def forward(self, u, v):
            return self.a(u) * torch.tanh(self.b(v))

    model = TwoInputs().double()
    u, v, y = torch.randn(5, 2).double(), torch.randn(5, 3).double(), torch.randn(5, 1).double()
    loss_fn = nn.MSELoss()
    by_tuple = rf.hessian_operator(model, loss_fn, ((u, v), y)).to_dense()
    by_dict = rf.hessian_operator(model, loss_fn, ({"u": u, "v": v}, y)).to_dense()
    torch.testing.assert_close(by_tuple, by_dict)
    assert by_tuple.shape == (7, 7)


def test_parameters_unreachable_from_the_loss_give_zero_blocks():
    model, loss_fn, x, y = make_problem("mse")
    model.register_parameter("unused", nn.Parameter(torch.ones(2, dtype=torch.float64)))
    for op in (
        rf.hessian_operator(model, loss_fn, (x, y)),
        rf.ggn_operator(model, loss_fn, (x, y)),
    ):
        dense = op.to_dense()
        assert dense.shape == (33, 33)
        assert op.names[0] == "unused"  # named_parameters() order: own parameters first
        assert torch.count_nonzero(dense[:2]) == 0 and torch.count_nonzero(dense[:, :2]) == 0
        assert torch.count_nonzero(dense[2:, 2:]) > 0


def test_linear_loss_has_zero_hessian_and_ggn():
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(4, 3).double(), torch.zeros(4, 2).double()
    loss = lambda f, t: (f - t).sum()  # noqa: E731 - linear in the outputs, linear model
    assert torch.count_nonzero(rf.hessian_operator(model, loss, (x, y)).to_dense()) == 0
    assert torch.count_nonzero(rf.ggn_operator(model, loss, (x, y)).to_dense()) == 0


def test_dataloader_data_matches_one_batch():
    from torch.utils.data import DataLoader, TensorDataset

    model, loss_fn, x, y = make_problem("ce", n=10)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # batches of 4, 4, 2
    for factory in (rf.hessian_operator, rf.ggn_operator):
        whole = factory(model, loss_fn, (x, y)).to_dense()
        torch.testing.assert_close(factory(model, loss_fn, loader).to_dense(), whole)
    empirical = rf.fisher_operator(model, loss_fn, loader, kind="empirical").to_dense()
    whole = rf.fisher_operator(model, loss_fn, (x, y), kind="empirical").to_dense()
    torch.testing.assert_close(empirical, whole)


def test_subset_operator_keeps_the_other_parameters_fixed_too():
    model, loss_fn, x, y = make_problem("mse", n=9)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]  # replayed (not cached): forward runs per product
    op = rf.hessian_operator(model, loss_fn, batches, params=["2.bias"])
    before = op.to_dense()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    torch.testing.assert_close(op.to_dense(), before, rtol=0, atol=0)
