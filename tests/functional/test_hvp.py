"""hvp / vhp / hessian_vector_product against torch.autograd.functional and dense Hessians."""

import re
import warnings

import pytest
import torch
from torch.autograd.functional import hessian as ag_hessian, hvp as ag_hvp, vhp as ag_vhp

import research_ext.functional as rf
from tests.helpers import ATOL_FLOAT64, RTOL_FLOAT64

TOL = {"rtol": RTOL_FLOAT64, "atol": ATOL_FLOAT64}
D = torch.float64


def _problem():
    g = torch.Generator().manual_seed(11)
    a = torch.randn(4, 4, generator=g, dtype=D)
    x = torch.randn(4, generator=g, dtype=D)
    v = torch.randn(4, generator=g, dtype=D)

    def f(x):
        return torch.tanh(a @ x).pow(2).sum() + (x.sin() * x.sum()).sum()

    return f, x, v


def test_hvp_and_vhp_match_autograd_functional():
    f, x, v = _problem()
    grad, hv = rf.hvp(f, (x,), (v,))
    torch.testing.assert_close(hv[0], ag_hvp(f, x, v)[1], **TOL)
    torch.testing.assert_close(grad[0], torch.func.grad(f)(x), **TOL)
    _, vh = rf.vhp(f, (x,), (v,))
    torch.testing.assert_close(vh[0], ag_vhp(f, x, v)[1], **TOL)


def test_hvp_pytree_and_several_primals():
    g = torch.Generator().manual_seed(3)
    p = {"w": torch.randn(3, 2, generator=g, dtype=D), "b": torch.randn(3, generator=g, dtype=D)}
    x = torch.randn(2, generator=g, dtype=D)
    v = {"w": torch.randn(3, 2, generator=g, dtype=D), "b": torch.randn(3, generator=g, dtype=D)}
    u = torch.randn(2, generator=g, dtype=D)

    def f(p, x):
        return torch.tanh(p["w"] @ x + p["b"]).pow(3).sum()

    _, hv = rf.hvp(f, (p, x), (v, u))
    # Dense reference: the Hessian of the flattened function.
    flat = torch.cat([p["w"].reshape(-1), p["b"], x])

    def f_flat(z):
        return f({"w": z[:6].reshape(3, 2), "b": z[6:9]}, z[9:])

    ref = ag_hessian(f_flat, flat) @ torch.cat([v["w"].reshape(-1), v["b"], u])
    torch.testing.assert_close(hv[0]["w"].reshape(-1), ref[:6], **TOL)
    torch.testing.assert_close(hv[0]["b"], ref[6:9], **TOL)
    torch.testing.assert_close(hv[1], ref[9:], **TOL)


def test_hessian_vector_product_reuses_the_graph_and_batches():
    f, x, v = _problem()
    calls = []

    def counted(x):
        calls.append(1)
        return f(x)

    hvp_fn = rf.hessian_vector_product(counted, (x,))
    dense = ag_hessian(f, x)
    for scale in (1.0, -2.0, 0.5):
        torch.testing.assert_close(hvp_fn((scale * v,))[0], dense @ (scale * v), **TOL)
    basis = torch.eye(4, dtype=D)
    torch.testing.assert_close(hvp_fn((basis,))[0], dense, **TOL)
    assert len(calls) == 1
    torch.testing.assert_close(hvp_fn.grad[0], torch.func.grad(f)(x), **TOL)
    torch.testing.assert_close(hvp_fn.value, f(x), **TOL)


def test_unused_primal_gives_zero_products():
    x, y = torch.ones(2, dtype=D), torch.ones(3, dtype=D)
    grad, hv = rf.hvp(
        lambda x, y: (x**3).sum(), (x, y), (torch.ones(2, dtype=D), torch.ones(3, dtype=D))
    )
    torch.testing.assert_close(hv[1], torch.zeros(3, dtype=D))
    torch.testing.assert_close(grad[1], torch.zeros(3, dtype=D))
    hvp_fn = rf.hessian_vector_product(lambda x, y: (x * 2).sum(), (x, y))  # linear: H = 0
    out = hvp_fn((torch.ones(2, dtype=D), torch.ones(3, dtype=D)))
    torch.testing.assert_close(out[0], torch.zeros(2, dtype=D))


def test_hvp_inside_vmap_goes_through_torch_func():
    f, x, v = _problem()
    vs = torch.stack([v, 2 * v])
    out = torch.func.vmap(lambda t: rf.hvp(f, (x,), (t,))[1][0])(vs)
    dense = ag_hessian(f, x)
    torch.testing.assert_close(out, vs @ dense.T, **TOL)


def test_hvp_is_differentiable_when_inputs_require_grad():
    f, x, v = _problem()
    x = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: rf.hvp(f, (x,), (v,))[1][0], (x,))


def test_hvp_errors():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "hvp: `f` must return a real scalar tensor (one element), got an output of shape (2,)"
        ),
    ):
        rf.hvp(torch.sin, (torch.ones(2),), (torch.ones(2),))
    with pytest.raises(
        TypeError,
        match=re.escape("vhp: `f` must return a scalar tensor, got an output of type float"),
    ):
        rf.vhp(lambda x: 1.0, (torch.ones(2),), (torch.ones(2),))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "hvp: `primals` must be a tuple of the positional arguments of f, got primals of type Tensor"
        ),
    ):
        rf.hvp(torch.sum, torch.ones(2), (torch.ones(2),))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "hessian_vector_product: every tangent must have its primal's shape, got (3,) for a primal of shape (2,)"
        ),
    ):
        rf.hessian_vector_product(torch.sum, (torch.ones(2),))((torch.ones(3),))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "hvp: `args[0]` must have a floating or complex dtype to be differentiated, got args[0].dtype=torch.int64"
        ),
    ):
        rf.hvp(torch.sum, (torch.ones(2, dtype=torch.long),), (torch.ones(2),))


_GN_W = torch.arange(36.0, dtype=torch.float64).reshape(2, 6, 3)


@pytest.mark.parametrize(
    ("f", "x"),
    [
        (
            lambda x: (torch.nn.functional.group_norm(x, 2) ** 2 * _GN_W).sum(),
            torch.linspace(-1, 2, 36, dtype=torch.float64).reshape(2, 6, 3),
        ),
        (
            lambda x: (
                torch.native_group_norm(x, None, None, 2, 6, 3, 2, 1e-5)[0] ** 2 * _GN_W
            ).sum(),
            torch.linspace(-1, 2, 36, dtype=torch.float64).reshape(2, 6, 3),
        ),
        (lambda x: (x.unfold(0, 1, 1) ** 3).sum(), torch.tensor(0.7, dtype=torch.float64)),
    ],
    ids=["group_norm", "native_group_norm", "unfold-0d"],
)
def test_batched_hessian_vector_product_where_is_grads_batched_fails(f, x):
    # torch's is_grads_batched cannot batch these double backwards; each vector is then done alone
    gen = torch.Generator().manual_seed(0)
    vs = torch.randn((4, *x.shape), generator=gen, dtype=torch.float64)
    product = rf.hessian_vector_product(f, (x,))
    expected = torch.stack([product((v,))[0] for v in vs])
    torch.testing.assert_close(product((vs,))[0], expected)
    with warnings.catch_warnings():  # torch: "performance drop ... batching rule" (its fallback)
        warnings.simplefilter("ignore", UserWarning)
        ref = torch.func.vmap(torch.func.vjp(torch.func.grad(f), x)[1])(vs)[0]
    torch.testing.assert_close(product((vs,))[0], ref)
