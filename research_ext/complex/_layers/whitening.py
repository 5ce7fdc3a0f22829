r"""The 2x2 whitening shared by the complex normalization layers, with a fast batch-norm backward.

:func:`batch_whitening` is a custom autograd function: its first-order backward is the closed
form below (about seven passes over the activations, instead of the thirty-odd elementwise ops
autograd records for the same forward). With real-vector notation per channel (:math:`n` entries,
:math:`c_k = x_k - \mu`, :math:`V = \tfrac1n\sum_k c_k c_k^T + \epsilon I`,
:math:`M = \Gamma V^{-1/2}`, :math:`y_k = M c_k + \beta`, upstream gradients :math:`G_k`):

.. math::

    \frac{\partial L}{\partial \beta} = \sum_k G_k,\qquad
    \frac{\partial L}{\partial M} = A = \sum_k G_k c_k^T,\qquad
    \frac{\partial L}{\partial x_k} = M^T (G_k - \bar G) + \tfrac1n S c_k,

where :math:`S = \begin{pmatrix} 2a & b \\ b & 2d \end{pmatrix}` collects
:math:`a = \partial L/\partial V_{rr}`, :math:`d = \partial L/\partial V_{ii}`,
:math:`b = \partial L/\partial V_{ri}`, obtained (with :math:`\partial L/\partial\Gamma`) by
autograd on the per-channel 2x2 algebra only. torch's gradient :math:`g = \partial L/\partial
\Re y + i\,\partial L/\partial \Im y` *is* :math:`G` read as a complex number; the Gram
sums are batched matmuls on ``view_as_real`` and every 2x2 map is applied as
:math:`p z + q \bar z`.
Higher-order gradients (``create_graph=True``) differentiate the plain autograd forward instead,
so they are exact too.
"""

from typing import Any

import torch
from torch import Tensor

__all__ = ["as_pq", "batch_whitening", "inverse_sqrt", "second_moments", "whitening_pq"]


def second_moments(
    c: Tensor, dims: tuple[int, ...], keepdim: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    # From E|c|^2 = Vrr + Vii and E[c^2] = Vrr - Vii + 2i Vri: contiguous complex reductions are
    # an order of magnitude faster on CPU than reductions over the strided views c.real, c.imag.
    power = (c * c.conj()).mean(dims, keepdim=keepdim).real
    pseudo = (c * c).mean(dims, keepdim=keepdim)
    return (power + pseudo.real) / 2, (power - pseudo.real) / 2, pseudo.imag / 2


def inverse_sqrt(vrr: Tensor, vii: Tensor, vri: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sqrt(vrr * vii - vri * vri)
    t = torch.sqrt(vrr + vii + 2 * s)
    inv = 1.0 / (s * t)
    return (vii + s) * inv, (vrr + s) * inv, -vri * inv


def as_pq(m00: Tensor, m11: Tensor, m01: Tensor, m10: Tensor) -> tuple[Tensor, Tensor]:
    p = torch.complex((m00 + m11) / 2, (m10 - m01) / 2)
    q = torch.complex((m00 - m11) / 2, (m10 + m01) / 2)
    return p, q


def whitening_pq(
    vrr: Tensor, vii: Tensor, vri: Tensor, eps: float, gamma: tuple[Tensor, Tensor, Tensor] | None
) -> tuple[Tensor, Tensor]:
    wrr, wii, wri = inverse_sqrt(vrr + eps, vii + eps, vri)
    if gamma is None:
        return as_pq(wrr, wii, wri, wri)
    grr, gii, gri = gamma
    # M = Γ W for symmetric Γ and W.
    return as_pq(
        grr * wrr + gri * wri, gri * wri + gii * wii, grr * wri + gri * wii, gri * wrr + gii * wri
    )


def _batch_forward(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, dims: tuple[int, ...]
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(dims)
    c = x - mean.view(shape)
    vrr, vii, vri = second_moments(c, dims)
    gamma = tuple(weight.unbind(0)) if weight is not None else None
    p, q = whitening_pq(vrr, vii, vri, eps, gamma)  # type: ignore[arg-type]
    out = torch.addcmul(p.view(shape) * c, q.view(shape), c.conj())
    if bias is not None:
        out = out + bias.view(shape)
    return out, mean, vrr, vii, vri


def _matrix_m(vrr: Tensor, vii: Tensor, vri: Tensor, eps: float, weight: Tensor | None) -> Tensor:
    """M = Γ V^{-1/2} as a (C, 2, 2) tensor (rows: real, imaginary output part)."""
    wrr, wii, wri = inverse_sqrt(vrr + eps, vii + eps, vri)
    if weight is None:
        m00, m11, m01, m10 = wrr, wii, wri, wri
    else:
        grr, gii, gri = weight.unbind(0)
        m00, m11 = grr * wrr + gri * wri, gri * wri + gii * wii
        m01, m10 = grr * wri + gri * wii, gri * wrr + gii * wri
    return torch.stack([torch.stack([m00, m01], -1), torch.stack([m10, m11], -1)], -2)


class _BatchWhitening(torch.autograd.Function):
    # Gram matrices are batched matmuls over view_as_real(.) reshaped to (N * C, S, 2); each 2x2
    # map is a complex multiply-add p z + q conj(z). (Measured on CPU against a strided real-view
    # form, (S, 2) @ (2, 2) bmm and complex-by-real products, this was the fastest.)
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
        dims: tuple[int, ...],
    ) -> tuple[Tensor, Tensor, Tensor]:
        batch, channels = x.shape[0], x.shape[1]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        n = x.numel() // channels
        mean = x.mean(dims)
        c = (x - mean.view(shape)).resolve_conj().contiguous()
        cv = torch.view_as_real(c).view(batch * channels, -1, 2)
        gram = torch.bmm(cv.transpose(1, 2), cv).view(batch, channels, 2, 2).sum(0) / n
        vrr, vii, vri = gram[:, 0, 0], gram[:, 1, 1], gram[:, 0, 1]
        m = _matrix_m(vrr, vii, vri, eps, weight)
        p, q = as_pq(m[:, 0, 0], m[:, 1, 1], m[:, 0, 1], m[:, 1, 0])
        out = p.view(shape) * c
        out.addcmul_(q.view(shape), c.conj())
        if bias is not None:
            out.add_(bias.view(shape))
        ctx.save_for_backward(x, weight, bias, c, vrr, vii, vri, m)
        ctx.eps, ctx.dims, ctx.n = eps, dims, n
        covar = torch.stack([vrr, vii, vri])
        ctx.mark_non_differentiable(mean, covar)
        return out, mean, covar

    @staticmethod
    def backward(
        ctx: Any, g: Tensor, _g_mean: Tensor, _g_covar: Tensor
    ) -> tuple[Tensor | None, ...]:
        x, weight, bias, c, vrr, vii, vri, m = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain forward
            return _graph_backward(ctx, g, x, weight, bias)
        n, dims, batch = ctx.n, ctx.dims, x.shape[0]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        g = g.resolve_conj().contiguous()
        gv = torch.view_as_real(g).view(batch * x.shape[1], -1, 2)
        cv = torch.view_as_real(c).view(gv.shape)
        g_sum = g.sum(dims)
        # dL/dM = sum_k G_k c_k^T
        a = torch.bmm(gv.transpose(1, 2), cv).view(batch, -1, 2, 2).sum(0)
        with torch.enable_grad():
            small = [t.detach().requires_grad_(True) for t in (vrr, vii, vri)]
            w = weight.detach().requires_grad_(True) if (weight is not None and need_w) else weight
            m_graph = _matrix_m(small[0], small[1], small[2], ctx.eps, w)
            wrt = small + ([w] if w is not None and need_w else [])
            grads = torch.autograd.grad(m_graph, wrt, a)
        grad_x = grad_w = grad_b = None
        if need_x:
            d_vrr, d_vii, d_vri = grads[:3]
            p1, q1 = as_pq(m[:, 0, 0], m[:, 1, 1], m[:, 1, 0], m[:, 0, 1])  # M^T
            p2, q2 = as_pq(2 * d_vrr / n, 2 * d_vii / n, d_vri / n, d_vri / n)  # S / n
            g_mean = g_sum / n
            const = -(p1 * g_mean + q1 * g_mean.conj())
            # M^T (G - mean G) + (S / n) c, each 2x2 map as p z + q conj(z).
            grad_x = p1.view(shape) * g
            grad_x.addcmul_(q1.view(shape), g.conj())
            grad_x.addcmul_(p2.view(shape), c)
            grad_x.addcmul_(q2.view(shape), c.conj())
            grad_x.add_(const.view(shape))
        if need_w and weight is not None:
            grad_w = grads[3]
        if need_b and bias is not None:
            grad_b = g_sum
        return grad_x, grad_w, grad_b, None, None


def _graph_backward(
    ctx: Any, g: Tensor, x: Tensor, weight: Tensor | None, bias: Tensor | None
) -> tuple[Tensor | None, ...]:
    inputs = [
        t
        for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3], strict=True)
        if need and t is not None
    ]
    out = _batch_forward(x, weight, bias, ctx.eps, ctx.dims)[0]
    grads = iter(torch.autograd.grad(out, inputs, g, create_graph=True))
    return (*(next(grads) if need else None for need in ctx.needs_input_grad[:3]), None, None)


def batch_whitening(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, dims: tuple[int, ...]
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel whitening over ``dims`` of complex ``x``; returns (y, batch mean, (3, C) covariance)."""
    # torch types Function.apply without annotations.
    out: tuple[Tensor, Tensor, Tensor] = _BatchWhitening.apply(  # type: ignore[no-untyped-call]
        x, weight, bias, eps, dims
    )
    return out
