"""research_ext.functional on every available device against torch.func on the CPU in float64.

Transforms, Taylor mode, curvature operators, estimators, eigensolvers and sparse derivatives
run on the ``device`` fixture's device; results must stay there and match a reference computed
on the CPU in float64 by torch.func (or a dense matrix). Random estimators take a seeded CPU
generator, so the device run sees the same probes as the CPU reference. The curvature operators
run both of their block-product branches on every device (the per-column loop the CPU takes by
default, and the vmapped pass accelerators take), so a CPU-only machine checks the accelerator
branch as well.
"""

import copy
from typing import Any

import pytest
import torch
from torch import nn

import research_ext.functional as rf
from research_ext.functional._curvature import VMAP_ON_CPU_ENV
from tests.devices.common import assert_matches, assert_on, randn
from tests.helpers import (
    ATOL_CANCELLING_FLOAT64,
    ATOL_HIGHER_ORDER_FLOAT64,
    RTOL_EIGENSOLVER_FLOAT64,
    RTOL_HIGHER_ORDER_FLOAT64,
)

# torch's forward-mode AD (torch.func.jvp, jacfwd, hessian: the references) loads its
# jit-scripted decompositions on first use, which warns.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

CPU = torch.device("cpu")
N, M = 5, 4


W = randn((M, N), seed=11)


def vector_fn(x: torch.Tensor) -> torch.Tensor:
    """R^5 -> R^4: a small smooth map whose constants live on the input's device."""
    return torch.tanh(W.to(x.device) @ x) * x.square().sum() + x[:M].sin()


def scalar_fn(x: torch.Tensor) -> torch.Tensor:
    """R^5 -> R: a smooth scalar with a dense, well-scaled Hessian."""
    return vector_fn(x).square().sum() + x.cos().prod()


X = randn((N,), seed=1)
V = randn((N,), seed=2)
U = randn((M,), seed=3)


@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
def test_jacobian(device, mode):
    got = rf.jacobian(vector_fn, mode=mode)(X.to(device))
    assert_on(got, device)
    assert_matches(got, torch.func.jacrev(vector_fn)(X))


def test_hessian(device):
    got = rf.hessian(scalar_fn)(X.to(device))
    assert_on(got, device)
    assert_matches(got, torch.func.hessian(scalar_fn)(X))


def test_vjp_jvp_linearize(device):
    out, vjp_fn = rf.vjp(vector_fn, X.to(device))
    ref_out, ref_vjp_fn = torch.func.vjp(vector_fn, X)
    assert_on([out, vjp_fn(U.to(device))], device)
    assert_matches([out, vjp_fn(U.to(device))], [ref_out, ref_vjp_fn(U)])

    ref = torch.func.jvp(vector_fn, (X,), (V,))
    got = rf.jvp(vector_fn, (X.to(device),), (V.to(device),))
    assert_on(got, device)
    assert_matches(got, ref)

    out, jvp_fn = rf.linearize(vector_fn, X.to(device))
    assert_on([out, jvp_fn(V.to(device))], device)
    assert_matches([out, jvp_fn(V.to(device))], ref)


def test_hvp_vhp_and_hessian_vector_product(device):
    grad = torch.func.grad(scalar_fn)(X)
    hv = torch.func.hessian(scalar_fn)(X) @ V
    for fn in (rf.hvp, rf.vhp):
        got = fn(scalar_fn, (X.to(device),), (V.to(device),))
        assert_on(got, device)
        assert_matches(got, ((grad,), (hv,)))
    hvp_fn = rf.hessian_vector_product(scalar_fn, (X.to(device),))
    tangents = torch.stack([V, randn((N,), seed=4)])
    got = [hvp_fn((V.to(device),)), hvp_fn((tangents.to(device),))]
    assert_on(got, device)
    assert_matches(got, [(hv,), (tangents @ torch.func.hessian(scalar_fn)(X),)])


def _nested_directional(f, x: torch.Tensor, v: torch.Tensor, order: int) -> list[torch.Tensor]:
    """[f(x), D f[v], D^2 f[v, v], ...] by nested forward mode (the reference for jet)."""
    out = [f(x)]
    g = f
    for _ in range(order):
        g = (lambda h: lambda y: torch.func.jvp(h, (y,), (v,))[1])(g)
        out.append(g(x))
    return out


def test_jet_and_derivatives(device):
    zero = torch.zeros(N, dtype=torch.float64)
    primal, series = rf.jet(vector_fn, (X.to(device),), ([V.to(device), zero.to(device)],))
    ref = _nested_directional(vector_fn, X, V, 2)
    assert_on([primal, series], device)
    assert_matches(primal, ref[0])
    for got, want in zip(series, ref[1:], strict=True):
        torch.testing.assert_close(
            got.cpu(), want, rtol=RTOL_HIGHER_ORDER_FLOAT64, atol=ATOL_HIGHER_ORDER_FLOAT64
        )
    got = rf.derivatives(torch.sin, 4)(X.to(device))
    assert_on(got, device)
    assert_matches(got, [X.sin(), X.cos(), -X.sin(), -X.cos(), X.sin()])


# ---------------------------------------------------------------------------------------------
# Curvature operators of a small model.


def _model_and_data(loss: str) -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = randn((6, 3), seed=5)
    if loss == "mse":
        return model, nn.MSELoss(), (x, randn((6, 3), seed=6))
    g = torch.Generator().manual_seed(7)
    return model, nn.CrossEntropyLoss(), (x, torch.randint(0, 3, (6,), generator=g))


def _flat_loss(model: nn.Module, loss_fn: nn.Module, data):
    """(loss of flat parameters, flat parameters) for torch.func references."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for _, p in model.named_parameters()]
    sizes = [p.numel() for p in params]

    def unflatten(flat):
        return {
            n: c.reshape(p.shape) for n, c, p in zip(names, flat.split(sizes), params, strict=True)
        }

    def outputs(flat):
        return torch.func.functional_call(model, unflatten(flat), (data[0],))

    return (
        (lambda flat: loss_fn(outputs(flat), data[1])),
        outputs,
        torch.cat([p.reshape(-1) for p in params]),
    )


def _references(model, loss_fn, data) -> dict[str, torch.Tensor]:
    loss, outputs, flat = _flat_loss(model, loss_fn, data)
    jac = torch.func.jacrev(outputs)(flat).reshape(-1, flat.numel())  # (N * C, P)
    out = outputs(flat)
    out_hess = torch.func.hessian(lambda o: loss_fn(o, data[1]))(out).reshape(jac.shape[0], -1)
    grads = torch.stack(
        [
            torch.func.grad(lambda f, i=i: loss_fn(outputs(f)[i : i + 1], data[1][i : i + 1]))(flat)
            for i in range(data[0].shape[0])
        ]
    )
    return {
        "hessian": torch.func.hessian(loss)(flat),
        "ggn": jac.T @ out_hess @ jac,
        # mean reduction: F = (1/N) sum_i g_i g_i^T with g_i the per-sample loss gradients
        "empirical": grads.T @ grads / data[0].shape[0],
    }


def _operators(model, loss_fn, data) -> dict[str, Any]:
    return {
        "hessian": rf.hessian_operator(model, loss_fn, data),
        "ggn": rf.ggn_operator(model, loss_fn, data),
        "fisher_exact": rf.fisher_operator(model, loss_fn, data, kind="exact"),
        "fisher_empirical": rf.fisher_operator(model, loss_fn, data, kind="empirical"),
    }


def _check_operator(op: Any, reference: torch.Tensor, device: torch.device) -> None:
    vec, mat = randn((reference.shape[0],), seed=8), randn((reference.shape[0], 3), seed=9)
    got = [op.to_dense(), op.matvec(vec.to(device)), op.matmat(mat.to(device))]
    assert_on(got, device)
    assert_matches(got, [reference, reference @ vec, reference @ mat])


def _to(model, data, device):
    """A copy of the model and the data on ``device`` (the CPU originals stay the reference)."""
    return copy.deepcopy(model).to(device), tuple(t.to(device) for t in data)


@pytest.mark.parametrize("branch", ["loop", "vmap"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_curvature_operators(device, loss, branch, monkeypatch):
    monkeypatch.setenv(VMAP_ON_CPU_ENV, "1" if branch == "vmap" else "0")
    model, loss_fn, data = _model_and_data(loss)
    ref = _references(model, loss_fn, data)
    ref["fisher_exact"], ref["fisher_empirical"] = ref["ggn"], ref["empirical"]
    dev_model, dev_data = _to(model, data, device)
    for name, op in _operators(dev_model, loss_fn, dev_data).items():
        _check_operator(op, ref[name], device)


@pytest.mark.parametrize("branch", ["loop", "vmap"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_monte_carlo_fisher_takes_a_cpu_generator(device, loss, branch, monkeypatch):
    # A seeded CPU generator draws the same targets whatever device the model is on (as the
    # estimators' probes and DP-SGD's noise do), so the device operator equals the CPU one.
    monkeypatch.setenv(VMAP_ON_CPU_ENV, "1" if branch == "vmap" else "0")
    model, loss_fn, data = _model_and_data(loss)
    kw = {"kind": "mc", "mc_samples": 3}
    cpu = rf.fisher_operator(model, loss_fn, data, generator=torch.Generator().manual_seed(3), **kw)
    dev_model, dev_data = _to(model, data, device)
    op = rf.fisher_operator(
        dev_model, loss_fn, dev_data, generator=torch.Generator().manual_seed(3), **kw
    )
    _check_operator(op, cpu.to_dense(), device)


def test_eigvalsh_trace_diagonal_and_density(device):
    model, loss_fn, data = _model_and_data("mse")
    dense = _references(model, loss_fn, data)["ggn"]
    dev_model, dev_data = _to(model, data, device)
    op = rf.ggn_operator(dev_model, loss_fn, dev_data)
    n = dense.shape[0]
    exact = torch.linalg.eigvalsh(dense)

    res = rf.eigvalsh(op, k=3, generator=torch.Generator().manual_seed(0), max_iter=n)
    assert_on(res.eigenvalues, device)
    torch.testing.assert_close(
        res.eigenvalues.cpu(),
        exact[-3:],
        rtol=RTOL_EIGENSOLVER_FLOAT64,
        atol=ATOL_CANCELLING_FLOAT64,
    )

    # Hutch++ with 3n probes spans the whole space: the trace is exact.
    est = rf.trace(op, num_samples=3 * n, generator=torch.Generator().manual_seed(0))
    assert_on(est.estimate, device)
    assert_matches(est.estimate, dense.trace())
    assert_matches(rf.diagonal(op, method="exact").estimate, dense.diagonal())

    # Seeded estimators draw their probes on the generator's device: the same numbers as on
    # the CPU, whatever device the operator lives on.
    cpu_op = rf.ggn_operator(model, loss_fn, data)
    for fn, kw in (
        (rf.trace, {"num_samples": 6, "method": "hutchinson"}),
        (rf.trace, {"num_samples": 9, "distribution": "gaussian"}),
        (rf.diagonal, {"num_samples": 7}),
    ):
        got = fn(op, generator=torch.Generator().manual_seed(1), **kw)
        want = fn(cpu_op, generator=torch.Generator().manual_seed(1), **kw)
        assert_on([got.estimate, got.std_error], device)
        assert_matches([got.estimate, got.std_error], [want.estimate, want.std_error])
    density = rf.spectral_density(
        op, num_steps=8, num_points=50, generator=torch.Generator().manual_seed(2)
    )
    want = rf.spectral_density(
        cpu_op, num_steps=8, num_points=50, generator=torch.Generator().manual_seed(2)
    )
    assert_on([density.grid, density.density], device)
    torch.testing.assert_close(
        density.density.cpu(),
        want.density,
        rtol=RTOL_EIGENSOLVER_FLOAT64,
        atol=ATOL_CANCELLING_FLOAT64,
    )


def banded(u: torch.Tensor) -> torch.Tensor:
    """A banded map R^6 -> R^5 (each output reads two neighbouring inputs)."""
    return u[1:] ** 2 - u[:-1].sin() * u[1:]


def chain(u: torch.Tensor) -> torch.Tensor:
    """A scalar with a tridiagonal Hessian."""
    return (u[1:] * u[:-1]).sum() + (u**3).sum() + u.exp().sum()


def test_sparse_jacobian_and_hessian(device):
    x = randn((6,), seed=10)
    for mode in ("auto", "column", "row"):
        sparsity = rf.jacobian_sparsity(banded, x.to(device))
        assert_on(sparsity, device)
        jac = rf.sparse_jacobian(banded, sparsity, mode=mode)(x.to(device))
        assert_on(jac, device)
        assert_matches(jac.to_dense(), torch.func.jacrev(banded)(x))
    hess = rf.sparse_hessian(chain)(x.to(device))
    assert_on(hess, device)
    assert_matches(hess.to_dense(), torch.func.hessian(chain)(x))
    sparsity = rf.hessian_sparsity(chain, x.to(device))
    hess = rf.sparse_hessian(chain, sparsity, layout="csr")(x.to(device))
    assert_matches(hess.to_dense(), torch.func.hessian(chain)(x))


@pytest.mark.parametrize("method", ["nan", "probe"])
def test_sparsity_detection_takes_a_cpu_generator(device, method):
    # The probing points come from the caller's generator; a CPU one serves any device.
    x = randn((6,), seed=10)
    pattern = rf.jacobian_sparsity(
        banded, x.to(device), method=method, generator=torch.Generator().manual_seed(0)
    )
    assert_on(pattern, device)
    dense = pattern.to_dense() if pattern.is_sparse else pattern
    assert torch.equal(dense.cpu().bool(), torch.func.jacrev(banded)(x) != 0)
