"""Every Taylor-mode rule against torch's own derivatives, over the rule's argument space.

The reference is torch.func nested to order 3: ``jvp`` of ``jvp`` ... along a constant
direction (what ``torch.func.jacfwd`` nested gives) for :func:`derivatives`, and nested ``jvp``
in ``t`` of ``f(x0 + t x1 + t^2 x2 / 2 + t^3 x3 / 6)`` for :func:`jet` with a full input series.
Points include the domain edges and the branch points of each rule (``threshold`` and ``beta`` of
softplus, the kinks of relu/abs, ``x < 0`` for entr, ``x = 0`` for sqrt and log, ...); NaN and
infinities must agree where torch's derivatives have them.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

import research_ext.functional as rf
from research_ext.functional import _taylor_rules as rules
from research_ext.functional._arguments import forward_ad_ready
from tests.helpers import ATOL_AD_FLOAT64, RTOL_AD_FLOAT64

forward_ad_ready()

D = torch.float64
ORDER = 3
GRID = torch.tensor([-2.5, -1.0, -0.3, 0.0, 0.4, 1.0, 2.7], dtype=D)
POSITIVE = torch.tensor([1e-3, 0.2, 1.0, 3.5], dtype=D)


def _nested_jvp(f, x, direction, order=ORDER):
    fs = [f]
    for _ in range(order):
        fs.append(lambda y, p=fs[-1]: torch.func.jvp(p, (y,), (direction,))[1])
    return [g(x) for g in fs]


def _close(ours, ref):
    for k, (a, b) in enumerate(zip(ours, ref, strict=True)):
        torch.testing.assert_close(
            a,
            b,
            rtol=RTOL_AD_FLOAT64,
            atol=ATOL_AD_FLOAT64,
            equal_nan=True,
            msg=lambda m, k=k: f"order {k}: {m}",
        )


def _no_fallback(f, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a rule, not the fallback, must handle it
        return f(*args, **kwargs)


# (function, points): every rule in rules.RULES and the special/composite rules of _jet.
CASES = {
    "exp": (torch.exp, GRID),
    "log": (torch.log, torch.cat([POSITIVE, torch.tensor([0.0, -1.0], dtype=D)])),
    "log1p": (torch.log1p, torch.tensor([-0.99, -0.5, 0.0, 2.0, -1.0, -2.0], dtype=D)),
    "expm1": (torch.expm1, GRID),
    "sin": (torch.sin, GRID),
    "cos": (torch.cos, GRID),
    "tan": (torch.tan, torch.tensor([-1.4, -0.3, 0.0, 0.7, 1.5], dtype=D)),
    "tanh": (torch.tanh, GRID),
    "sigmoid": (torch.sigmoid, GRID),
    "sqrt": (torch.sqrt, torch.cat([POSITIVE, torch.tensor([0.0, -1.0], dtype=D)])),
    "rsqrt": (torch.rsqrt, torch.cat([POSITIVE, torch.tensor([0.0, -1.0], dtype=D)])),
    "reciprocal": (torch.reciprocal, torch.tensor([-2.0, -0.1, 0.3, 4.0, 0.0], dtype=D)),
    "square": (torch.square, GRID),
    "erf": (torch.erf, GRID),
    "atan": (torch.atan, GRID),
    "relu": (torch.relu, GRID),
    "abs": (torch.abs, GRID),
    "entr": (torch.special.entr, torch.cat([POSITIVE, torch.tensor([0.0, -0.5, -3.0], dtype=D)])),
    "pow-int": (lambda x: x**3, GRID),
    "pow-half": (lambda x: x**0.5, torch.cat([POSITIVE, torch.tensor([0.0, -1.0], dtype=D)])),
    "pow-neg": (lambda x: x**-1.5, POSITIVE),
    "pow-zero": (lambda x: x**0, GRID),
    "rpow": (lambda x: 2.0**x, GRID),
    # torch's pow(Tensor, Tensor) gives a wrong third derivative at x = 1 (2, not 3; nested
    # grad of exp(x log x) gives 3): the reference is torch on that equivalent form.
    "jet-exponent": (lambda x: x**x, POSITIVE, lambda x: torch.exp(x * torch.log(x))),
    "div": (lambda x: torch.sin(x) / (x * x + 1), GRID),
    "rdiv": (lambda x: 1.5 / (x + 3.0), GRID),
    "mul": (lambda x: x * torch.cos(x), GRID),
    "add-sub": (lambda x: (x + 2.0) - torch.sub(x, x * x, alpha=3), GRID),
    "where": (lambda x: torch.where(x > 0, x * x, torch.sin(x)), GRID),
    "logsumexp": (lambda x: torch.logsumexp(torch.stack([x, 2 * x]), 0), GRID),
    "softmax": (lambda x: torch.softmax(torch.stack([x, x * x]), 0), GRID),
    "log_softmax": (lambda x: F.log_softmax(torch.stack([x, -x]), 0), GRID),
    "norm": (lambda x: torch.linalg.vector_norm(torch.stack([x, x + 1]), dim=0), GRID),
    "cat-stack": (lambda x: torch.cat([x.sin(), torch.stack([x, x]).sum(0)]), GRID),
}
SOFTPLUS = [(beta, threshold) for beta in (0.5, 1.0, 2.0, -1.0) for threshold in (0.5, 1.0, 20.0)]
SOFTPLUS_GRID = torch.tensor([-3.0, -0.5, 0.0, 0.2, 0.5, 1.0, 2.0, 3.0, 25.0], dtype=D)


def test_every_rule_has_a_case():
    covered = {name.split("-")[0] for name in CASES}
    covered |= {"softplus", "pow", "arctan", "absolute", "special_entr"}
    missing = set(rules.RULES) - covered - {"__abs__"}
    assert not missing, f"rules without a parametrized test: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_derivatives_match_torch(name):
    f, x, ref = (*CASES[name], CASES[name][0])[:3]
    ours = _no_fallback(rf.derivatives(f, ORDER), x)
    _close(ours, _nested_jvp(ref, x, torch.ones_like(x)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_jet_full_series_matches_torch(name):
    f, x, ref_f = (*CASES[name], CASES[name][0])[:3]
    gen = torch.Generator().manual_seed(0)
    v, w, u = (torch.randn(x.shape, generator=gen, dtype=D) for _ in range(3))

    def path(t):
        return ref_f(x + t * v + t**2 / 2 * w + t**3 / 6 * u)

    t0 = torch.zeros((), dtype=D)
    ref = _nested_jvp(path, t0, torch.ones((), dtype=D))
    y, ys = _no_fallback(rf.jet, f, (x,), ([v, w, u],))
    _close([y, *ys], ref)


@pytest.mark.parametrize(("beta", "threshold"), SOFTPLUS)
def test_softplus_matches_torch(beta, threshold):
    def f(x):
        return F.softplus(x, beta=beta, threshold=threshold)

    x = SOFTPLUS_GRID
    ours = _no_fallback(rf.derivatives(f, ORDER), x)
    _close(ours, _nested_jvp(f, x, torch.ones_like(x)))
    # beyond threshold / beta softplus is the identity: derivative exactly 1
    if beta > 0:
        linear = x * beta > threshold
        assert torch.all(ours[1][linear] == 1)
        assert torch.all(ours[2][linear] == 0)


def test_softplus_threshold_issue_values():
    out = rf.derivatives(lambda x: F.softplus(x, beta=2, threshold=1), 1)(
        torch.tensor([1.0, 2.0, 3.0], dtype=D)
    )
    torch.testing.assert_close(out[1], torch.ones(3, dtype=D))


def test_linearize_entr_negative_matches_jvp():
    x = torch.tensor([-0.5, 0.0, 0.7, 2.0], dtype=D)
    t = torch.tensor([1.0, 0.0, -2.0, 0.5], dtype=D)
    _, jvp_fn = rf.linearize(torch.special.entr, x)
    ref = torch.func.jvp(torch.special.entr, (x,), (t,))[1]
    torch.testing.assert_close(jvp_fn(t), ref, equal_nan=True)


# Primitives without a rule, reached three ways: torch.X(x), x.X() and the unbound method
# torch.Tensor.X(x) (a C method descriptor that refuses anything but a tensor).
NO_RULE = ["lgamma", "digamma", "sinh", "asinh", "cdouble", "i0", "frac", "deg2rad", "erfc"]
POINTS = torch.tensor([0.3, 1.2, 2.5], dtype=D)


def _spellings(name):
    method = getattr(torch.Tensor, name)
    out = {"method": lambda x: getattr(x, name)(), "unbound": lambda x: method(x)}
    if callable(getattr(torch, name, None)):  # torch.cdouble is a dtype, not a function
        out["function"] = lambda x: getattr(torch, name)(x)
    return out


@pytest.mark.parametrize(
    ("name", "spelling"), [(n, s) for n in NO_RULE for s in _spellings(n)], ids=str
)
def test_fallback_reached_for_functions_and_methods(name, spelling):
    f = _spellings(name)[spelling]
    with pytest.warns(UserWarning, match="falling back to nested jvp"):
        ours = rf.derivatives(f, ORDER)(POINTS)
    ref = _nested_jvp(f, POINTS, torch.ones_like(POINTS))
    _close(ours, ref)
    with pytest.raises(NotImplementedError, match="no Taylor-mode rule"):
        rf.derivatives(f, ORDER, fallback=False)(POINTS)


@pytest.mark.parametrize("spelling", ["function", "method", "unbound"])
def test_rules_reached_for_every_spelling(spelling):
    f = _spellings("sin")[spelling]
    ours = _no_fallback(rf.derivatives(f, ORDER), POINTS)
    _close(ours, _nested_jvp(torch.sin, POINTS, torch.ones_like(POINTS)))
    g = {
        "function": lambda x: torch.mul(x, x),
        "method": lambda x: x.mul(x),
        "unbound": lambda x: torch.Tensor.mul(x, x),
    }[spelling]
    _close(_no_fallback(rf.derivatives(g, ORDER), POINTS), _nested_jvp(g, POINTS, POINTS**0))


def test_fallback_through_an_op_with_several_outputs():
    # frexp returns (mantissa, integer exponent): the series runs through the floating output
    def f(x):
        return torch.frexp(x * 3.0)[0] + x

    with pytest.warns(UserWarning, match="falling back"):
        ours = rf.derivatives(f, ORDER)(POINTS)
    _close(ours, _nested_jvp(f, POINTS, torch.ones_like(POINTS)))
    with pytest.warns(UserWarning, match="falling back"):
        _, ys = rf.jet(lambda x: torch.frexp(x)[1].to(x.dtype), (POINTS,), ([POINTS],))
    torch.testing.assert_close(ys[0], torch.zeros_like(POINTS))
