"""Lanczos eigenvalues, SLQ densities and trace/diagonal estimators against dense references."""

import math

import pytest
import torch
from hypothesis import given, strategies as st

import research_ext.functional as rf
from research_ext.core import DenseOperator, DiagonalOperator
from tests.functional.test_curvature_parity import dense_hessian, make_problem
from tests.helpers import (
    ATOL_CANCELLING_FLOAT64,
    ATOL_RITZ_VECTORS_FLOAT64,
    RTOL_DENSITY_MASS,
    RTOL_EIGENSOLVER_FLOAT64,
    RTOL_FLOAT64,
    RTOL_RITZ_VALUES_FLOAT64,
    tolerances,
)

# Block products run under both branches: the CPU loop and the vmapped pass accelerators run.
pytestmark = pytest.mark.usefixtures("curvature_branch")

F64 = torch.float64


def random_symmetric(n: int, seed: int, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=F64)
    return (a + a.T).to(dtype)


def _expected(eigs: torch.Tensor, k: int, which: str) -> torch.Tensor:
    if which == "largest":
        return eigs[-k:]
    if which == "smallest":
        return eigs[:k]
    return torch.cat([eigs[: k // 2], eigs[len(eigs) - (k - k // 2) :]])


@pytest.mark.parametrize("which", ["largest", "smallest", "both"])
@pytest.mark.parametrize("n,k", [(1, 1), (6, 6), (40, 1), (80, 5), (150, 8)])
def test_eigvalsh_matches_torch(n, k, which):
    a = random_symmetric(n, seed=n + k)
    res = rf.eigvalsh(a, k=k, which=which, generator=torch.Generator().manual_seed(0))
    expected = _expected(torch.linalg.eigvalsh(a), k, which)
    assert res.converged and res.num_matvecs <= n
    torch.testing.assert_close(
        res.eigenvalues, expected, rtol=RTOL_FLOAT64, atol=ATOL_CANCELLING_FLOAT64
    )
    # The residual bound is rigorous: some eigenvalue lies within r_i of theta_i.
    eigs = torch.linalg.eigvalsh(a)
    distance = (eigs.unsqueeze(0) - res.eigenvalues.unsqueeze(1)).abs().amin(dim=1)
    assert bool((distance <= res.residuals + 1e-10).all())
    assert bool((distance <= res.error_estimate + 1e-10).all())


@given(st.integers(2, 60), st.integers(0, 10_000), st.sampled_from(["largest", "smallest", "both"]))
def test_eigvalsh_eigenpairs_and_bounds(n, seed, which):
    a = random_symmetric(n, seed)
    k = min(3, n)
    res = rf.eigvalsh(
        DenseOperator(a, is_hermitian=True),
        k=k,
        which=which,
        return_eigenvectors=True,
        generator=torch.Generator().manual_seed(seed),
    )
    vecs = res.eigenvectors
    assert vecs is not None and vecs.shape == (n, k)
    torch.testing.assert_close(
        vecs.T @ vecs, torch.eye(k, dtype=F64), rtol=0, atol=ATOL_RITZ_VECTORS_FLOAT64
    )
    residual = torch.linalg.vector_norm(a @ vecs - vecs * res.eigenvalues, dim=0)
    scale = float(torch.linalg.matrix_norm(a, ord=2))
    assert bool((residual <= res.residuals + ATOL_RITZ_VECTORS_FLOAT64 * scale).all())
    torch.testing.assert_close(
        res.eigenvalues,
        _expected(torch.linalg.eigvalsh(a), k, which),
        rtol=RTOL_RITZ_VALUES_FLOAT64,
        atol=RTOL_RITZ_VALUES_FLOAT64 * scale,
    )


def test_eigvalsh_on_a_hessian_operator():
    model, loss_fn, x, y = make_problem("ce", n=20)
    op = rf.hessian_operator(model, loss_fn, (x, y))
    res = rf.eigvalsh(op, k=4, which="both", generator=torch.Generator().manual_seed(1))
    expected = _expected(torch.linalg.eigvalsh(dense_hessian(model, loss_fn, x, y)), 4, "both")
    torch.testing.assert_close(
        res.eigenvalues, expected, rtol=RTOL_EIGENSOLVER_FLOAT64, atol=ATOL_CANCELLING_FLOAT64
    )


def test_eigvalsh_float32_and_repeated_eigenvalues():
    d = torch.tensor([1.0, 1.0, 1.0, 2.0, 5.0, 5.0, 7.0])
    res = rf.eigvalsh(DiagonalOperator(d), k=7, generator=torch.Generator().manual_seed(0))
    assert res.eigenvalues.dtype == torch.float32
    torch.testing.assert_close(res.eigenvalues, d.sort().values, **tolerances(torch.float32))
    assert bool(torch.isfinite(res.error_estimate).all())


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
@pytest.mark.parametrize("seed", range(4))
def test_trace_within_reported_error(method, distribution, seed):
    g = torch.Generator().manual_seed(100 + seed)
    q, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=F64))
    eigs = torch.linspace(1.0, 2.0, 200, dtype=F64) ** 4 + 10.0 * (torch.arange(200) < 5)
    a = (q * eigs) @ q.T
    est = rf.trace(a, 60, method, distribution=distribution, generator=g)
    assert est.num_matvecs == 60
    assert abs(float(est.estimate - eigs.sum())) <= 4 * float(est.std_error)


def test_hutch_plus_plus_is_exact_with_a_full_sketch():
    a = random_symmetric(10, 3)
    est = rf.trace(a, 31, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        est.estimate, torch.trace(a), rtol=RTOL_FLOAT64, atol=ATOL_CANCELLING_FLOAT64
    )


def test_trace_of_a_ggn_operator_and_batching():
    model, loss_fn, x, y = make_problem("mse", n=12)
    op = rf.ggn_operator(model, loss_fn, (x, y))
    exact = torch.trace(op.to_dense())
    whole = rf.trace(op, 90, "hutchinson", generator=torch.Generator().manual_seed(3))
    chunked = rf.trace(
        op, 90, "hutchinson", batch_size=7, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(whole.estimate, chunked.estimate)
    assert abs(float(whole.estimate - exact)) <= 4 * float(whole.std_error)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_diagonal_within_reported_error(distribution):
    a = random_symmetric(300, 11)
    est = rf.diagonal(a, 200, distribution=distribution, generator=torch.Generator().manual_seed(0))
    z = (est.estimate - torch.diagonal(a)).abs() / est.std_error
    assert float((z <= 3).double().mean()) >= 0.97  # ~99.7% expected under the CLT
    # The reported error matches the known standard deviation sqrt(sum_{k != j} A_jk^2 / m).
    theory = ((a.square().sum(dim=1) - torch.diagonal(a).square()) / 200).sqrt()
    ratio = (est.std_error / theory).median()
    assert 0.8 < float(ratio) < 1.2


def test_exact_diagonal_of_a_hessian_operator():
    model, loss_fn, x, y = make_problem("ce")
    op = rf.hessian_operator(model, loss_fn, (x, y))
    est = rf.diagonal(op, method="exact", batch_size=5)
    torch.testing.assert_close(est.estimate, torch.diagonal(dense_hessian(model, loss_fn, x, y)))
    assert est.num_matvecs == op.shape[0] and not bool(est.std_error.any())


def test_slq_moments_are_exact_for_diagonal_matrices():
    # Rademacher probes have v_i^2 = 1, so v^T D^p v / n = tr(D^p) / n exactly, and m Gauss nodes
    # integrate polynomials of degree <= 2m - 1 exactly: every probe reproduces the moments.
    eigs = torch.linspace(-1.0, 3.0, 120, dtype=F64) ** 3
    sd = rf.spectral_density(torch.diag(eigs), num_steps=6, num_probes=3)
    for p in range(12):
        moments = (sd.weights * sd.nodes**p).sum(dim=1)
        expected = (eigs**p).mean().expand(3)
        torch.testing.assert_close(
            moments, expected, rtol=RTOL_EIGENSOLVER_FLOAT64, atol=ATOL_CANCELLING_FLOAT64
        )


def test_slq_density_matches_kernel_density_of_true_spectrum():
    a = random_symmetric(60, 7)
    eigs = torch.linalg.eigvalsh(a)
    grid = torch.linspace(float(eigs.min()) - 2, float(eigs.max()) + 2, 400, dtype=F64)
    sd = rf.spectral_density(
        a,
        num_steps=60,
        num_probes=400,
        bandwidth=1.0,
        grid=grid,
        generator=torch.Generator().manual_seed(0),
    )
    kde = torch.exp(-0.5 * (grid[:, None] - eigs) ** 2).sum(dim=1) / (60 * math.sqrt(2 * math.pi))
    assert float((sd.density - kde).abs().max()) <= 0.1 * float(kde.max())
    # Every probe's weights sum to 1, so the mass equals the true density's on this grid.
    torch.testing.assert_close(sd.weights.sum(dim=1), torch.ones(400, dtype=F64))
    torch.testing.assert_close(
        torch.trapezoid(sd.density, grid),
        torch.trapezoid(kde, grid),
        rtol=RTOL_DENSITY_MASS,
        atol=0,
    )
