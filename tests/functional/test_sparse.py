"""Colorings (validity, by brute force) and the sparse-derivative API's errors."""

import itertools

import pytest
import torch
from hypothesis import given, strategies as st

import research_ext.functional as rf

F64 = torch.float64


def _random_pattern(m, n, density, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, n, generator=g) < density


def _assert_valid_column_coloring(pattern, colors):
    for row in pattern:
        used = colors[row.nonzero().flatten()]
        assert used.unique().numel() == used.numel(), "two columns sharing a row share a color"


@given(st.integers(1, 25), st.integers(1, 25), st.floats(0.0, 0.6), st.integers(0, 10**6))
def test_jacobian_colorings_are_valid(m, n, density, seed):
    pattern = _random_pattern(m, n, density, seed)
    column = rf.color_jacobian(pattern, mode="column")
    row = rf.color_jacobian(pattern.to_sparse(), mode="row")
    assert column.kind == "column" and row.kind == "row"
    _assert_valid_column_coloring(pattern, column.colors)
    _assert_valid_column_coloring(pattern.T, row.colors)
    # At least as many colors as the densest row (column) needs, and never more than n (m).
    assert int(pattern.sum(dim=1).max()) <= column.num_colors <= n
    assert rf.color_jacobian(pattern).num_colors == min(column.num_colors, row.num_colors)
    assert column.nnz == int(pattern.sum())


def _assert_star_coloring(adjacency, colors):
    n = adjacency.shape[0]
    nbrs = [set(adjacency[i].nonzero().flatten().tolist()) - {i} for i in range(n)]
    for i in range(n):
        for j in nbrs[i]:
            assert colors[i] != colors[j], "adjacent vertices share a color"
    # No path on four vertices a-b-c-d is two-colored.
    for b in range(n):
        for a, c in itertools.permutations(nbrs[b], 2):
            for d in nbrs[c] - {a, b}:
                two = colors[a] == colors[c] and colors[b] == colors[d]
                assert not two, f"bicolored path {a}-{b}-{c}-{d}"


@given(st.integers(1, 18), st.floats(0.0, 0.5), st.integers(0, 10**6))
def test_star_colorings_are_valid_and_recover_symmetric_matrices(n, density, seed):
    upper = _random_pattern(n, n, density, seed)
    pattern = upper | upper.T
    plan = rf.color_hessian(pattern)
    _assert_star_coloring(pattern | torch.eye(n, dtype=torch.bool), plan.colors.tolist())
    # Direct recovery reproduces any symmetric matrix with this pattern from H @ S.
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(n, n, dtype=F64, generator=g)
    h = torch.where(pattern | torch.eye(n, dtype=torch.bool), values + values.T, 0.0)
    compressed = plan.seeds(torch.device("cpu"), F64) @ h  # (colors, n) = (H S)^T
    torch.testing.assert_close(plan.recover(compressed).to_dense(), h)


def test_plan_repr_and_seeds():
    plan = rf.color_jacobian(torch.ones(5, 5).triu(-1).tril(1))
    assert repr(plan) == "ColoringPlan(kind='column', shape=(5, 5), nnz=13, num_colors=3)"
    seeds = plan.seeds(torch.device("cpu"), torch.float32)
    assert seeds.shape == (3, 5) and seeds.dtype == torch.float32
    torch.testing.assert_close(seeds.sum(dim=0), torch.ones(5))


def test_sparsity_argument_errors():
    f = lambda x: x[1:] - x[:-1]  # noqa: E731
    x = torch.zeros(4, dtype=F64)
    with pytest.raises(
        ValueError,
        match=r"sparse_jacobian: `sparsity` pattern of shape \(3, 3\) does not match the function's inputs, got 4",
    ):
        rf.sparse_jacobian(f, torch.ones(3, 3), mode="column")(x)
    with pytest.raises(
        ValueError,
        match=r"sparse_jacobian: `sparsity` pattern of shape \(4, 4\) does not match the function's outputs, got 3",
    ):
        rf.sparse_jacobian(f, torch.ones(4, 4), mode="column")(x)
    with pytest.raises(
        ValueError,
        match=r"sparse_jacobian: `sparsity` pattern of shape \(2, 4\) does not match the function's \(outputs, inputs\), got \(3, 4\)",
    ):
        rf.sparse_jacobian(f, torch.ones(2, 4), mode="row")(x)
    with pytest.raises(
        ValueError,
        match=r"color_jacobian: `sparsity` must be 2-D \(outputs, inputs\), got shape \(4,\)",
    ):
        rf.sparse_jacobian(f, torch.ones(4))
    with pytest.raises(
        TypeError,
        match="sparse_jacobian: `sparsity` must be a pattern tensor, a ColoringPlan or None, got sparsity=<class 'list'>",
    ):
        rf.sparse_jacobian(f, [[1, 0]])
    with pytest.raises(
        TypeError, match="color_jacobian: `sparsity` must be a dense or sparse 2-D torch.Tensor"
    ):
        rf.color_jacobian([[1]])
    with pytest.raises(
        ValueError,
        match="sparse_jacobian: `mode` must be one of 'auto', 'column', 'row', got mode='fwd'",
    ):
        rf.sparse_jacobian(f, mode="fwd")
    with pytest.raises(
        ValueError, match="sparse_jacobian: `layout` must be one of 'coo', 'csr', got layout='bsr'"
    ):
        rf.sparse_jacobian(f, layout="bsr")
    with pytest.raises(
        ValueError, match="sparse_jacobian: `sparsity` is a star \\(Hessian\\) plan"
    ):
        rf.sparse_jacobian(f, rf.color_hessian(torch.eye(4)))(x)
    with pytest.raises(
        TypeError, match="sparse_jacobian: `x` must have a floating dtype, got x.dtype=torch.int64"
    ):
        rf.sparse_jacobian(f)(torch.zeros(4, dtype=torch.long))


def test_hessian_argument_errors():
    f = lambda x: (x**2).sum()  # noqa: E731
    x = torch.zeros(4, dtype=F64)
    with pytest.raises(
        ValueError, match=r"color_hessian: `sparsity` must be square, got sparsity='shape \(3, 4\)'"
    ):
        rf.color_hessian(torch.ones(3, 4))
    with pytest.raises(
        ValueError,
        match="sparse_hessian: `sparsity` must be a star plan from color_hessian, got kind='column'",
    ):
        rf.sparse_hessian(f, rf.color_jacobian(torch.eye(4), mode="column"))(x)
    with pytest.raises(
        ValueError,
        match=r"sparse_hessian: `sparsity` pattern of shape \(3, 3\) does not match the function's \(inputs, inputs\), got \(4, 4\)",
    ):
        rf.sparse_hessian(f, torch.eye(3))(x)
    with pytest.raises(
        TypeError, match="hessian_sparsity: `x` must be a torch.Tensor, got x='list'"
    ):
        rf.hessian_sparsity(f, [1.0])


def test_detection_errors():
    x = torch.zeros(3, dtype=F64)
    with pytest.raises(
        ValueError, match=r"jacobian_sparsity: `f\(x\)` must be NaN-free for method='nan'"
    ):
        rf.jacobian_sparsity(lambda u: u / u, x)
    with pytest.raises(
        ValueError,
        match="jacobian_sparsity: `method` must be one of 'nan', 'probe', got method='trace'",
    ):
        rf.jacobian_sparsity(lambda u: u, x, method="trace")
    with pytest.raises(
        ValueError, match="jacobian_sparsity: `chunk_size` must be a positive int, got chunk_size=0"
    ):
        rf.jacobian_sparsity(lambda u: u, x, chunk_size=0)


def test_empty_pattern_gives_an_all_zero_jacobian():
    f = lambda x: torch.zeros(2, dtype=x.dtype) * 0  # noqa: E731 - constant
    x = torch.ones(3, dtype=F64)
    jac = rf.sparse_jacobian(f, torch.zeros(2, 3))
    out = jac(x)
    assert out.shape == (2, 3) and out._nnz() == 0 and jac.plan.num_colors <= 1


@pytest.mark.parametrize("method", ["nan", "probe"])
def test_sparsity_detection_syncs_once_not_per_chunk(method, monkeypatch):
    # nonzero() needs its output size on the host (a host-device sync on accelerators): the
    # chunks' hits are gathered on the device and located once, not once per chunk.
    calls = []
    nonzero = torch.nonzero

    def counting(*args, **kwargs):
        calls.append(1)
        return nonzero(*args, **kwargs)

    def f(u):
        return u[1:] * u[:-1]

    x = torch.linspace(0.5, 1.5, 300, dtype=torch.float64)
    expected = rf.jacobian_sparsity(f, x, method=method).to_dense()
    monkeypatch.setattr(torch, "nonzero", counting)
    got = rf.jacobian_sparsity(f, x, method=method, chunk_size=16, num_probes=2)
    assert len(calls) == 1
    torch.testing.assert_close(got.to_dense(), expected)
