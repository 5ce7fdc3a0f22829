"""One suite every curvature operator passes: LinearOperator contract, symmetry, conversions."""

import numpy as np
import pytest
import scipy.sparse.linalg
import torch

import research_ext.functional as rf
from research_ext.core import LinearOperator
from research_ext.functional import _curvature
from tests.functional.test_curvature_parity import make_problem
from tests.helpers import (
    ATOL_FLOAT32_CURVATURE,
    ATOL_FLOAT64,
    RTOL_EIGENSOLVER_FLOAT64,
    RTOL_FLOAT32_CURVATURE,
    RTOL_FLOAT64,
    tolerances,
)

# Block products run under both branches: the CPU loop and the vmapped pass accelerators run.
pytestmark = pytest.mark.usefixtures("curvature_branch")

OPERATORS = {
    "hessian": lambda m, lf, d, **kw: rf.hessian_operator(m, lf, d, **kw),
    "ggn": lambda m, lf, d, **kw: rf.ggn_operator(m, lf, d, **kw),
    "fisher_exact": lambda m, lf, d, **kw: rf.fisher_operator(m, lf, d, kind="exact", **kw),
    "fisher_mc": lambda m, lf, d, **kw: rf.fisher_operator(
        m, lf, d, kind="mc", mc_samples=3, generator=torch.Generator().manual_seed(0), **kw
    ),
    "fisher_empirical": lambda m, lf, d, **kw: rf.fisher_operator(m, lf, d, kind="empirical", **kw),
}


@pytest.fixture(params=list(OPERATORS))
def name(request):
    return request.param


@pytest.fixture(params=["mse", "ce"])
def problem(request):
    return make_problem(request.param)


def _build(name, problem, dtype=torch.float64, **kw):
    model, loss_fn, x, y = problem
    model = model.to(dtype)
    x = x.to(dtype)
    if y.is_floating_point():
        y = y.to(dtype)
    return OPERATORS[name](model, loss_fn, (x, y), **kw), model


def test_is_a_hermitian_linear_operator(name, problem):
    op, model = _build(name, problem)
    n = sum(p.numel() for p in model.parameters())
    assert isinstance(op, LinearOperator) and isinstance(op, rf.AbstractCurvatureOperator)
    assert op.is_hermitian and op.H is op and op.T is op
    assert op.shape == (n, n)
    assert op.dtype == torch.float64 and op.device == torch.device("cpu")
    assert "shape=" in repr(op)


def test_products_agree_with_dense(name, problem):
    op, _ = _build(name, problem)
    dense = op.to_dense()
    torch.testing.assert_close(dense, dense.mT, **tolerances(torch.float64))
    g = torch.Generator().manual_seed(5)
    v = torch.randn(op.shape[1], generator=g, dtype=torch.float64)
    block = torch.randn(op.shape[1], 4, generator=g, dtype=torch.float64)
    tol = tolerances(torch.float64)
    torch.testing.assert_close(op @ v, dense @ v, **tol)
    torch.testing.assert_close(op.matvec(v), dense @ v, **tol)
    torch.testing.assert_close(op @ block, dense @ block, **tol)
    torch.testing.assert_close(op.rmatvec(v), dense @ v, **tol)
    torch.testing.assert_close(v @ op, dense @ v, **tol)


def test_to_scipy_and_eigsh(name, problem):
    op, _ = _build(name, problem)
    dense = op.to_dense().numpy()
    lin = op.to_scipy()
    assert isinstance(lin, scipy.sparse.linalg.LinearOperator)
    v = np.random.default_rng(0).standard_normal(op.shape[0])
    np.testing.assert_allclose(lin @ v, dense @ v, rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64)
    top = scipy.sparse.linalg.eigsh(lin, k=1, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(
        top, np.linalg.eigvalsh(dense)[-1:], rtol=RTOL_EIGENSOLVER_FLOAT64, atol=ATOL_FLOAT64
    )


def test_float32_follows_parameters(name, problem):
    op32, _ = _build(name, problem, dtype=torch.float32)
    op64, _ = _build(name, problem)
    assert op32.dtype == torch.float32
    v = torch.randn(op64.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = op32 @ v.float()
    assert out.dtype == torch.float32
    if name == "fisher_mc":  # Gaussian draws differ between dtypes; compare with its own matrix
        torch.testing.assert_close(
            out,
            op32.to_dense() @ v.float(),
            rtol=RTOL_FLOAT32_CURVATURE,
            atol=ATOL_FLOAT32_CURVATURE,
        )
    else:
        torch.testing.assert_close(
            out.double(), op64 @ v, rtol=RTOL_FLOAT32_CURVATURE, atol=ATOL_FLOAT32_CURVATURE
        )


def test_model_is_left_untouched_and_point_is_fixed(name, problem):
    op, model = _build(name, problem)
    before = op.to_dense()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # a training step after construction must not move the operator
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(op.to_dense(), before, rtol=0, atol=0)


@pytest.mark.parametrize("switch", ["0", "1"])
def test_vectorized_block_products_match_loop(name, problem, monkeypatch, switch):
    op, _ = _build(name, problem)
    block = torch.randn(
        op.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)
    )
    seen = []
    inner = _curvature._grad

    def spy(*args, batched, **kwargs):
        seen.append(batched)
        return inner(*args, batched=batched, **kwargs)

    monkeypatch.setattr(_curvature, "_grad", spy)
    monkeypatch.setenv("RESEARCH_EXT_VMAP_ON_CPU", "0")
    looped = op @ block
    assert seen and not any(seen)  # the CPU default: a loop over the columns
    seen.clear()
    monkeypatch.setenv("RESEARCH_EXT_VMAP_ON_CPU", switch)
    torch.testing.assert_close(op @ block, looped, **tolerances(torch.float64))
    assert seen and all(seen) == (switch == "1")  # the switch forces the accelerators' branch


def test_iterable_data_with_progress_bar(name, problem):
    model, loss_fn, x, y = problem
    op_one = OPERATORS[name](model, loss_fn, (x, y))
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    op_many = OPERATORS[name](model, loss_fn, batches, show_progress=True)
    if name != "fisher_mc":  # the MC draws differ between batchings
        torch.testing.assert_close(
            op_many.to_dense(), op_one.to_dense(), **tolerances(torch.float64)
        )
    else:
        assert op_many.to_dense().shape == op_one.shape
