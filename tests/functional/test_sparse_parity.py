"""Sparse Jacobians and Hessians equal the dense ones from torch.autograd.functional."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import research_ext.functional as rf
from tests.helpers import tolerances

F64 = torch.float64


def banded(n=40, width=2):
    coef = torch.linspace(0.5, 1.5, 2 * width + 1, dtype=F64)

    def f(x):
        xp = F.pad(x, (width, width))
        return sum(coef[k] * xp[k : k + n] ** 2 for k in range(2 * width + 1)) + torch.sin(x)

    pattern = torch.ones(n, n).triu(-width).tril(width)
    return f, n, pattern


def block_diagonal(blocks=5, size=4):
    w = torch.randn(blocks, size, size, dtype=F64, generator=torch.Generator().manual_seed(0))

    def f(x):
        return torch.tanh(torch.einsum("nb,nbc->nc", x.reshape(blocks, size), w)).reshape(-1)

    pattern = torch.block_diag(*[torch.ones(size, size)] * blocks)
    return f, blocks * size, pattern


def arrow(n=25):
    def f(x):
        head = (x**2).sum().reshape(1)
        return torch.cat([head, x[1:] ** 2 + x[0] * x[1:]])

    pattern = torch.eye(n)
    pattern[0, :] = 1
    pattern[:, 0] = 1
    return f, n, pattern


def random_sparse(m=30, n=20, density=0.12, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(m, n, generator=g) < density
    rows, cols = mask.nonzero(as_tuple=True)
    a = torch.randn(rows.numel(), dtype=F64, generator=g)

    def f(x):
        return torch.zeros(m, dtype=x.dtype).index_add(
            0, rows, a * torch.sin(x[cols] * (1 + x[cols]))
        )

    return f, n, mask


PATTERNS = {
    "banded": banded,
    "block_diagonal": block_diagonal,
    "arrow": arrow,
    "random_sparse": random_sparse,
}


@pytest.mark.parametrize("mode", ["auto", "column", "row"])
@pytest.mark.parametrize("name", list(PATTERNS))
def test_sparse_jacobian_equals_dense(name, mode):
    f, n, pattern = PATTERNS[name]()
    x = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(1))
    jac = rf.sparse_jacobian(f, pattern, mode=mode)
    sparse = jac(x)
    assert sparse.layout == torch.sparse_coo and sparse.dtype == F64
    assert sparse._nnz() == int(pattern.count_nonzero())
    torch.testing.assert_close(
        sparse.to_dense(), torch.autograd.functional.jacobian(f, x), **tolerances(F64)
    )
    if mode != "auto":
        assert jac.plan.kind == mode


@pytest.mark.parametrize("name", list(PATTERNS))
@pytest.mark.parametrize("method", ["nan", "probe"])
def test_detected_pattern_and_plan_reuse(name, method):
    f, n, pattern = PATTERNS[name]()
    x = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(2))
    detected = rf.jacobian_sparsity(
        f, x, method=method, chunk_size=7, generator=torch.Generator().manual_seed(0)
    )
    assert detected.dtype == torch.bool and detected.is_coalesced()
    torch.testing.assert_close(detected.to_dense(), pattern.bool())
    jac = rf.sparse_jacobian(f)  # detect at the first call, then reuse the plan
    first = jac(x)
    plan = jac.plan
    x2 = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(3))
    second = jac(x2)
    assert jac.plan is plan
    torch.testing.assert_close(first.to_dense(), torch.autograd.functional.jacobian(f, x))
    torch.testing.assert_close(second.to_dense(), torch.autograd.functional.jacobian(f, x2))


def test_nan_detection_is_a_superset_when_entries_cancel_structurally():
    # 0 * x_j: structurally present, numerically zero. NaN propagation keeps it (conservative);
    # random probing drops it (exact nonzeros).
    f = lambda x: torch.stack([x[0] * 0.0 + x[1], x[1] ** 2])  # noqa: E731
    x = torch.ones(2, dtype=F64)
    assert rf.jacobian_sparsity(f, x).to_dense().tolist() == [[True, True], [False, True]]
    assert rf.jacobian_sparsity(f, x, method="probe").to_dense().tolist() == [
        [False, True],
        [False, True],
    ]


def test_matrix_shaped_inputs_and_csr_output():
    f = lambda x: (x[:, 1:] * x[:, :-1]).sum(dim=1)  # noqa: E731 - (3, 4) -> (3,)
    x = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(4))
    jac = rf.sparse_jacobian(f, layout="csr")
    out = jac(x)
    assert out.layout == torch.sparse_csr and out.shape == (3, 12)
    dense = torch.autograd.functional.jacobian(f, x).reshape(3, 12)
    torch.testing.assert_close(out.to_dense(), dense)


def _hessian_cases():
    def band(x):
        return ((x[1:] - x[:-1]) ** 4).sum() + torch.cos(x).sum()

    def arrow_h(x):
        return x[0] * (x**2).sum() + (x**3).sum()

    def blocks(x):
        b = x.reshape(5, 3)
        return torch.exp(b.sum(dim=1) * 0.3).sum()

    g = torch.Generator().manual_seed(5)
    edges = torch.randint(0, 18, (2, 20), generator=g)

    def graph(x):
        return torch.sin(x[edges[0]] * x[edges[1]]).sum() + (x**4).sum()

    return {
        "banded": (band, 16),
        "arrow": (arrow_h, 12),
        "blocks": (blocks, 15),
        "graph": (graph, 18),
    }


@pytest.mark.parametrize("name", list(_hessian_cases()))
def test_sparse_hessian_equals_dense(name):
    f, n = _hessian_cases()[name]
    x = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(6))
    hess = rf.sparse_hessian(f)
    out = hess(x)
    dense = torch.autograd.functional.hessian(f, x)
    torch.testing.assert_close(out.to_dense(), dense, **tolerances(F64))
    assert hess.plan.kind == "star" and hess.plan.num_colors <= n
    # Reuse the plan (explicitly) at another point, in CSR layout.
    x2 = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(7))
    out2 = rf.sparse_hessian(f, hess.plan, layout="csr")(x2)
    torch.testing.assert_close(
        out2.to_dense(), torch.autograd.functional.hessian(f, x2), **tolerances(F64)
    )


def test_star_coloring_beats_distance_two_on_an_arrow():
    f, n = _hessian_cases()["arrow"]
    plan = rf.color_hessian(rf.hessian_sparsity(f, torch.ones(n, dtype=F64)))
    # A column coloring of an arrow needs n colors; a star coloring needs 2.
    assert plan.num_colors == 2


@given(
    st.integers(1, 30),
    st.integers(1, 30),
    st.floats(0.0, 0.4),
    st.integers(0, 10**6),
    st.sampled_from(["auto", "column", "row"]),
)
def test_random_patterns_property(m, n, density, seed, mode):
    f, _, mask = random_sparse(m, n, density, seed)
    x = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(seed))
    out = rf.sparse_jacobian(f, mask, mode=mode)(x)
    torch.testing.assert_close(
        out.to_dense(), torch.autograd.functional.jacobian(f, x), **tolerances(F64)
    )
