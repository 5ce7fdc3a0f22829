"""SpectralConv's reference-FNO layout: the original FNO's 2m rows, and its checkpoints."""

import pytest
import torch

import research_ext.complex as rxc
from tests.helpers import ATOL_DROPPED_MODE_FLOAT64, ATOL_FLOAT64, RTOL_FLOAT64


def _reference_fno(x: torch.Tensor, weights: list[torch.Tensor], modes: tuple[int, ...]):
    """The reference FNO layer: rfftn, corner blocks [:m] / [-m:] times weights, irfftn."""
    ndim = len(modes)
    dims = tuple(range(2, 2 + ndim))
    x_ft = torch.fft.rfftn(x, dim=dims)
    out = torch.zeros(x.shape[0], weights[0].shape[1], *x_ft.shape[2:], dtype=x_ft.dtype)
    for c, w in enumerate(weights):
        index = [slice(None), slice(None)]
        for j, m in enumerate(modes[:-1]):
            index.append(slice(-m, None) if c >> j & 1 else slice(0, m))
        index.append(slice(0, modes[-1]))
        out[tuple(index)] = torch.einsum("bi...,io...->bo...", x_ft[tuple(index)], w)
    return torch.fft.irfftn(out, s=x.shape[2:], dim=dims)


@pytest.mark.parametrize(
    "layer, modes, grid",
    [
        (rxc.nn.SpectralConv1d, (5,), (16,)),
        (rxc.nn.SpectralConv2d, (4, 3), (10, 9)),
        (rxc.nn.SpectralConv3d, (3, 2, 3), (8, 7, 8)),
    ],
)
def test_fno_layout_reproduces_the_reference_fno_from_its_weights(layer, modes, grid):
    gen = torch.Generator().manual_seed(0)
    conv = layer(2, 3, modes, modes_layout="fno", dtype=torch.float64)
    corners = [
        torch.randn(2, 3, *modes, dtype=torch.complex128, generator=gen)
        for _ in range(2 ** (len(modes) - 1))
    ]
    conv.load_fno_weights(*corners)
    x = torch.randn(4, 2, *grid, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(
        conv(x), _reference_fno(x, corners, modes), rtol=RTOL_FLOAT64, atol=ATOL_FLOAT64
    )
    assert conv.weight.shape[2:-1] == tuple(2 * m for m in modes[:-1])


def test_symmetric_layout_keeps_2m_minus_1_rows_and_differs_from_the_reference():
    conv = rxc.nn.SpectralConv2d(1, 1, 3, dtype=torch.float64)
    assert conv.weight.shape == (1, 1, 5, 3)  # |k| < 3: k = -2..2 along rows, 0..2 rfft bins
    fno = rxc.nn.SpectralConv2d(1, 1, 3, modes_layout="fno", dtype=torch.float64)
    assert fno.weight.shape == (1, 1, 6, 3)  # k = -3..2
    with torch.no_grad():
        fno.weight.fill_(1.0)
    # A pure k = -3 row wave (grid 8) passes the reference layout and is dropped by the default.
    t = torch.arange(8, dtype=torch.float64)
    wave = torch.cos(2 * torch.pi * 3 * t / 8)[:, None].expand(8, 8)[None, None]
    assert fno(wave).abs().max() > 0.5
    with torch.no_grad():
        conv.weight.fill_(1.0)
    assert conv(wave).abs().max() < ATOL_DROPPED_MODE_FLOAT64


def test_fno_layout_errors():
    conv = rxc.nn.SpectralConv2d(2, 3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"load_fno_weights: the layer must have modes_layout"):
        conv.load_fno_weights(torch.zeros(2, 3, 4, 4, dtype=torch.complex128))
    fno = rxc.nn.SpectralConv2d(2, 3, 4, modes_layout="fno", dtype=torch.float64)
    with pytest.raises(ValueError, match=r"`weights` must be 2 tensors of shape \(2, 3, 4, 4\)"):
        fno.load_fno_weights(torch.zeros(2, 3, 4, 4, dtype=torch.complex128))
    with pytest.raises(ValueError, match=r"SpectralConv2d: `modes_layout` must be one of"):
        rxc.nn.SpectralConv2d(2, 3, 4, modes_layout="shifted")
    with pytest.raises(ValueError, match=r"at least 8 points along spatial dim 0"):
        fno(torch.zeros(1, 2, 7, 8, dtype=torch.float64))
    block = rxc.nn.FNOBlock(2, (4, 4), modes_layout="fno", dtype=torch.float64)
    assert block.spectral.modes_layout == "fno"
