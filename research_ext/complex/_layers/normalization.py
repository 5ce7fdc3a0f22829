r"""Whitening normalization for complex activations (batch, layer and group norm).

A complex entry :math:`z = x + iy` is treated as the real 2-vector :math:`(x, y)`. Each
normalization centres it and multiplies by the inverse square root of its 2x2 covariance

.. math::

    V = \begin{pmatrix} V_{rr} & V_{ri} \\ V_{ri} & V_{ii} \end{pmatrix},\qquad
    V^{-1/2} = \frac{1}{s\,t}\begin{pmatrix} V_{ii} + s & -V_{ri} \\ -V_{ri} & V_{rr} + s
    \end{pmatrix},\quad s = \sqrt{\det V},\ t = \sqrt{V_{rr} + V_{ii} + 2s},

so the real and imaginary parts of the output are uncorrelated with unit variance, then applies
the affine map :math:`y = \Gamma \tilde z + \beta` with a symmetric 2x2 :math:`\Gamma`
initialised to :math:`I/\sqrt2` (Trabelsi et al.), giving :math:`E|y|^2 = 1` at initialisation.

Any real-linear map :math:`M` of :math:`(x, y)` equals :math:`p z + q \bar z` with
:math:`p = \tfrac12(M_{00} + M_{11}) + \tfrac i2(M_{10} - M_{01})` and
:math:`q = \tfrac12(M_{00} - M_{11}) + \tfrac i2(M_{10} + M_{01})`; the layers apply it in that
form, which keeps every large-tensor step a native complex elementwise op.

References:
    Trabelsi et al., "Deep Complex Networks", ICLR 2018, section 3.5.
"""

import math

import torch
from torch import Tensor, nn

from research_ext.complex._layers.checks import complex_dtype_for, real_dtype_for, require_complex
from research_ext.complex._layers.whitening import (
    as_pq,
    batch_whitening,
    second_moments,
    whitening_pq,
)
from research_ext.core import check_int, check_positive

__all__ = [
    "ComplexBatchNorm1d",
    "ComplexBatchNorm2d",
    "ComplexBatchNorm3d",
    "ComplexGroupNorm",
    "ComplexLayerNorm",
]


class _AbstractComplexBatchNorm(nn.Module):
    _allowed_ndim: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = check_int(name, "num_features", num_features, minimum=1)
        self.eps = check_positive(name, "eps", eps)
        if momentum is not None:
            check_positive(name, "momentum", momentum)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        cdtype = complex_dtype_for(name, dtype)
        real = real_dtype_for(cdtype)
        kw = {"dtype": real, "device": device}
        if self.affine:
            self.weight = nn.Parameter(torch.empty(3, num_features, **kw))  # type: ignore[arg-type]
            self.bias = nn.Parameter(torch.empty(num_features, dtype=cdtype, device=device))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer(
                "running_mean", torch.zeros(num_features, dtype=cdtype, device=device)
            )
            self.register_buffer("running_covar", torch.empty(3, num_features, **kw))  # type: ignore[arg-type]
            self.register_buffer(
                "num_batches_tracked", torch.zeros((), dtype=torch.long, device=device)
            )
        else:
            self.running_mean: Tensor | None = None
            self.running_covar: Tensor | None = None
            self.num_batches_tracked: Tensor | None = None
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0 and covariance diag(1/2, 1/2): that of a standard complex normal."""
        if self.track_running_stats:
            assert self.running_mean is not None and self.running_covar is not None
            assert self.num_batches_tracked is not None
            self.running_mean.zero_()
            self.running_covar.copy_(
                torch.tensor([[0.5], [0.5], [0.0]]).expand(3, self.num_features)
            )
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Γ = I/√2 (rows: γ_rr, γ_ii, γ_ri) and β = 0, so E|y|² = 1 at initialisation."""
        self.reset_running_stats()
        if self.affine:
            with torch.no_grad():
                self.weight[:2].fill_(1 / math.sqrt(2))
                self.weight[2].zero_()
                self.bias.zero_()

    def forward(self, input: Tensor) -> Tensor:
        """Whiten over the batch (and spatial) dimensions, per channel."""
        name = type(self).__name__
        x = require_complex(name, input)
        allowed = self._allowed_ndim
        if x.ndim not in allowed or x.shape[1] != self.num_features:
            expected = " or ".join(
                "(" + ", ".join(["N", str(self.num_features)] + ["*"] * (n - 2)) + ")"
                for n in allowed
            )
            raise ValueError(
                f"{name}: `input` must have shape {expected}, got input.shape={tuple(x.shape)}"
            )
        dims = (0, *range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            n = x.numel() // self.num_features
            if n < 2:
                raise ValueError(
                    f"{name}: `input` must hold more than one value per channel in training, "
                    f"got input.shape={tuple(x.shape)}"
                )
            out, mean, covar = batch_whitening(x, self.weight, self.bias, self.eps, dims)
            if self.training and self.track_running_stats:
                self._update_running(mean, covar, n)
            return out
        assert self.running_mean is not None and self.running_covar is not None
        c = x - self.running_mean.view(shape)
        vrr, vii, vri = self.running_covar.unbind(0)
        gamma = tuple(self.weight.unbind(0)) if self.affine else None
        p, q = whitening_pq(vrr, vii, vri, self.eps, gamma)  # type: ignore[arg-type]
        out = torch.addcmul(p.view(shape) * c, q.view(shape), c.conj())
        return out + self.bias.view(shape) if self.affine else out

    @torch.no_grad()
    def _update_running(self, mean: Tensor, covar: Tensor, n: int) -> None:
        assert self.running_mean is not None and self.running_covar is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        unbiased = n / (n - 1)
        self.running_mean.lerp_(mean.detach(), factor)
        self.running_covar.lerp_(covar.detach() * unbiased, factor)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


_BN_DOC = r"""Whitening batch normalization for complex {shape} input (Trabelsi et al.).

Per channel, :math:`y = \Gamma\,V^{{-1/2}}(z - \mu) + \beta` with the batch mean :math:`\mu` and
the 2x2 covariance :math:`V` of (real, imaginary) parts; :math:`\Gamma` is symmetric
(parameters ``weight[0..2]`` = :math:`\gamma_{{rr}}, \gamma_{{ii}}, \gamma_{{ri}}`), initialised to
:math:`I/\sqrt2` so :math:`E|y|^2 = 1` at initialisation, and :math:`\beta` (``bias``) is
complex. In eval mode the running mean and (unbiased) covariance are used, as in
:class:`torch.nn.BatchNorm{n}d`.

Args:
    num_features: number of channels ``C``.
    eps: added to the diagonal of :math:`V` before inverting.
    momentum: running-statistics update factor; ``None`` for a cumulative average.
    affine: learn :math:`\Gamma` and :math:`\beta`.
    track_running_stats: keep running statistics for eval mode.
    dtype: complex64 or complex128 (a real dtype picks its complex partner; default from
        ``torch.get_default_dtype()``).
    device: where parameters and buffers live.

Shape: input {shape} complex; output the same shape and dtype.

Raises:
    TypeError: for real input.
    ValueError: for a wrong rank or channel count, or one value per channel in training.

Example:
    >>> import torch
    >>> import research_ext.complex as rxc
    >>> bn = rxc.nn.ComplexBatchNorm{n}d(4)
    >>> z = 3 + 2 * torch.randn({example}, dtype=torch.complex64)
    >>> y = bn(z)
    >>> bool(abs(y.abs().pow(2).mean() - 1) < 1e-4)
    True

References:
    Trabelsi et al., "Deep Complex Networks", ICLR 2018.
"""


class ComplexBatchNorm1d(_AbstractComplexBatchNorm):
    __doc__ = _BN_DOC.format(n=1, shape="``(N, C)`` or ``(N, C, L)``", example="64, 4, 8")
    _allowed_ndim = (2, 3)


class ComplexBatchNorm2d(_AbstractComplexBatchNorm):
    __doc__ = _BN_DOC.format(n=2, shape="``(N, C, H, W)``", example="16, 4, 4, 4")
    _allowed_ndim = (4,)


class ComplexBatchNorm3d(_AbstractComplexBatchNorm):
    __doc__ = _BN_DOC.format(n=3, shape="``(N, C, D, H, W)``", example="8, 4, 2, 4, 4")
    _allowed_ndim = (5,)


def _whiten_per_sample(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    mean = x.mean(dims, keepdim=True)
    c = x - mean
    vrr, vii, vri = second_moments(c, dims, keepdim=True)
    p, q = whitening_pq(vrr, vii, vri, eps, None)
    return p * c + q * c.conj()


def _affine_parameters(
    shape: tuple[int, ...], cdtype: torch.dtype, device: torch.device | str | None
) -> tuple[nn.Parameter, nn.Parameter]:
    weight = torch.zeros(3, *shape, dtype=real_dtype_for(cdtype), device=device)
    weight[:2] = 1 / math.sqrt(2)
    return nn.Parameter(weight), nn.Parameter(torch.zeros(shape, dtype=cdtype, device=device))


def _apply_affine(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    grr, gii, gri = weight.unbind(0)
    p, q = as_pq(grr, gii, gri, gri)
    return p * z + q * z.conj() + bias


class ComplexLayerNorm(nn.Module):
    r"""Whitening layer normalization: each sample is whitened over its last dimensions.

    For every sample, :math:`y = \Gamma \odot V^{-1/2}(z - \mu) + \beta` where :math:`\mu` and
    the 2x2 covariance :math:`V` of (real, imaginary) parts are taken over the trailing
    ``normalized_shape`` dimensions, and the elementwise symmetric :math:`\Gamma`
    (``weight`` of shape ``(3, *normalized_shape)``: :math:`\gamma_{rr}, \gamma_{ii},
    \gamma_{ri}`) starts at :math:`I/\sqrt2`, so :math:`E|y|^2 = 1` at initialisation.

    Args:
        normalized_shape: the trailing shape to normalise over (int or tuple).
        eps: added to the diagonal of :math:`V`.
        elementwise_affine: learn :math:`\Gamma` and the complex :math:`\beta`.
        dtype: complex64 or complex128 (a real dtype picks its complex partner).
        device: where the parameters live.

    Shape: input ``(*, *normalized_shape)`` complex; output the same.

    Raises:
        TypeError: for real input.
        ValueError: if the input's trailing shape is not ``normalized_shape``.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> ln = rxc.nn.ComplexLayerNorm(64)
        >>> y = ln(5 - 1j + torch.randn(3, 64, dtype=torch.complex128))
        >>> torch.allclose(y.abs().pow(2).mean(-1), torch.ones(3, dtype=torch.float64), atol=1e-4)
        True

    References:
        Ba, Kiros, Hinton, "Layer Normalization", arXiv:1607.06450, 2016; Trabelsi et al.,
        "Deep Complex Networks", ICLR 2018.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        shape = (
            (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        )
        for size in shape:
            check_int("ComplexLayerNorm", "normalized_shape", size, minimum=1)
        self.normalized_shape = shape
        self.eps = check_positive("ComplexLayerNorm", "eps", eps)
        self.elementwise_affine = bool(elementwise_affine)
        cdtype = complex_dtype_for("ComplexLayerNorm", dtype)
        if self.elementwise_affine:
            self.weight, self.bias = _affine_parameters(shape, cdtype, device)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:
        """Whiten each sample over the trailing ``normalized_shape`` dimensions."""
        x = require_complex("ComplexLayerNorm", input)
        k = len(self.normalized_shape)
        if tuple(x.shape[x.ndim - k :]) != self.normalized_shape or x.ndim < k:
            raise ValueError(
                f"ComplexLayerNorm: `input` must end in normalized_shape={self.normalized_shape}, "
                f"got input.shape={tuple(x.shape)}"
            )
        z = _whiten_per_sample(x, tuple(range(x.ndim - k, x.ndim)), self.eps)
        return _apply_affine(z, self.weight, self.bias) if self.elementwise_affine else z

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


class ComplexGroupNorm(nn.Module):
    r"""Whitening group normalization: channels split into groups, each whitened per sample.

    Input ``(N, C, *)`` is viewed as ``(N, G, C/G, *)``; every (sample, group) block is centred
    and multiplied by the inverse square root of its 2x2 (real, imaginary) covariance, then a
    per-channel symmetric :math:`\Gamma` (initialised to :math:`I/\sqrt2`) and complex
    :math:`\beta` are applied: :math:`E|y|^2 = 1` at initialisation.

    Args:
        num_groups: number of groups ``G``; must divide ``num_channels``.
        num_channels: number of channels ``C``.
        eps: added to the diagonal of :math:`V`.
        affine: learn the per-channel :math:`\Gamma` and :math:`\beta`.
        dtype: complex64 or complex128 (a real dtype picks its complex partner).
        device: where the parameters live.

    Shape: input ``(N, C, *)`` complex; output the same.

    Raises:
        TypeError: for real input.
        ValueError: if ``num_groups`` does not divide ``num_channels`` or the input has another
            channel count.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> gn = rxc.nn.ComplexGroupNorm(2, 8)
        >>> gn(torch.randn(4, 8, 16, dtype=torch.complex64)).shape
        torch.Size([4, 8, 16])

    References:
        Wu, He, "Group Normalization", ECCV 2018; Trabelsi et al., "Deep Complex Networks",
        ICLR 2018.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.num_groups = check_int("ComplexGroupNorm", "num_groups", num_groups, minimum=1)
        self.num_channels = check_int("ComplexGroupNorm", "num_channels", num_channels, minimum=1)
        if num_channels % num_groups:
            raise ValueError(
                f"ComplexGroupNorm: `num_groups` must divide num_channels={num_channels}, "
                f"got num_groups={num_groups}"
            )
        self.eps = check_positive("ComplexGroupNorm", "eps", eps)
        self.affine = bool(affine)
        cdtype = complex_dtype_for("ComplexGroupNorm", dtype)
        if self.affine:
            self.weight, self.bias = _affine_parameters((num_channels,), cdtype, device)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:
        """Whiten every (sample, group) block, then apply the per-channel affine map."""
        x = require_complex("ComplexGroupNorm", input)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"ComplexGroupNorm: `input` must have shape (N, {self.num_channels}, *), "
                f"got input.shape={tuple(x.shape)}"
            )
        grouped = x.reshape(x.shape[0], self.num_groups, -1)
        z = _whiten_per_sample(grouped, (2,), self.eps).reshape(x.shape)
        if not self.affine:
            return z
        shape = (-1,) + (1,) * (x.ndim - 2)
        return _apply_affine(z, self.weight.reshape(3, *shape), self.bias.reshape(shape))

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
