"""Hypothesis properties of curvature operators: symmetry, linearity, semi-definiteness."""

import functools

import torch
from hypothesis import given, strategies as st
from torch import nn

import research_ext.functional as rf
from tests.helpers import ATOL_REORDERED_FLOAT64, RTOL_REORDERED_FLOAT64, tolerances

F64 = torch.float64


@functools.cache
def _operator(kind: str, loss: str, width: int, n: int):
    g = torch.Generator().manual_seed(width * 100 + n)
    torch.manual_seed(width + n)
    model = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2)).to(F64)
    x = torch.randn(n, 3, generator=g, dtype=F64)
    if loss == "ce":
        loss_fn, y = nn.CrossEntropyLoss(), torch.randint(0, 2, (n,), generator=g)
    else:
        loss_fn, y = nn.MSELoss(), torch.randn(n, 2, generator=g, dtype=F64)
    if kind == "hessian":
        return rf.hessian_operator(model, loss_fn, (x, y))
    if kind == "ggn":
        return rf.ggn_operator(model, loss_fn, (x, y))
    return rf.fisher_operator(model, loss_fn, (x, y), kind=kind)


operators = st.builds(
    _operator,
    st.sampled_from(["hessian", "ggn", "exact", "empirical", "mc"]),
    st.sampled_from(["mse", "ce"]),
    st.integers(1, 4),
    st.integers(1, 6),
)


def _vectors(op, seed, k=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(op.shape[0], k, generator=g, dtype=F64)


@given(operators, st.integers(0, 2**31 - 1))
def test_adjoint_identity(op, seed):
    v, w = _vectors(op, seed).unbind(dim=1)
    lhs, rhs = torch.dot(op @ v, w), torch.dot(v, op @ w)
    scale = (op @ v).norm() * w.norm() + (op @ w).norm() * v.norm() + 1e-300
    assert abs(float(lhs - rhs)) <= RTOL_REORDERED_FLOAT64 * float(scale)


@given(
    operators,
    st.integers(0, 2**31 - 1),
    st.floats(-3, 3, allow_nan=False),
    st.floats(-3, 3, allow_nan=False),
)
def test_linearity(op, seed, a, b):
    v, w = _vectors(op, seed).unbind(dim=1)
    combined = op @ (a * v + b * w)
    separate = a * (op @ v) + b * (op @ w)
    torch.testing.assert_close(combined, separate, **tolerances(torch.float64))


@given(operators, st.integers(0, 2**31 - 1), st.integers(1, 5))
def test_block_equals_columns(op, seed, k):
    block = _vectors(op, seed, k)
    columns = torch.stack([op @ block[:, j] for j in range(k)], dim=1)
    torch.testing.assert_close(
        op @ block, columns, rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_REORDERED_FLOAT64
    )


@given(
    st.builds(
        _operator,
        st.sampled_from(["ggn", "exact", "empirical", "mc"]),
        st.sampled_from(["mse", "ce"]),
        st.integers(1, 4),
        st.integers(1, 6),
    ),
    st.integers(0, 2**31 - 1),
)
def test_gauss_newton_and_fisher_are_positive_semidefinite(op, seed):
    v = _vectors(op, seed, 1)[:, 0]
    quad = torch.dot(v, op @ v)
    assert float(quad) >= -RTOL_REORDERED_FLOAT64 * float((op @ v).norm() * v.norm())
