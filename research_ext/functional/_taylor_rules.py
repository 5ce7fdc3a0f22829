r"""Taylor-mode propagation rules: truncated power series through torch primitives.

A series is a list ``c`` of ``K + 1`` tensors with :math:`x(t) = \sum_k c_k t^k` (normalized
Taylor coefficients, :math:`c_k = x^{(k)}(0) / k!`). Products are Cauchy products; the
transcendental functions use the standard recurrences from :math:`y' = g(x)\,x'`
(Griewank & Walther, *Evaluating Derivatives*, 2nd ed., 2008, table 13.1), so every rule costs
:math:`O(K^2)` tensor operations.

Zero coefficients are absent terms. A rule at a singular point of its primitive (``log`` or
``sqrt`` at 0, ``entr`` at ``x <= 0``) has non-finite derivative factors; a product of such a
factor with an input coefficient that is exactly zero is taken as zero (:func:`_times`), as the
term is absent from the truncated series. That is also the convention of torch's own nested
derivatives (their formulas never form the absent term), so along ``x + t`` every rule gives
torch's value: ``inf``/``nan`` exactly where ``torch.func`` nested derivatives have them.

Each rule takes the already-coerced arguments (series as lists, anything else as given) and
returns a list of coefficients. ``RULES`` maps the primitive's ``__name__`` (shared by
``torch.sin`` and ``Tensor.sin``) to its rule.
"""

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["RULES", "LINEAR", "PIECEWISE_CONSTANT", "Series", "cauchy"]

Series = list[torch.Tensor]


def cauchy(a: Series, b: Series, op: Callable[[Any, Any], Any] = torch.mul) -> Series:
    r"""Coefficients of the product series: :math:`y_k = \sum_j op(a_j, b_{k-j})`."""
    out = []
    for k in range(len(a)):
        acc = op(a[0], b[k])
        for j in range(1, k + 1):
            acc = acc + op(a[j], b[k - j])
        out.append(acc)
    return out


def _times(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``a * z``, zero where the series coefficient ``a`` is exactly zero (an absent term)."""
    return torch.where(a == 0, torch.zeros((), dtype=a.dtype, device=a.device), a * z)


def _from_derivative_factor(y0: torch.Tensor, a: Series, z: Series) -> Series:
    r"""Solve :math:`y' = z\,a'`: :math:`y_k = \frac1k \sum_{j=1}^k j\,a_j z_{k-j}`."""
    y = [y0]
    for k in range(1, len(a)):
        acc = _times(a[1], z[k - 1])
        for j in range(2, k + 1):
            acc = acc + j * _times(a[j], z[k - j])
        y.append(acc / k)
    return y


def _self_referential(
    y0: torch.Tensor, a: Series, factor: Callable[[Series, int], torch.Tensor]
) -> Series:
    r"""Solve :math:`y' = g(y)\,a'` where ``factor(y, m)`` gives coefficient ``m`` of g(y)."""
    y = [y0]
    z: Series = []
    for k in range(1, len(a)):
        z.append(factor(y, k - 1))
        acc = _times(a[1], z[k - 1])
        for j in range(2, k + 1):
            acc = acc + j * _times(a[j], z[k - j])
        y.append(acc / k)
    return y


def _square_coeff(y: Series, m: int) -> torch.Tensor:
    acc = y[0] * y[m]
    for i in range(1, m + 1):
        acc = acc + y[i] * y[m - i]
    return acc


def exp(a: Series) -> Series:
    """exp: y' = y a'."""
    return _self_referential(torch.exp(a[0]), a, lambda y, m: y[m])


def log(a: Series) -> Series:
    """log: a y' = a'."""
    y = [torch.log(a[0])]
    for k in range(1, len(a)):
        acc = a[k]
        for j in range(1, k):
            acc = acc - (j / k) * _times(a[k - j], y[j])
        y.append(acc / a[0])
    return y


def sin_cos(a: Series) -> tuple[Series, Series]:
    """Sin and cos together: s' = c a', c' = -s a'."""
    s, c = [torch.sin(a[0])], [torch.cos(a[0])]
    for k in range(1, len(a)):
        acc_s = a[1] * c[k - 1]
        acc_c = a[1] * s[k - 1]
        for j in range(2, k + 1):
            acc_s = acc_s + j * a[j] * c[k - j]
            acc_c = acc_c + j * a[j] * s[k - j]
        s.append(acc_s / k)
        c.append(-acc_c / k)
    return s, c


def tanh(a: Series) -> Series:
    """tanh: y' = (1 - y^2) a'."""
    return _self_referential(
        torch.tanh(a[0]), a, lambda y, m: (1 - y[0] * y[0]) if m == 0 else -_square_coeff(y, m)
    )


def sigmoid(a: Series) -> Series:
    """sigmoid: y' = (y - y^2) a'."""
    return _self_referential(torch.sigmoid(a[0]), a, lambda y, m: y[m] - _square_coeff(y, m))


def power(a: Series, p: Any) -> Series:
    """a**p for a constant exponent: a y' = p y a' (needs a_0 != 0 unless p is a natural number)."""
    if isinstance(p, int) and not isinstance(p, bool) and p >= 0:
        result: Series = [torch.ones_like(a[0])] + [torch.zeros_like(a[0])] * (len(a) - 1)
        base = a
        while p:
            if p & 1:
                result = cauchy(result, base)
            p >>= 1
            if p:
                base = cauchy(base, base)
        return result
    # (a_0 + d)^p = sum_j binom(p, j) a_0^(p - j) d^j with d = a - a_0 (d^j starts at t^j):
    # the factors a_0^(p - j) are torch's own derivative formula, finite wherever torch's are
    # (a recurrence dividing by a_0 is not, at a_0 = 0).
    n = len(a)
    y = [torch.pow(a[0], p)] + [torch.zeros_like(a[0])] * (n - 1)
    d = [torch.zeros_like(a[0])] + a[1:]
    d_pow = d
    binom = 1.0
    for j in range(1, n):
        binom = binom * (p - j + 1) / j
        factor = binom * torch.pow(a[0], p - j)
        for k in range(j, n):
            y[k] = y[k] + _times(d_pow[k], factor)
        if j + 1 < n:
            d_pow = cauchy(d_pow, d)
    return y


def divide(a: Series, b: Series) -> Series:
    """A / b: y_k = (a_k - sum_{j>=1} b_j y_{k-j}) / b_0."""
    y = [a[0] / b[0]]
    for k in range(1, len(a)):
        acc = a[k]
        for j in range(1, k + 1):
            acc = acc - _times(b[j], y[k - j])
        y.append(acc / b[0])
    return y


def softplus(a: Series, beta: float = 1.0, threshold: float = 20.0) -> Series:
    """softplus: y' = sigmoid(beta a) a'; torch's branches at ``beta a_0`` against ``threshold``.

    Where ``beta a_0 > threshold`` softplus is the identity (y = a). At ``beta a_0 = threshold``
    torch's first derivative is ``sigmoid(beta a_0)`` but its higher derivatives are 0 (its
    double-backward formula switches at ``>=``), so there ``y_k = sigmoid(beta a_0) a_k``.
    """
    z = sigmoid([beta * c for c in a])
    y = _from_derivative_factor(F.softplus(a[0], beta, threshold), a, z)
    scaled = a[0] * beta
    linear, edge = scaled > threshold, scaled == threshold
    return [y[0]] + [
        torch.where(linear, c, torch.where(edge, z[0] * c, yk))
        for c, yk in zip(a[1:], y[1:], strict=True)
    ]


def entr(a: Series) -> Series:
    """special.entr = -a log a: y' = -(1 + log a) a' (torch's formula, also for a_0 <= 0)."""
    log_a = log(a)
    z = [-(1 + log_a[0])] + [-c for c in log_a[1:]]
    return _from_derivative_factor(torch.special.entr(a[0]), a, z)


def erf(a: Series) -> Series:
    """erf: y' = 2/sqrt(pi) exp(-a^2) a'."""
    z = [(2 / math.sqrt(math.pi)) * c for c in exp([-c for c in cauchy(a, a)])]
    return _from_derivative_factor(torch.erf(a[0]), a, z)


def atan(a: Series) -> Series:
    """atan: y' = a' / (1 + a^2)."""
    sq = cauchy(a, a)
    one = [torch.ones_like(a[0])] + [torch.zeros_like(a[0])] * (len(a) - 1)
    z = divide(one, [sq[0] + 1] + sq[1:])
    return _from_derivative_factor(torch.atan(a[0]), a, z)


def _mask(condition: torch.Tensor, a: Series, y0: torch.Tensor) -> Series:
    return [y0] + [torch.where(condition, c, torch.zeros_like(c)) for c in a[1:]]


def relu(a: Series, inplace: bool = False) -> Series:
    """relu: the series of a where a_0 > 0, else 0 (the kink itself has no series)."""
    return _mask(a[0] > 0, a, torch.relu(a[0]))


def absolute(a: Series) -> Series:
    """abs: sign(a_0) times the series."""
    sign = torch.sgn(a[0])
    return [torch.abs(a[0])] + [sign * c for c in a[1:]]


RULES: dict[str, Callable[..., Series]] = {
    "exp": exp,
    "log": log,
    "log1p": lambda a: log([a[0] + 1] + a[1:]),
    "expm1": lambda a: [torch.expm1(a[0])] + exp(a)[1:],
    "sin": lambda a: sin_cos(a)[0],
    "cos": lambda a: sin_cos(a)[1],
    "tan": lambda a: divide(*sin_cos(a)),
    "tanh": tanh,
    "sigmoid": sigmoid,
    "sqrt": lambda a: power(a, 0.5),
    "rsqrt": lambda a: power(a, -0.5),
    "reciprocal": lambda a: power(a, -1.0),
    "square": lambda a: cauchy(a, a),
    "softplus": softplus,
    "entr": entr,
    "special_entr": entr,
    "erf": erf,
    "atan": atan,
    "arctan": atan,
    "relu": relu,
    "abs": absolute,
    "absolute": absolute,
    "__abs__": absolute,
}

# Linear in their one series argument: applied coefficient by coefficient with the same options.
LINEAR = frozenset(
    """sum mean reshape view view_as flatten unflatten squeeze unsqueeze transpose permute t
    swapaxes swapdims movedim moveaxis __getitem__ expand expand_as broadcast_to repeat narrow
    select diagonal diag diag_embed trace cumsum flip fliplr flipud roll contiguous clone
    neg negative __neg__ positive __pos__ real imag conj conj_physical index_select gather take
    tril triu unfold chunk split unbind tensor_split nansum to double float half type
    """.split()
)

# Results that do not vary to first order (comparisons, rounding, metadata): use c_0 only.
PIECEWISE_CONSTANT = frozenset(
    """gt lt ge le eq ne __gt__ __lt__ __ge__ __le__ __eq__ __ne__ greater less argmax argmin
    argsort sign sgn floor ceil round trunc isnan isinf isfinite size dim numel nelement
    ndimension is_complex is_floating_point element_size stride get_device allclose isclose
    equal count_nonzero any all __len__
    """.split()
)
