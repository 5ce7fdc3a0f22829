"""DCT/DST parity with scipy.fft over types, norms, orthogonalize, lengths, dims and dtypes."""

import itertools

import numpy as np
import pytest
import scipy.fft as sf
import torch

import research_ext.complex as rxc
from tests.complex.spectral_utils import assert_close32, assert_close64, randn
from tests.helpers import (
    ATOL_REBATCHED_TRANSFORM_FLOAT64,
    ATOL_REORDERED_UNIT_FLOAT64,
    ATOL_ROUND_TRIP_FLOAT64,
    RTOL_REORDERED_FLOAT64,
    RTOL_SCIPY_PARITY_TIGHT_FLOAT64,
)

FUNCS = ("dct", "idct", "dst", "idst")
NORMS = (None, "backward", "ortho", "forward")
LENGTHS = (1, 2, 3, 4, 5, 8, 16, 17, 31)


def _scipy(name, x, **kw):
    """scipy on each part of complex input (scipy ignores `orthogonalize` for complex input)."""
    f = getattr(sf, name)
    if np.iscomplexobj(x):
        return f(x.real, **kw) + 1j * f(x.imag, **kw)
    return f(x, **kw)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("type", [1, 2, 3, 4])
def test_1d_grid_float64(name, type):
    for n, norm, orth, dtype in itertools.product(
        LENGTHS, NORMS, (None, True, False), (torch.float64, torch.complex128)
    ):
        if name in ("dct", "idct") and type == 1 and n < 2:
            continue
        x = randn((2, 3, n), dtype, seed=n)
        ours = getattr(rxc.fft, name)(x, type=type, norm=norm, orthogonalize=orth)
        ref = _scipy(name, x.numpy(), type=type, norm=norm, orthogonalize=orth)
        assert ours.dtype == dtype
        assert_close64(ours, ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)


@pytest.mark.parametrize("name", FUNCS)
def test_n_and_dim(name):
    x = randn((6, 7, 5), torch.float64)
    for type, n, dim in itertools.product((1, 2, 3, 4), (3, 7, 12), (0, 1, -1)):
        ours = getattr(rxc.fft, name)(x, type=type, n=n, dim=dim, norm="ortho")
        ref = getattr(sf, name)(x.numpy(), type=type, n=n, axis=dim, norm="ortho")
        assert_close64(ours, ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)


@pytest.mark.parametrize("name", ("dctn", "idctn", "dstn", "idstn"))
def test_nd_grid(name):
    x = randn((4, 5, 6), torch.float64)
    for type, norm, (s, dim) in itertools.product(
        (1, 2, 3, 4),
        (None, "ortho", "forward"),
        ((None, None), (None, (0, 2)), ((8, 3), (1, -1)), ((7, 4), None), (None, (-1,))),
    ):
        ours = getattr(rxc.fft, name)(x, type=type, s=s, dim=dim, norm=norm)
        ref = getattr(sf, name)(x.numpy(), type=type, s=s, axes=dim, norm=norm)
        assert_close64(ours, ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)


@pytest.mark.parametrize("name", FUNCS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_single_precision(name, dtype):
    for type, n in itertools.product((1, 2, 3, 4), (8, 17, 64)):
        x = randn((3, n), dtype)
        ours = getattr(rxc.fft, name)(x, type=type, norm="ortho")
        assert ours.dtype == dtype
        x64 = x.to(torch.complex128 if dtype.is_complex else torch.float64).numpy()
        ref = _scipy(name, x64, type=type, norm="ortho")
        ref32 = _scipy(name, x.numpy(), type=type, norm="ortho")
        assert_close32(ours, ref, ref32)


def test_roundtrip_and_orthogonality():
    x = randn((3, 33), torch.float64)
    for type in (1, 2, 3, 4):
        for kind in ("dct", "dst"):
            fwd, inv = getattr(rxc.fft, kind), getattr(rxc.fft, "i" + kind)
            assert torch.allclose(inv(fwd(x, type), type), x, atol=ATOL_ROUND_TRIP_FLOAT64)
            y = fwd(x, type, norm="ortho")
            assert torch.allclose(
                y.norm(dim=-1), x.norm(dim=-1), atol=ATOL_REORDERED_UNIT_FLOAT64
            )  # Parseval


def _chunk_rows(n: int, dtype: torch.dtype) -> int:
    from research_ext.complex._scipy_fft.r2r import _CHUNK_BYTES

    return _CHUNK_BYTES // (n * torch.empty(0, dtype=dtype).element_size())


@pytest.mark.parametrize("name", FUNCS)
def test_many_rows_in_chunks(name):
    """Batches past two chunks run chunk by chunk (a ragged last chunk too) along any dim."""
    n = 96
    batch = 2 * _chunk_rows(n, torch.float64) + 5
    x = randn((batch, n), torch.float64, 1)
    for type, norm in itertools.product((1, 2, 3, 4), (None, "ortho", "forward")):
        ours = getattr(rxc.fft, name)(x, type=type, norm=norm)
        assert_close64(
            ours, _scipy(name, x.numpy(), type=type, norm=norm), RTOL_SCIPY_PARITY_TIGHT_FLOAT64
        )
    xt = x.T.contiguous()  # transform along dim 0 of a (n, batch) tensor
    ours = getattr(rxc.fft, name)(xt, type=2, dim=0, norm="ortho")
    assert_close64(
        ours,
        _scipy(name, xt.numpy(), type=2, axis=0, norm="ortho"),
        RTOL_SCIPY_PARITY_TIGHT_FLOAT64,
    )
    z = randn((3, batch // 3, n), torch.complex128, 2)
    ours = getattr(rxc.fft, name)(z, type=3)
    assert_close64(ours, _scipy(name, z.numpy(), type=3), RTOL_SCIPY_PARITY_TIGHT_FLOAT64)
    x32 = x.float()
    assert_close32(
        getattr(rxc.fft, name)(x32, type=2),
        _scipy(name, x.numpy(), type=2),
        _scipy(name, x32.numpy(), type=2),
    )


# torch's forward-mode AD loads its jit-scripted decompositions on first use, which warns.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("type", [2, 3])
def test_chunked_rows_differentiate_like_single_rows(type):
    """Rows are independent: the chunked batch's gradients, forward-mode derivatives and vmap
    results match those of a few rows taken alone."""
    n = 1024
    batch = 2 * _chunk_rows(n, torch.float64) + 4
    x = randn((batch, n), torch.float64, 1).requires_grad_()
    w = randn((batch, n), torch.float64, 2)
    (g,) = torch.autograd.grad((rxc.fft.dct(x, type=type, norm="ortho") * w).sum(), x)
    sub = x[-3:].detach().requires_grad_()
    (g_sub,) = torch.autograd.grad((rxc.fft.dct(sub, type=type, norm="ortho") * w[-3:]).sum(), sub)
    assert torch.allclose(
        g[-3:], g_sub, rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_REBATCHED_TRANSFORM_FLOAT64
    )

    def f(t):
        return rxc.fft.dct(t, type=type, norm="ortho")

    xd = x.detach()
    _, tangent = torch.func.jvp(f, (xd,), (w,))
    assert torch.allclose(
        tangent, f(w), rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_REBATCHED_TRANSFORM_FLOAT64
    )  # the transform is linear
    pair = torch.stack([xd, w])  # vmap over 2 samples of `batch` rows each
    batched = torch.func.vmap(f)(pair)
    assert torch.allclose(
        batched, f(pair), rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_REBATCHED_TRANSFORM_FLOAT64
    )


@pytest.mark.parametrize("type", [2, 3])
def test_large_inputs_by_neighbour_pairs(type):
    """From `_PAIRS_MIN` elements on, DCT-II/III pair neighbours instead of reordering (type III
    below `_PAIRS3_MAX_N` points, 4095 here; 4096 takes the gathers): scipy's values for even and
    odd lengths (the end padding differs), every norm, complex, float32."""
    from research_ext.complex._scipy_fft.r2r import _PAIRS_MIN

    for n in (1, 2, 3, 4, 5, 8, 17, 64, 4095, 4096):
        x = randn((-(-_PAIRS_MIN // n), n), torch.float64, n)
        for name, norm, orth in itertools.product(("dct", "idct"), NORMS, (None, False, True)):
            ours = getattr(rxc.fft, name)(x, type=type, norm=norm, orthogonalize=orth)
            ref = getattr(sf, name)(x.numpy(), type=type, norm=norm, orthogonalize=orth)
            assert_close64(ours, ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)
        z = randn((-(-_PAIRS_MIN // n), n), torch.complex128, n)
        assert_close64(
            rxc.fft.dct(z, type=type),
            _scipy("dct", z.numpy(), type=type),
            RTOL_SCIPY_PARITY_TIGHT_FLOAT64,
        )
        x32 = x.float()
        assert_close32(
            rxc.fft.idct(x32, type=type, norm="ortho"),
            sf.idct(x.numpy(), type=type, norm="ortho"),
            sf.idct(x32.numpy(), type=type, norm="ortho"),
        )


@pytest.mark.parametrize("type", [2, 3])
def test_neighbour_pairs_gradient_is_the_transpose(type):
    """The large-input paths' gradient (autograd through their out-of-place branch) is the
    transposed transform: <dct(x), w> = <x, dct^T(w)>, DCT-II/III ortho being each other's."""
    from research_ext.complex._scipy_fft.r2r import _PAIRS_MIN

    for n in (7, 4096):
        x = randn((-(-_PAIRS_MIN // n), n), torch.float64, 1).requires_grad_()
        w = randn(x.shape, torch.float64, 2)
        (g,) = torch.autograd.grad((rxc.fft.dct(x, type=type, norm="ortho") * w).sum(), x)
        assert_close64(
            g, sf.dct(w.numpy(), type=5 - type, norm="ortho"), RTOL_SCIPY_PARITY_TIGHT_FLOAT64
        )


def test_type3_writes_interleaved_pairs():
    """From `_PAIRS3_MAX_N` points DCT-III's inverse FFT is shifted by one so the result, viewed
    as complex pairs, is one product of its two halves: scipy's values for even lengths, chunked
    or not, odd lengths (the gathers) and a result that cannot be viewed as pairs (the gathers)."""
    from research_ext.complex._scipy_fft.r2r import _PAIRS3_MAX_N, _rows

    for n, rows in itertools.product(
        (_PAIRS3_MAX_N, _PAIRS3_MAX_N + 1, 2 * _PAIRS3_MAX_N), (3, 80)
    ):
        x = randn((rows, n), torch.float64, n)
        for norm in NORMS:
            ref = sf.dct(x.numpy(), type=3, norm=norm)
            assert_close64(rxc.fft.dct(x, type=3, norm=norm), ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)
    n = 2 * _PAIRS3_MAX_N
    x = randn((3, n), torch.float64, 3)
    strided = torch.empty(3, n, 2, dtype=torch.float64)[..., 0]
    _rows(x, "dct", 3, "ortho", True, out=strided)
    assert_close64(
        strided, sf.dct(x.numpy(), type=3, norm="ortho"), RTOL_SCIPY_PARITY_TIGHT_FLOAT64
    )


def test_type3_chunks_share_one_spectrum_buffer():
    """Large CPU batches of even DCT-III rows from `_PAIRS3_MAX_N` points run a chunk at a time
    through one reused spectrum buffer: scipy's values with a short last chunk, every norm,
    float32 and float64, for complex input (its parts are one batch), and along dim 0 (a result
    that cannot be viewed as pairs: the per-chunk gathers), twice in a row."""
    from research_ext.complex._scipy_fft.r2r import _CHUNK_BYTES, _PAIRS3_MAX_N

    n = _PAIRS3_MAX_N
    for dtype in (torch.float64, torch.float32):
        rows = _CHUNK_BYTES // (n * dtype.itemsize)
        x = randn((2 * rows + 5, n), dtype, 7)
        for name, norm in itertools.product(("dct", "idct"), NORMS):
            ours = getattr(rxc.fft, name)(x, type=3, norm=norm)
            ref64 = getattr(sf, name)(x.double().numpy(), type=3, norm=norm)
            if dtype == torch.float64:
                assert_close64(ours, ref64, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)
            else:
                assert_close32(ours, ref64, getattr(sf, name)(x.numpy(), type=3, norm=norm))
    rows = _CHUNK_BYTES // (n * 8)
    for seed in (1, 2):
        x = randn((n, 2 * rows + 3), torch.float64, seed)
        assert_close64(
            rxc.fft.dct(x, type=3, norm="ortho", dim=0),
            sf.dct(x.numpy(), type=3, norm="ortho", axis=0),
            RTOL_SCIPY_PARITY_TIGHT_FLOAT64,
        )
    z = randn((rows + 1, n), torch.complex128, 3)
    assert_close64(
        rxc.fft.dct(z, type=3), _scipy("dct", z.numpy(), type=3), RTOL_SCIPY_PARITY_TIGHT_FLOAT64
    )
