r"""Fourier layers: spectral convolutions and a minimal Fourier Neural Operator block.

A spectral convolution multiplies the lowest Fourier modes of every input channel by learned
complex weights and mixes channels, discarding the rest:

.. math::

    (\mathcal K u)(x) = \mathcal F^{-1}\Big[k \mapsto \mathbb 1[k \in \mathcal M]
        \sum_i W_{i o}(k)\,(\mathcal F u_i)(k)\Big](x),\qquad
    \mathcal M = \{k : |k_j| < m_j \text{ for every dim } j\}.

``n_modes[j] = m_j`` keeps the frequencies :math:`-(m_j - 1), \dots, m_j - 1` along dim ``j``
(:math:`2m_j - 1` of them). Real data use ``rfftn``/``irfftn`` and keep only
:math:`k \ge 0` along the last dim (the rest follows by Hermitian symmetry), so the output is real;
complex data use ``fftn``/``ifftn``. With torch's default (``"backward"``) normalisation the
layer is resolution-independent: the same weights act on any grid with at least
:math:`2m_j - 1` points per dim (:math:`m_j` rfft bins along the last dim of real data), and a
band-limited input gives the same function sampled on the finer grid.

**The reference FNO keeps one more row.** The original FNO code (Li et al.) keeps
:math:`2m_j` frequencies along every fully transformed dim, :math:`-m_j, \dots, m_j - 1` (the
rows ``[:m]`` and ``[-m:]`` of the spectrum, with the unpaired :math:`-m_j`), where the default
layout here (``modes_layout="symmetric"``) keeps the :math:`2m_j - 1` frequencies
:math:`|k| < m_j`, a set closed under negation, so a real band-limited input stays band-limited
and the layer's action does not depend on the grid's parity. ``modes_layout="fno"`` keeps the
reference's :math:`2m_j` rows instead (the last dim of real data keeps :math:`m_j` rfft bins in
both layouts), so FNO results and checkpoints carry over: :meth:`load_fno_weights` copies the
reference's ``weights1``, ``weights2`` (and, in 3-d, ``weights3``, ``weights4``) into the layer.

Weights are complex of the data's precision (complex128 for float64/complex128 data), start
with Rayleigh magnitudes and uniform phases with :math:`E|W|^2 = 1/(C_{in}C_{out})`, and need no
tensorly.

References:
    Li et al., "Fourier Neural Operator for Parametric Partial Differential Equations",
    ICLR 2021.
"""

import math
from typing import Any

import torch
from torch import Tensor, nn

from research_ext.complex._layers.activations import CGELU
from research_ext.complex._layers.checks import complex_dtype_for
from research_ext.complex._layers.init import complex_rayleigh_
from research_ext.core import check_int, check_one_of, format_message

__all__ = ["FNOBlock", "SpectralConv1d", "SpectralConv2d", "SpectralConv3d"]


def _normalise_modes(name: str, n_modes: Any, ndim: int) -> tuple[int, ...]:
    modes = (n_modes,) * ndim if isinstance(n_modes, int) else tuple(n_modes)
    if len(modes) != ndim or not all(isinstance(m, int) and not isinstance(m, bool) for m in modes):
        raise ValueError(
            format_message(name, "n_modes", f"a positive int or a tuple of {ndim} ints", n_modes)
        )
    for m in modes:
        check_int(name, "n_modes", m, minimum=1)
    return modes


def _negative(m: int, fno: bool) -> int:
    """How many negative frequencies a fully transformed dim keeps: m (reference FNO) or m - 1."""
    return m if fno else m - 1


def _keep_low(x: Tensor, dim: int, m: int, full: bool, fno: bool = False) -> Tensor:
    if not full:
        return x.narrow(dim, 0, m)
    n, neg = x.shape[dim], _negative(m, fno)
    return torch.cat([x.narrow(dim, 0, m), x.narrow(dim, n - neg, neg)], dim)


def _zero_fill(y: Tensor, dim: int, m: int, n: int, full: bool, fno: bool = False) -> Tensor:
    neg = _negative(m, fno) if full else 0
    shape = list(y.shape)
    shape[dim] = n - m - neg
    zeros = y.new_zeros(shape)
    if not full:
        return torch.cat([y, zeros], dim)
    return torch.cat([y.narrow(dim, 0, m), zeros, y.narrow(dim, m, neg)], dim)


class _AbstractSpectralConv(nn.Module):
    _ndim = 0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n_modes: int | tuple[int, ...],
        *,
        modes_layout: str = "symmetric",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_one_of(name, "modes_layout", modes_layout, ("symmetric", "fno"))
        self.modes_layout = modes_layout
        self.in_channels = check_int(name, "in_channels", in_channels, minimum=1)
        self.out_channels = check_int(name, "out_channels", out_channels, minimum=1)
        self.n_modes = _normalise_modes(name, n_modes, self._ndim)
        data_dtype = torch.get_default_dtype() if dtype is None else dtype
        self.complex_data = data_dtype.is_complex
        weight_dtype = complex_dtype_for(name, data_dtype)
        kept = [m + _negative(m, modes_layout == "fno") for m in self.n_modes]
        if not self.complex_data:
            kept[-1] = self.n_modes[-1]
        self.weight = nn.Parameter(
            torch.empty(in_channels, out_channels, *kept, dtype=weight_dtype, device=device)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Rayleigh magnitudes, uniform phases, :math:`E|W|^2 = 1/(C_{in} C_{out})`."""
        complex_rayleigh_(self.weight, 1 / math.sqrt(2 * self.in_channels * self.out_channels))

    def _check_input(self, x: Tensor, name: str | None = None) -> None:
        name = name or type(self).__name__
        want = self.weight.dtype if self.complex_data else self.weight.real.dtype
        if not isinstance(x, Tensor) or x.dtype != want:
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(
                f"{name}: `input` must have the layer's dtype {want}, got input.dtype={got}"
            )
        if x.ndim != self._ndim + 2 or x.shape[1] != self.in_channels:
            spatial = ", ".join(["*"] * self._ndim)
            raise ValueError(
                f"{name}: `input` must have shape (N, {self.in_channels}, {spatial}), "
                f"got input.shape={tuple(x.shape)}"
            )
        for j, (m, n) in enumerate(zip(self.n_modes, x.shape[2:], strict=True)):
            last_half = j == self._ndim - 1 and not self.complex_data
            smallest = 2 * m - 2 if last_half else m + _negative(m, self.modes_layout == "fno")
            if n < smallest:
                raise ValueError(
                    f"{name}: `n_modes` must fit the grid (at least {smallest} points along "
                    f"spatial dim {j} for n_modes={m}), got n_modes={self.n_modes}, "
                    f"input.shape={tuple(x.shape)}"
                )

    def forward(self, input: Tensor) -> Tensor:
        """Transform, keep the low modes, mix channels per mode, transform back."""
        self._check_input(input)
        dims = tuple(range(2, input.ndim))
        sizes = tuple(input.shape[2:])
        spectrum = (
            torch.fft.fftn(input, dim=dims)
            if self.complex_data
            else torch.fft.rfftn(input, dim=dims)
        )
        full = [True] * self._ndim
        if not self.complex_data:
            full[-1] = False
        fno = self.modes_layout == "fno"
        for d, m, f in zip(dims, self.n_modes, full, strict=True):
            spectrum = _keep_low(spectrum, d, m, f, fno)
        mixed = torch.einsum("bi...,io...->bo...", spectrum, self.weight)
        for d, m, f, n in zip(dims, self.n_modes, full, sizes, strict=True):
            mixed = _zero_fill(mixed, d, m, n if f else n // 2 + 1, f, fno)
        if self.complex_data:
            return torch.fft.ifftn(mixed, dim=dims)
        return torch.fft.irfftn(mixed, s=sizes, dim=dims)

    @torch.no_grad()
    def load_fno_weights(self, *weights: Tensor) -> None:
        """Copy the reference FNO's corner weights into this layer (``modes_layout="fno"``).

        The reference FNO code (real data) holds one (C_in, C_out, m_1, ..., m_d) complex tensor
        per corner of the kept spectrum: ``weights1`` (1-d), ``weights1, weights2`` for the rows
        ``[:m1]`` and ``[-m1:]`` (2-d), ``weights1..weights4`` for ``[:m1, :m2]``,
        ``[-m1:, :m2]``, ``[:m1, -m2:]``, ``[-m1:, -m2:]`` (3-d), the last dim always ``[:m_d]``.

        Raises:
            ValueError: the layer is not ``modes_layout="fno"`` with real data, or the number
                or shapes of ``weights`` do not match.
        """
        name = f"{type(self).__name__}.load_fno_weights"
        if self.modes_layout != "fno" or self.complex_data:
            raise ValueError(
                f"{name}: the layer must have modes_layout='fno' and real data, got "
                f"modes_layout={self.modes_layout!r}, complex data={self.complex_data}"
            )
        count = 2 ** (self._ndim - 1)
        corner = (self.in_channels, self.out_channels, *self.n_modes)
        if len(weights) != count or any(tuple(w.shape) != corner for w in weights):
            got = [tuple(w.shape) for w in weights]
            raise ValueError(
                f"{name}: `weights` must be {count} tensors of shape {corner}, got shapes {got}"
            )
        # Corner c holds the negative rows of full dim j when bit j of c is set (reference order).
        for c, w in enumerate(weights):
            index: list[slice] = [slice(None), slice(None)]
            for j, m in enumerate(self.n_modes[:-1]):
                index.append(slice(m, 2 * m) if c >> j & 1 else slice(0, m))
            self.weight[tuple(index)] = w.to(self.weight.dtype)

    def extra_repr(self) -> str:
        kind = "complex" if self.complex_data else "real"
        layout = "" if self.modes_layout == "symmetric" else ", modes_layout='fno'"
        return (
            f"{self.in_channels}, {self.out_channels}, n_modes={self.n_modes}{layout}, data={kind}"
        )


_SPECTRAL_DOC = r"""{n}-d spectral convolution (Fourier layer) with ``n_modes`` kept per dim.

:math:`y_o = \mathcal F^{{-1}}\big[\mathbb 1_{{\mathcal M}} \sum_i W_{{io}} \cdot \mathcal F x_i\big]`
over the {n} trailing dims (see the module docstring for the mode set :math:`\mathcal M`).

Args:
    in_channels: input channels ``C_in``.
    out_channels: output channels ``C_out``.
    n_modes: :math:`m` (int, or a {n}-tuple): frequencies :math:`|k| < m` are kept per dim.
    modes_layout: "symmetric" (the :math:`2m - 1` frequencies :math:`|k| < m` per fully
        transformed dim) or "fno" (the reference FNO's :math:`2m`, :math:`-m \le k < m`; see
        the module docstring and :meth:`load_fno_weights`).
    dtype: the *data* dtype. Real (float32/float64; default ``torch.get_default_dtype()``)
        uses rfft and returns real output; complex (complex64/complex128) uses fft. The weights
        are complex of the same precision.
    device: where the weights live.

Shape: input ``(N, C_in, {spatial})`` of the layer's dtype; output ``(N, C_out, {spatial})``,
same dtype. Any grid with at least :math:`2m - 1` points per dim (:math:`2m` with ``modes_layout="fno"``)
works (resolution-independent).

Raises:
    TypeError: if the input dtype is not the layer's dtype.
    ValueError: for a wrong rank or channel count, or a grid too small for ``n_modes``.

Example:
    >>> import torch
    >>> import research_ext.complex as rxc
    >>> layer = rxc.nn.SpectralConv{n}d(2, 3, n_modes=4, dtype=torch.float64)
    >>> layer(torch.randn(5, 2, {example}, dtype=torch.float64)).shape[:2]
    torch.Size([5, 3])

References:
    Li et al., "Fourier Neural Operator for Parametric Partial Differential Equations", ICLR 2021.
"""


class SpectralConv1d(_AbstractSpectralConv):
    __doc__ = _SPECTRAL_DOC.format(n=1, spatial="L", example="16")
    _ndim = 1


class SpectralConv2d(_AbstractSpectralConv):
    __doc__ = _SPECTRAL_DOC.format(n=2, spatial="H, W", example="8, 8")
    _ndim = 2


class SpectralConv3d(_AbstractSpectralConv):
    __doc__ = _SPECTRAL_DOC.format(n=3, spatial="D, H, W", example="8, 8, 8")
    _ndim = 3


class FNOBlock(nn.Module):
    r"""One Fourier Neural Operator layer: :math:`y = \sigma(\mathcal K x + W x + b)`.

    :math:`\mathcal K` is a :class:`SpectralConv1d`/``2d``/``3d`` (picked by ``len(n_modes)``)
    and :math:`W x + b` a pointwise (1x1) convolution carrying the high frequencies the spectral
    path drops; :math:`\sigma` defaults to GELU for real data and :class:`CGELU` for complex data.

    Args:
        channels: width ``C`` (input and output channels).
        n_modes: tuple with one :math:`m` per spatial dim (1 to 3 dims); an int means 1-d.
        activation: module applied last; ``None`` picks the default, ``torch.nn.Identity()``
            removes it (e.g. for the final block).
        modes_layout: "symmetric" or "fno", as for :class:`SpectralConv1d`.
        dtype: data dtype, real or complex, as for :class:`SpectralConv1d`.
        device: where the parameters live.

    Shape: input ``(N, C, *spatial)``; output the same.

    Raises:
        ValueError: if ``n_modes`` names fewer than 1 or more than 3 dims.

    Example:
        >>> import torch
        >>> import research_ext.complex as rxc
        >>> block = rxc.nn.FNOBlock(8, n_modes=(6,), dtype=torch.float64)
        >>> block(torch.randn(4, 8, 32, dtype=torch.float64)).shape
        torch.Size([4, 8, 32])

    References:
        Li et al., "Fourier Neural Operator for Parametric Partial Differential Equations",
        ICLR 2021.
    """

    def __init__(
        self,
        channels: int,
        n_modes: int | tuple[int, ...],
        *,
        activation: nn.Module | None = None,
        modes_layout: str = "symmetric",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        modes = (n_modes,) if isinstance(n_modes, int) else tuple(n_modes)
        if not 1 <= len(modes) <= 3:
            raise ValueError(format_message("FNOBlock", "n_modes", "1 to 3 ints", n_modes))
        data_dtype = torch.get_default_dtype() if dtype is None else dtype
        spectral: Any = {1: SpectralConv1d, 2: SpectralConv2d, 3: SpectralConv3d}[len(modes)]
        conv: Any = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(modes)]
        self.spectral = spectral(
            channels, channels, modes, modes_layout=modes_layout, dtype=data_dtype, device=device
        )
        self.pointwise = conv(channels, channels, 1, dtype=data_dtype, device=device)
        if activation is None:
            activation = CGELU() if data_dtype.is_complex else nn.GELU()
        self.activation = activation

    def forward(self, input: Tensor) -> Tensor:
        """Spectral path plus pointwise path, then the activation."""
        self.spectral._check_input(input, "FNOBlock")
        return self.activation(self.spectral(input) + self.pointwise(input))
