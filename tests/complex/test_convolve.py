"""FFT convolution planning: torch-fast lengths, the block/whole cost model, and the block path
against scipy wherever the planner takes it."""

import itertools
import math

import pytest
import scipy.signal as ss
import torch

import research_ext.complex as rxc
from research_ext.complex._scipy_signal.convolve import _plan
from research_ext.complex._shared.fft_lengths import fast_len, transform_cost
from tests.complex.spectral_utils import assert_close32, assert_close64, randn
from tests.helpers import (
    ATOL_FFT_ROUTES_FLOAT64,
    ATOL_FFT_VS_DIRECT_FLOAT64,
    ATOL_REORDERED_UNIT_FLOAT64,
    RTOL_FFT_VS_DIRECT_FLOAT64,
    RTOL_REORDERED_FLOAT64,
    RTOL_SCIPY_PARITY_TIGHT_FLOAT64,
)

S = rxc.signal
CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU


def _factors_ok(n: int, primes=(2, 3, 5, 7)) -> bool:
    for p in primes:
        while n % p == 0:
            n //= p
    return n == 1


def _is_fast(n: int, device: torch.device, real: bool, target: int) -> bool:
    ok = _factors_ok(n)
    if device.type == "cpu" and target > 8:
        ok = ok and n % 8 == 0
    if real and target > 2:
        ok = ok and n % 2 == 0
    return ok


@pytest.mark.parametrize("device,real", list(itertools.product((CPU, CUDA), (True, False))))
def test_fast_len_is_the_smallest_fast_length(device, real):
    targets = [*range(1, 1200), 4097, 65535 + 1_000_000 - 1, 1_000_030, 1_001_022]
    for target in targets:
        n = fast_len(target, device, real)
        assert n >= target and _is_fast(n, device, real, target), (target, n)
        if target < 1200:  # nothing fast in between
            assert not any(_is_fast(m, device, real, target) for m in range(target, n))


def test_fast_len_avoids_lengths_slow_in_torch_on_cpu():
    # scipy's pick for 1e6 + 1022 is 1012500 = 2^2 3^4 5^5: slow as a torch CPU real transform.
    assert rxc.fft.next_fast_len(1_001_022, real=True) == 1_012_500
    n = fast_len(1_001_022, CPU, True)
    assert n % 8 == 0 and n < 1_012_500


def test_transform_cost_has_the_cpu_cache_step():
    per_point = [transform_cost(1 << k, CPU, 8) / (1 << k) for k in range(8, 23)]
    assert all(a < b for a, b in itertools.pairwise(per_point))
    assert transform_cost(1 << 20, CPU, 8) / (1 << 20) > 3 * transform_cost(1 << 12, CPU, 8) / (
        1 << 12
    )
    gpu = transform_cost(1 << 20, CUDA, 8) / transform_cost(1 << 12, CUDA, 8)
    assert gpu == pytest.approx((1 << 8) * 20 / 12)


def test_plan_blocks_long_signals_and_keeps_short_ones_whole():
    for taps in (31, 1023, 65535):
        block, nfft = _plan(1_000_000, taps, CPU, True, 8, False)
        assert block == nfft - taps + 1 > 0 and nfft == fast_len(nfft, CPU, True)
        assert nfft < 1_000_000 // 2
    assert _plan(100_000, 100_000, CPU, True, 8, False) == (0, fast_len(199_999, CPU, True))
    assert _plan(1000, 31, CPU, True, 8, False) == (0, fast_len(1030, CPU, True))
    # oaconvolve splits whenever a split exists; fftconvolve only when it pays.
    assert _plan(1000, 31, CPU, True, 8, True)[0] > 0
    assert _plan(1000, 600, CPU, True, 8, True)[0] == 0  # kernel longer than half the signal
    assert _plan(50, 1, CPU, True, 8, True)[0] == 0


@pytest.mark.parametrize("s1,s2", [((60_000,), (31,)), ((30_000,), (1023,)), ((333,), (20_001,))])
def test_fftconvolve_block_path_matches_scipy(s1, s2):
    a_len, b_len = max(s1[0], s2[0]), min(s1[0], s2[0])
    assert _plan(a_len, b_len, CPU, True, 8, False)[0] > 0  # the case takes the block path
    for mode in ("full", "same", "valid"):
        a, b = randn(s1, torch.float64, 1), randn(s2, torch.float64, 2)
        ref = ss.fftconvolve(a.numpy(), b.numpy(), mode=mode)
        assert_close64(S.fftconvolve(a, b, mode=mode), ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)
        assert_close64(S.convolve(a, b, mode=mode), ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)
        ac, bc = randn(s1, torch.complex128, 3), randn(s2, torch.complex128, 4)
        ref = ss.fftconvolve(ac.numpy(), bc.numpy(), mode=mode)
        assert_close64(S.fftconvolve(ac, bc, mode=mode), ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)
        a32, b32 = a.float(), b.float()
        assert_close32(
            S.fftconvolve(a32, b32, mode=mode),
            ss.fftconvolve(a.numpy(), b.numpy(), mode=mode),
            ss.fftconvolve(a32.numpy(), b32.numpy(), mode=mode),
        )


def test_fftconvolve_block_path_broadcasts_and_blocks_one_dim_of_two():
    a, b = randn((3, 1, 20_000), torch.float64, 1), randn((1, 2, 45), torch.float64, 2)
    for mode in ("full", "same", "valid"):
        ref = ss.fftconvolve(a.numpy(), b.numpy(), mode=mode, axes=-1)
        assert_close64(S.fftconvolve(a, b, mode=mode, dim=-1), ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)
    a2, b2 = randn((8_000, 6), torch.float64, 3), randn((25, 4), torch.float64, 4)
    assert _plan(8_000, 25, CPU, True, 8, False)[0] > 0
    for mode in ("full", "same", "valid"):
        ref = ss.fftconvolve(a2.numpy(), b2.numpy(), mode=mode)
        assert_close64(S.fftconvolve(a2, b2, mode=mode), ref, RTOL_SCIPY_PARITY_TIGHT_FLOAT64)


def test_block_path_gradients():
    a = randn((300,), torch.float64, 1).requires_grad_()
    b = randn((9,), torch.float64, 2).requires_grad_()
    assert _plan(300, 9, CPU, True, 8, True)[0] > 0
    assert torch.autograd.gradcheck(S.oaconvolve, (a, b))
    # Long enough for fftconvolve itself to split: its gradient is the direct method's.
    x = randn((6_000,), torch.float64, 3).requires_grad_()
    h = randn((21,), torch.float64, 4).requires_grad_()
    w = randn((6_020,), torch.float64, 5)
    assert _plan(6_000, 21, CPU, True, 8, False)[0] > 0
    g_fft = torch.autograd.grad((S.fftconvolve(x, h) * w).sum(), (x, h))
    g_direct = torch.autograd.grad((S.convolve(x, h, method="direct") * w).sum(), (x, h))
    for u, v in zip(g_fft, g_direct, strict=True):
        assert torch.allclose(
            u,
            v,
            rtol=RTOL_FFT_VS_DIRECT_FLOAT64,
            atol=ATOL_FFT_VS_DIRECT_FLOAT64 * math.sqrt(u.numel()),
        )
    # Only the signal needs a gradient: the spectrum product runs in place.
    x2 = x.detach().requires_grad_()
    (g,) = torch.autograd.grad((S.fftconvolve(x2, h.detach()) * w).sum(), (x2,))
    assert torch.allclose(g, g_fft[0], rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_FFT_ROUTES_FLOAT64)


# torch's forward-mode AD loads its jit-scripted decompositions on first use, which warns.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_block_path_under_torch_func():
    x, h = randn((20_000,), torch.float64, 1), randn((31,), torch.float64, 2)
    dx, dh = randn((20_000,), torch.float64, 3), randn((31,), torch.float64, 4)
    assert _plan(20_000, 31, CPU, True, 8, False)[0] > 0
    _, tangent = torch.func.jvp(S.fftconvolve, (x, h), (dx, dh))
    expected = S.fftconvolve(dx, h) + S.fftconvolve(x, dh)
    assert torch.allclose(
        tangent, expected, rtol=RTOL_REORDERED_FLOAT64, atol=ATOL_REORDERED_UNIT_FLOAT64
    )
    kernels = randn((3, 31), torch.float64, 5)
    batched = torch.func.vmap(lambda k: S.fftconvolve(x, k))(kernels)
    assert torch.allclose(
        batched,
        S.fftconvolve(x[None], kernels, dim=-1),
        rtol=RTOL_REORDERED_FLOAT64,
        atol=ATOL_REORDERED_UNIT_FLOAT64,
    )
    signals = torch.stack([x, dx])
    batched = torch.func.vmap(lambda s: S.oaconvolve(s, h))(signals)
    assert torch.allclose(
        batched,
        S.oaconvolve(signals, h[None], dim=-1),
        rtol=RTOL_REORDERED_FLOAT64,
        atol=ATOL_REORDERED_UNIT_FLOAT64,
    )
