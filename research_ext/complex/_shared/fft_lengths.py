"""FFT lengths for the scipy mirrors.

:func:`next_fast_len` (scipy's pocketfft-friendly lengths, mirrored), and :func:`fast_len` / :func:`transform_cost`, the lengths and cost estimates of torch's own FFT on
the device that runs it, which the FFT-based ops use to pick their transform sizes.
"""

import functools
import math

import torch

from research_ext.core import check_int

__all__ = ["fast_len", "next_fast_len", "transform_cost"]


def _smallest_at_least(target: int, primes: tuple[int, ...]) -> int:
    best = 2 ** math.ceil(math.log2(target))
    # Enumerate products of the odd primes, then complete with the smallest power of two.
    stack = [(1, 0)]
    while stack:
        value, start = stack.pop()
        if value >= target:
            best = min(best, value)
            continue
        power2 = 1
        while value * power2 < target:
            power2 *= 2
        best = min(best, value * power2)
        for i in range(start, len(primes)):
            stack.append((value * primes[i], i))
    return best


def next_fast_len(target: int, real: bool = False) -> int:
    """Smallest FFT-friendly length ``>= target``.

    Torch implementation of `scipy.fft.next_fast_len`: the smallest 11-smooth integer (5-smooth
    when ``real=True``) that is at least ``target``. Differences from scipy: none in the returned
    value; it is pure Python (no tensor involved) and ``real`` is keyword or positional as in scipy.

    Args:
        target: the minimal length, a positive int.
        real: whether the FFT is a real one (``rfft``), for which scipy prefers 5-smooth lengths.

    Returns:
        The length, an int ``n >= target`` whose prime factors are all <= 11 (or <= 5).

    Raises:
        TypeError: ``target`` is not an int.
        ValueError: ``target`` is < 1.

    Example:
        >>> next_fast_len(1021), next_fast_len(1021, real=True)
        (1024, 1024)
        >>> next_fast_len(97)
        98
    """
    check_int("next_fast_len", "target", target, minimum=1)
    if target <= 6:
        return target
    return _smallest_at_least(target, (3, 5) if real else (3, 5, 7, 11))


# torch's FFT backends (MKL/pocketfft on CPU, cuFFT/rocFFT on GPUs) all have fast kernels for the
# radices 2, 3, 5 and 7. On CPU, lengths with only one or two factors of 2 are slow as real
# transforms (measured with torch 2.13 + MKL, one thread: rfft + irfft of 1012500 = 2^2 3^4 5^5
# costs 1.4x 2^20 and 1.2x 1008000 = 2^7 3^2 5^3 7), so CPU lengths carry at least 2^3.
_FAST_PRIMES = (3, 5, 7)
_CPU_MIN_POW2 = 8
# One transform of n points in cache costs about n log2 n; on CPU the cost per point grows past
# 2^16 points (about 10 % per doubling) and triples once one transform's data leaves the cache
# (measured: about 4 MiB; rfft + irfft per point: 5.9 ns at 2^12, 9.4 ns at 2^17, 12.8 ns at
# 2^19, 32.5 ns at 2^20 float64).
_CPU_CACHE_BYTES = 4 << 20


@functools.lru_cache(maxsize=1024)
def _fast_len_cached(target: int, device_type: str, real: bool) -> int:
    if device_type == "cpu":
        if target <= _CPU_MIN_POW2:
            return target if not real or target <= 2 else 2 * math.ceil(target / 2)
        return _CPU_MIN_POW2 * _smallest_at_least(math.ceil(target / _CPU_MIN_POW2), _FAST_PRIMES)
    if real and target > 2:
        return 2 * _smallest_at_least(math.ceil(target / 2), _FAST_PRIMES)
    return target if target <= 6 else _smallest_at_least(target, _FAST_PRIMES)


def fast_len(target: int, device: torch.device, real: bool) -> int:
    """Smallest length >= ``target`` that torch's FFT on ``device`` transforms fast.

    7-smooth lengths (even ones for real transforms); on CPU also a multiple of 8 (above 8).
    """
    return _fast_len_cached(target, device.type, real)


def transform_cost(n: int, device: torch.device, itemsize: int) -> float:
    """Estimated time of one length-``n`` FFT of ``itemsize``-byte reals (arbitrary units)."""
    if n < 2:
        return 1.0
    lg = math.log2(n)
    cost = n * lg
    if device.type == "cpu":
        cost *= 1.0 + 0.1 * max(0.0, lg - 16.0)
        if n & (n - 1) and lg > 16:
            cost *= 1.15
        if n * itemsize > _CPU_CACHE_BYTES:
            cost *= 2.3
    return cost
