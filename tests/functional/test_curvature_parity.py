"""Curvature operators against dense matrices from torch.autograd.functional, in float64."""

import pytest
import torch
from torch import nn

import research_ext.functional as rf
from tests.helpers import ATOL_FLOAT64, RTOL_FLOAT64, RTOL_MONTE_CARLO_4000

# Block products run under both branches: the CPU loop and the vmapped pass accelerators run.
pytestmark = pytest.mark.usefixtures("curvature_branch")

F64 = torch.float64


def make_problem(loss: str, seed: int = 0, n: int = 7, d_in: int = 3, d_out: int = 3):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d_in, 4), nn.Tanh(), nn.Linear(4, d_out)).to(F64)
    x = torch.randn(n, d_in, generator=g, dtype=F64)
    if loss == "ce":
        return model, nn.CrossEntropyLoss(), x, torch.randint(0, d_out, (n,), generator=g)
    if loss == "ce_sum":
        return (
            model,
            nn.CrossEntropyLoss(reduction="sum"),
            x,
            torch.randint(0, d_out, (n,), generator=g),
        )
    if loss == "mse_sum":
        return model, nn.MSELoss(reduction="sum"), x, torch.randn(n, d_out, generator=g, dtype=F64)
    return model, nn.MSELoss(), x, torch.randn(n, d_out, generator=g, dtype=F64)


def _split(model, names=None):
    named = dict(model.named_parameters())
    names = list(named) if names is None else names
    flat = torch.cat([named[k].detach().reshape(-1) for k in names])
    shapes = [named[k].shape for k in names]

    def unflatten(vec):
        out, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = shape.numel()
            out[name] = vec[i : i + size].reshape(shape)
            i += size
        return out

    fixed = {k: v.detach() for k, v in named.items() if k not in names}
    return flat, lambda vec: {**fixed, **unflatten(vec)}


def dense_hessian(model, loss_fn, x, y, names=None):
    flat, params = _split(model, names)
    loss = lambda vec: loss_fn(torch.func.functional_call(model, params(vec), (x,)), y)  # noqa: E731
    return torch.autograd.functional.hessian(loss, flat)


def _output_jacobian(model, x, names=None):
    flat, params = _split(model, names)
    out = lambda vec: torch.func.functional_call(model, params(vec), (x,))  # noqa: E731
    return torch.autograd.functional.jacobian(out, flat)  # (N, C, P)


def dense_ggn(model, loss_fn, x, y, names=None):
    jac = _output_jacobian(model, x, names)
    n, c, p = jac.shape
    out = model(x).detach()
    h_out = torch.autograd.functional.hessian(lambda f: loss_fn(f, y), out).reshape(n * c, n * c)
    j = jac.reshape(n * c, p)
    return j.T @ h_out @ j


def dense_empirical_fisher(model, loss_fn, x, y):
    """Per-example loop: sum_i w grad l_i grad l_i^T, l_i = loss_fn on the one-sample batch."""
    n = x.shape[0]
    weight = 1.0 / n if loss_fn.reduction == "mean" else 1.0
    rows = []
    for i in range(n):
        loss = loss_fn(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        rows.append(torch.cat([t.reshape(-1) for t in grads]))
    g = torch.stack(rows)
    return weight * g.T @ g


def dense_exact_fisher(model, loss_fn, x, y):
    """sum_i w E_y[grad l_i grad l_i^T] with the expectation written out per likelihood."""
    n = x.shape[0]
    weight = 1.0 / n if loss_fn.reduction == "mean" else 1.0
    jac = _output_jacobian(model, x)
    out = model(x).detach()
    total = torch.zeros(jac.shape[-1], jac.shape[-1], dtype=F64)
    for i in range(n):
        j_i = jac[i]  # (C, P)
        if isinstance(loss_fn, nn.CrossEntropyLoss):
            p = out[i].softmax(dim=0)
            for c in range(out.shape[1]):  # enumerate the categorical targets
                score = p - nn.functional.one_hot(torch.tensor(c), out.shape[1]).to(F64)
                g = j_i.T @ score
                total += weight * p[c] * torch.outer(g, g)
        else:
            c = out.shape[1]
            a = 1.0 / c if loss_fn.reduction == "mean" else 1.0
            # l = a ||f - y||^2 is the NLL of N(f, I / 2a): E[g g^T] = 4 a^2 (1 / 2a) J^T J.
            total += weight * 2 * a * j_i.T @ j_i
    return total


def close(actual, expected, **kw):
    kw = {"rtol": RTOL_FLOAT64, "atol": ATOL_FLOAT64, **kw}
    torch.testing.assert_close(actual, expected, **kw)


LOSSES = ["mse", "ce", "mse_sum", "ce_sum"]


@pytest.mark.parametrize("loss", LOSSES)
def test_hessian_matches_dense(loss):
    model, loss_fn, x, y = make_problem(loss)
    close(
        rf.hessian_operator(model, loss_fn, (x, y)).to_dense(), dense_hessian(model, loss_fn, x, y)
    )


@pytest.mark.parametrize("loss", LOSSES)
def test_ggn_matches_dense(loss):
    model, loss_fn, x, y = make_problem(loss)
    close(rf.ggn_operator(model, loss_fn, (x, y)).to_dense(), dense_ggn(model, loss_fn, x, y))


@pytest.mark.parametrize("loss", LOSSES)
def test_exact_fisher_matches_expectation(loss):
    model, loss_fn, x, y = make_problem(loss)
    op = rf.fisher_operator(model, loss_fn, (x, y), kind="exact")
    close(op.to_dense(), dense_exact_fisher(model, loss_fn, x, y))


@pytest.mark.parametrize("loss", LOSSES)
def test_empirical_fisher_matches_per_example_loop(loss):
    model, loss_fn, x, y = make_problem(loss)
    op = rf.fisher_operator(model, loss_fn, (x, y), kind="empirical")
    close(op.to_dense(), dense_empirical_fisher(model, loss_fn, x, y))


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_mc_fisher_converges_to_exact(loss):
    model, loss_fn, x, y = make_problem(loss)
    gen = torch.Generator().manual_seed(0)
    op = rf.fisher_operator(model, loss_fn, (x, y), kind="mc", mc_samples=4000, generator=gen)
    exact = dense_exact_fisher(model, loss_fn, x, y)
    # Monte Carlo error ~ 1/sqrt(4000) = 1.6% of the scale of the matrix.
    close(op.to_dense(), exact, rtol=0, atol=RTOL_MONTE_CARLO_4000 * float(exact.abs().max()))


@pytest.mark.parametrize(
    "factory,dense",
    [
        (rf.hessian_operator, dense_hessian),
        (rf.ggn_operator, dense_ggn),
    ],
    ids=["hessian", "ggn"],
)
@pytest.mark.parametrize("loss", ["mse", "ce_sum"])
@pytest.mark.parametrize("cache", [False, True])
def test_iterable_of_batches_accumulates(factory, dense, loss, cache):
    model, loss_fn, x, y = make_problem(loss, n=9)
    batches = [(x[:4], y[:4]), (x[4:5], y[4:5]), (x[5:], y[5:])]
    op = factory(model, loss_fn, batches, cache=cache)
    expected = dense(model, loss_fn, x, y)
    close(op.to_dense(), expected)
    close(op.to_dense(), expected)  # a second pass (replayed or cached) gives the same matrix


def test_empirical_fisher_over_batches_and_generator_data():
    model, loss_fn, x, y = make_problem("ce", n=8)
    batches = ((x[i : i + 3], y[i : i + 3]) for i in range(0, 8, 3))  # a one-shot generator
    op = rf.fisher_operator(model, loss_fn, batches, kind="empirical")
    close(op.to_dense(), dense_empirical_fisher(model, loss_fn, x, y))


@pytest.mark.parametrize("factory", [rf.hessian_operator, rf.ggn_operator])
def test_parameter_subset(factory):
    model, loss_fn, x, y = make_problem("mse")
    names = ["2.weight", "0.bias"]
    op = factory(model, loss_fn, (x, y), params=names)
    full = (dense_hessian if factory is rf.hessian_operator else dense_ggn)(
        model, loss_fn, x, y, names
    )
    assert op.shape == (3 * 4 + 4, 3 * 4 + 4)
    close(op.to_dense(), full)
