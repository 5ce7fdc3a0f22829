r"""Wirtinger calculus on top of torch autograd.

For :math:`z = x + iy` and :math:`f = u + iv` the Wirtinger derivatives are

.. math::

    \frac{\partial f}{\partial z} = \tfrac12\Big(\frac{\partial f}{\partial x}
        - i\,\frac{\partial f}{\partial y}\Big), \qquad
    \frac{\partial f}{\partial \bar z} = \tfrac12\Big(\frac{\partial f}{\partial x}
        + i\,\frac{\partial f}{\partial y}\Big),

and :math:`f` is holomorphic exactly where :math:`\partial f / \partial \bar z = 0` (the
Cauchy-Riemann equations :math:`u_x = v_y`, :math:`u_y = -v_x`).

torch's convention. For a real-valued loss :math:`L`, ``z.grad`` holds
:math:`\partial L/\partial x + i\,\partial L/\partial y = 2\,\partial L/\partial \bar z
= 2\,\overline{\partial L/\partial z}`: the steepest-ascent direction, so ``z - lr * z.grad``
descends, but it is *twice* the conjugate Wirtinger derivative (the factor 2 is the usual
surprise). For a complex-valued :math:`f` and ``grad_outputs=1``, ``torch.autograd.grad`` returns
:math:`\overline{\partial f/\partial z} + \partial f/\partial \bar z`. At z = 1 + 2i::

    f(z)            df/dz            df/dz̄            torch grad (grad_outputs=1)
    z**2            2 z              0                 2 z̄            = 2 - 4i
    z.abs()**2      z̄                z                 2 z            = 2 + 4i
    z.conj() * z    z̄                z                 2 z            = 2 + 4i
    exp(z)          exp(z)           0                 exp(z̄)
    log(z)          1 / z            0                 1 / z̄          = 0.2 + 0.4i
    abs(z)          z̄ / (2|z|)       z / (2|z|)        z / |z|
    angle(z)        -i / (2z)        i / (2z̄)          i / z̄          = -0.4 + 0.2i

:func:`wirtinger` and :func:`grad_to_wirtinger` undo the convention so that both derivatives can be
read off directly; :func:`is_holomorphic` checks the Cauchy-Riemann residual.

References:
    Kreutz-Delgado, "The Complex Gradient Operator and the CR-Calculus", arXiv:0906.4835, 2009.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from research_ext.core import check_positive, format_message

__all__ = ["grad_to_wirtinger", "is_holomorphic", "wirtinger"]


def _check_complex_input(fn: str, z: object) -> Tensor:
    if not isinstance(z, Tensor):
        raise TypeError(format_message(fn, "z", "a complex tensor", type(z).__name__))
    if not z.is_complex():
        raise TypeError(f"{fn}: `z` must have a complex dtype, got z.dtype={z.dtype}")
    return z


def _real_grad(out: Tensor, z: Tensor, create_graph: bool) -> Tensor:
    # torch's gradient of the real scalar sum(out) w.r.t. z: d/dx + i d/dy = 2 d/dz̄.
    if not out.requires_grad:  # f does not depend on z
        return torch.zeros_like(z)
    (g,) = torch.autograd.grad(
        out.sum(), z, retain_graph=True, create_graph=create_graph, allow_unused=True
    )
    return torch.zeros_like(z) if g is None else g


def wirtinger(
    f: Callable[[Tensor], Tensor], *, create_graph: bool = False
) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    r"""Return a function computing both Wirtinger derivatives :math:`(\partial f/\partial z, \partial f/\partial \bar z)`.

    With :math:`f = u + iv`, torch gives :math:`G_u = 2\,\partial u/\partial \bar z` and
    :math:`G_v = 2\,\partial v/\partial \bar z` for the real parts, from which
    :math:`\partial f/\partial \bar z = (G_u + i G_v)/2` and
    :math:`\partial f/\partial z = (\bar G_u + i \bar G_v)/2` (``u``, ``v`` are real).

    Args:
        f: maps a complex tensor ``z`` to either a scalar (real or complex) or a tensor of
            ``z``'s shape computed elementwise (then the derivatives are elementwise; for a
            general map ``C^n -> C^m`` take a Jacobian instead). Real-valued ``f`` costs one
            backward pass, complex-valued two.
        create_graph: keep the graph so the derivatives can be differentiated again.

    Returns:
        A callable ``z -> (df_dz, df_dzbar)``, both of ``z``'s shape and complex dtype.

    Raises:
        TypeError: when the returned callable gets a tensor that is not complex.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> z = torch.tensor([1.0 + 2.0j], dtype=torch.complex128)
        >>> d_dz, d_dzbar = rxc.wirtinger(lambda z: z.abs() ** 2)(z)  # |z|^2 = z z̄
        >>> torch.equal(d_dz, z.conj()), torch.equal(d_dzbar, z)
        (True, True)

    References:
        Wirtinger, "Zur formalen Theorie der Funktionen von mehr komplexen Veränderlichen",
        Math. Ann. 97, 1927.
    """

    def derivatives(z: Tensor) -> tuple[Tensor, Tensor]:
        z = _check_complex_input("wirtinger", z)
        zz = z if (z.requires_grad and create_graph) else z.detach().requires_grad_(True)
        with torch.enable_grad():
            out = f(zz)
            g_u = _real_grad(out.real if out.is_complex() else out, zz, create_graph)
            if out.is_complex():
                g_v = _real_grad(out.imag, zz, create_graph)
                return (g_u.conj() + 1j * g_v.conj()) / 2, (g_u + 1j * g_v) / 2
        return g_u.conj() / 2, g_u / 2

    return derivatives


def grad_to_wirtinger(grad: Tensor) -> tuple[Tensor, Tensor]:
    r"""Turn torch's ``.grad`` of a real loss into :math:`(\partial L/\partial z, \partial L/\partial \bar z)`.

    torch stores :math:`g = \partial L/\partial x + i\,\partial L/\partial y
    = 2\,\partial L/\partial \bar z`, so :math:`\partial L/\partial \bar z = g/2` and, since
    :math:`L` is real, :math:`\partial L/\partial z = \bar g/2`.

    Args:
        grad: ``z.grad`` after ``L.backward()`` for a real-valued scalar ``L``; complex dtype,
            any shape.

    Returns:
        ``(dL_dz, dL_dzbar)``, each of ``grad``'s shape and dtype.

    Raises:
        TypeError: if ``grad`` is not a complex tensor.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> z = torch.tensor([3.0 - 1.0j], dtype=torch.complex128, requires_grad=True)
        >>> (z.abs() ** 2).sum().backward()  # torch stores 2 z
        >>> d_dz, d_dzbar = rxc.grad_to_wirtinger(z.grad)
        >>> torch.equal(d_dzbar, z.detach()), torch.equal(d_dz, z.detach().conj())
        (True, True)
    """
    if not isinstance(grad, Tensor) or not grad.is_complex():
        shown = grad.dtype if isinstance(grad, Tensor) else type(grad).__name__
        raise TypeError(format_message("grad_to_wirtinger", "grad", "a complex tensor", shown))
    return grad.conj() / 2, grad / 2


def is_holomorphic(
    f: Callable[[Tensor], Tensor], z: Tensor, *, rtol: float = 1e-6, atol: float = 1e-9
) -> bool:
    r"""Test whether ``f`` satisfies the Cauchy-Riemann equations at the points ``z``.

    The residual is :math:`r = |\partial f/\partial \bar z|
    = \tfrac12\,|(u_x - v_y) + i(u_y + v_x)|`; ``f`` is judged holomorphic when
    :math:`r \le \mathrm{atol} + \mathrm{rtol}\,|\partial f/\partial z|` at every point.

    Args:
        f: elementwise map of a complex tensor (as for :func:`wirtinger`).
        z: complex tensor of sample points, any shape.
        rtol: relative tolerance against :math:`|\partial f/\partial z|`.
        atol: absolute tolerance.

    Returns:
        ``True`` when the Cauchy-Riemann residual is within tolerance at every point.

    Raises:
        TypeError: if ``z`` is not a complex tensor.
        ValueError: if ``rtol`` or ``atol`` is negative or not finite.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> z = torch.randn(8, dtype=torch.complex128)
        >>> rxc.is_holomorphic(torch.exp, z), rxc.is_holomorphic(torch.conj, z)
        (True, False)
    """
    check_positive("is_holomorphic", "rtol", rtol, allow_zero=True)
    check_positive("is_holomorphic", "atol", atol, allow_zero=True)
    z = _check_complex_input("is_holomorphic", z)
    d_dz, d_dzbar = wirtinger(f)(z)
    return bool((d_dzbar.abs() <= atol + rtol * d_dz.abs()).all())
