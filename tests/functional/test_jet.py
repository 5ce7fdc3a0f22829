"""jet / derivatives: closed forms to order 8, nested-grad and nested-jvp parity, errors."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import research_ext.functional as rf
from research_ext.functional._arguments import forward_ad_ready
from tests.helpers import (
    ATOL_CANCELLING_FLOAT64,
    ATOL_HIGHER_ORDER_FLOAT64,
    ATOL_POLYNOMIAL_FLOAT64,
    RTOL_FLOAT64,
    RTOL_HIGHER_ORDER_FLOAT64,
)

forward_ad_ready()  # torch's first forward-mode use warns about torch.jit (the references use it)

D = torch.float64
TOL = {"rtol": RTOL_FLOAT64, "atol": ATOL_CANCELLING_FLOAT64}
HIGHER_ORDER = {"rtol": RTOL_HIGHER_ORDER_FLOAT64, "atol": ATOL_HIGHER_ORDER_FLOAT64}
X = torch.tensor([-1.3, -0.4, 0.2, 0.9, 1.7], dtype=D)


def _closed_sin(x, k):
    return [torch.sin, torch.cos, lambda x: -torch.sin(x), lambda x: -torch.cos(x)][k % 4](x)


@pytest.mark.parametrize("order", [1, 4, 8])
def test_derivatives_closed_forms(order):
    out = rf.derivatives(torch.sin, order)(X)
    for k, d in enumerate(out):
        torch.testing.assert_close(d, _closed_sin(X, k), **TOL)
    out = rf.derivatives(lambda x: torch.exp(2 * x), order)(X)
    for k, d in enumerate(out):
        torch.testing.assert_close(d, 2**k * torch.exp(2 * X), **TOL)


def test_polynomial_to_order_8():
    coeffs = [1.5, -2.0, 0.5, 3.0, -1.0, 0.25, 2.0, -0.5]  # degree 7, so the 8th derivative is 0

    def p(x):
        return sum(c * x**i for i, c in enumerate(coeffs))

    out = rf.derivatives(p, 8)(X)
    for k in range(9):
        ref = sum(
            c * math.perm(i, k) * X ** (i - k) for i, c in enumerate(coeffs) if i >= k
        ) * torch.ones_like(X)
        torch.testing.assert_close(out[k], ref, rtol=RTOL_FLOAT64, atol=ATOL_POLYNOMIAL_FLOAT64)


ELEMENTWISE = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "log": lambda x: torch.log(x + 2),
    "log1p": lambda x: torch.log1p(x + 1),
    "expm1": torch.expm1,
    "sqrt": lambda x: torch.sqrt(x + 2),
    "rsqrt": lambda x: torch.rsqrt(x + 2),
    "pow": lambda x: (x + 2) ** 2.5,
    "rpow": lambda x: 2**x,
    "jet-exponent": lambda x: (x + 2) ** x,
    "div": lambda x: (x + 1) / (x.cos() + 2),
    "rdiv": lambda x: 1 / (x + 3),
    "softplus": F.softplus,
    "erf": torch.erf,
    "atan": torch.atan,
    "tan": lambda x: torch.tan(x / 2),
    "relu": torch.relu,
    "abs": torch.abs,
    "square": torch.square,
    "methods": lambda x: (x.sin() * 2 - 1).exp() - x.cos().reciprocal(),
    "composite": lambda x: torch.exp(torch.sin(x)) * torch.tanh(x) / (2 + x.cos()),
}


def _nested_grad(f, order):
    fns = [f]
    for _ in range(order):
        fns.append(torch.func.grad(fns[-1]))
    return fns


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_derivatives_match_nested_grad(name):
    f = ELEMENTWISE[name]
    order = 5
    out = rf.derivatives(f, order)(X)
    fns = _nested_grad(f, order)
    for k in range(order + 1):
        ref = torch.stack([fns[k](x) for x in X])
        torch.testing.assert_close(out[k], ref, **HIGHER_ORDER)


def _nested_jvp(f, x, v, order):
    fn = f
    for _ in range(order):
        fn = (lambda g: lambda x: torch.func.jvp(g, (x,), (v,))[1])(fn)
    return fn(x)


def test_jet_mlp_directional_derivatives_match_nested_jvp():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4), nn.Softplus(), nn.Linear(4, 1)
    ).to(D)
    x = torch.randn(2, 3, dtype=D)
    v = torch.randn(2, 3, dtype=D)

    def f(x):
        return {
            "out": net(x).sum(),
            "lse": torch.logsumexp(x @ x.T, dim=1),
            "sm": F.log_softmax(x, dim=-1),
        }

    zeros = [torch.zeros_like(x)] * 3
    y, ys = rf.jet(f, (x,), ([v, *zeros],))
    for key in ("out", "lse", "sm"):
        torch.testing.assert_close(y[key], f(x)[key], **TOL)
        for k in range(1, 5):
            ref = _nested_jvp(lambda x, key=key: f(x)[key], x, v, k)
            torch.testing.assert_close(ys[key][k - 1], ref, **HIGHER_ORDER)


def test_jet_second_order_series_term():
    # x(t) = x0 + t v + t^2/2 w: y'' = f''(x0) v^2 + f'(x0) w.
    x0, v, w = torch.tensor(0.7, dtype=D), torch.tensor(1.3, dtype=D), torch.tensor(-0.4, dtype=D)
    _, (y1, y2) = rf.jet(torch.exp, (x0,), ([v, w],))
    torch.testing.assert_close(y1, x0.exp() * v, **TOL)
    torch.testing.assert_close(y2, x0.exp() * v**2 + x0.exp() * w, **TOL)


def test_jet_linear_algebra_and_shape_ops():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(3, 3, generator=g, dtype=D)
    x = torch.randn(3, 3, generator=g, dtype=D)
    v = torch.randn(3, 3, generator=g, dtype=D)

    def f(x):
        y = torch.cat([x @ a, a @ x.T], dim=0)[1:, :2].reshape(-1)
        z = torch.stack([y, y.flip(0)]).mean(dim=0)
        parts = torch.split(z, 5)
        return (
            torch.where(parts[0] > 0, parts[0] * parts[1][:5], -parts[0]).sum()
            + torch.norm(x)
            + torch.dot(z, z)
        )

    zeros = [torch.zeros_like(x)] * 3
    _, ys = rf.jet(f, (x,), ([v, *zeros],))
    for k in range(1, 5):
        torch.testing.assert_close(ys[k - 1], _nested_jvp(f, x, v, k), **HIGHER_ORDER)


def test_constant_output_and_mse_loss():
    x = torch.ones(3, dtype=D)
    y, ys = rf.jet(
        lambda x: (torch.zeros(2, dtype=D), F.mse_loss(x, 2 * x.detach())), (x,), ([x, x],)
    )
    torch.testing.assert_close(ys[0][1], torch.zeros(2, dtype=D))
    # mse(x + t, 2) = mean((x + t - 2)^2) with x = 1: derivative -2 * mean(1) * 1 = -2, second 2.
    torch.testing.assert_close(ys[1][0], torch.tensor(-2.0, dtype=D))
    torch.testing.assert_close(ys[1][1], torch.tensor(2.0 + 2 * -1.0, dtype=D))


def test_fallback_warns_and_is_correct():
    message = "jet: no Taylor-mode rule for `special_ndtr`; falling back to nested jvp for it (cost grows as 2**order)"
    with pytest.warns(UserWarning, match=re.escape(message)):
        out = rf.derivatives(torch.special.ndtr, 3)(X)
    fns = _nested_grad(torch.special.ndtr, 3)
    for k in range(4):
        torch.testing.assert_close(out[k], torch.stack([fns[k](x) for x in X]), **HIGHER_ORDER)


def test_errors():
    with pytest.raises(
        NotImplementedError,
        match=re.escape(
            "jet: no Taylor-mode rule for `special_ndtr`; pass fallback=True to use nested jvp for it"
        ),
    ):
        rf.derivatives(torch.special.ndtr, 2, fallback=False)(X)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "jet: in-place `add_` cannot update a Taylor series; use the out-of-place `add` inside `f`"
        ),
    ):
        rf.derivatives(lambda x: x.add_(1), 2)(X)
    with pytest.raises(
        TypeError, match=re.escape("jet: `f` must not call `item` on a traced value inside `f`")
    ):
        rf.derivatives(lambda x: x.item(), 2)(torch.tensor(1.0))
    with pytest.raises(
        TypeError, match=re.escape("jet: `f` must not branch on a traced value (bool() of a jet)")
    ):
        rf.derivatives(lambda x: x if x else -x, 2)(torch.tensor(1.0))
    with pytest.raises(
        TypeError,
        match=re.escape("jet: `f` must not convert a traced value to a Python number (float())"),
    ):
        rf.derivatives(lambda x: float(x), 2)(torch.tensor(1.0))
    with pytest.raises(
        TypeError, match=re.escape("derivatives: `order` must be an int >= 0, got order=1.5")
    ):
        rf.derivatives(torch.sin, 1.5)
    with pytest.raises(
        ValueError, match=re.escape("derivatives: `order` must be an int >= 0, got order=-1")
    ):
        rf.derivatives(torch.sin, -1)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "jet: `primals` must be a non-empty tuple of tensors, got primals of type Tensor"
        ),
    ):
        rf.jet(torch.sin, X, ([X],))
    with pytest.raises(
        TypeError, match=re.escape("jet: `primals[0]` must be a floating tensor, got torch.int64")
    ):
        rf.jet(torch.sin, (torch.arange(3),), ([torch.arange(3)],))
    with pytest.raises(
        ValueError, match=re.escape("jet: every term of `series[0]` must have shape (5,), got (2,)")
    ):
        rf.jet(torch.sin, (X,), ([torch.ones(2)],))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "jet: every entry of `series` must have the same length, got lengths [1, 2]"
        ),
    ):
        rf.jet(torch.mul, (X, X), ([X], [X, X]))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "jet: `f` must return a tensor or a pytree of tensors, got an output leaf of type str"
        ),
    ):
        rf.jet(lambda x: "no", (X,), ([X],))


def test_order_zero_and_piecewise_constant_ops():
    assert len(rf.derivatives(torch.sin, 0)(X)) == 1
    _, ys = rf.jet(lambda x: x * (x > 0) + x.sign() * x.size(0), (X,), ([torch.ones_like(X)],))
    torch.testing.assert_close(ys[0], (X > 0).to(D))
