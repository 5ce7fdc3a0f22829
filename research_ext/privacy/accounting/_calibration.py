"""Calibrating the noise multiplier to a target epsilon in well under a second, cold.

The PRV search runs directly on our own certified epsilon (``_pld``: tens of milliseconds per
evaluation), so the sigma it returns is feasible by construction; it used to search on coarse
passes of Opacus's PRV accountant and certify with a fine one, which alone took 2-3 s at
5000-1e5 steps (the cold calibration 2-8 s on a loaded machine).
"""

import functools
import math
from collections.abc import Callable

from research_ext.core import (
    check_int,
    check_one_of,
    check_positive,
    check_probability,
    format_message,
)
from research_ext.privacy.accounting._epsilon import ACCOUNTANTS, epsilon_of_history, pld_epsilon
from research_ext.privacy.accounting._rdp import history_rdp_epsilon

__all__ = ["noise_multiplier_for"]

_SIGMA_MIN, _SIGMA_MAX = 1e-2, 1e4
#: Root searches stop once f(sigma) is within this fraction below the level (or the bracket
#: is narrower than _RTOL in log sigma).
_FTOL = 5e-4
_RTOL = 1e-5
#: PLD certification margin, relative to the target: the search aims at (1 - margin) target on
#: our epsilon (within 3e-4 relative above dp-accounting's), which then certifies the result.
_PLD_MARGIN = 0.001


def noise_multiplier_for(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
) -> float:
    r"""Near-smallest noise multiplier whose epsilon after ``steps`` steps is <= the target.

    Returns :math:`\sigma` with ``epsilon(sigma, sample_rate, steps, delta, accountant) <=
    target_epsilon`` (certified by the accountant's own upper bound) and within 0.5% of the
    smallest such :math:`\sigma`. The root is bracketed with the vectorised Rényi-DP bound
    (integer orders to 8192, a few milliseconds per evaluation, an upper bound on every
    accountant here), then found by a safeguarded secant search on :math:`\log\sigma`
    (to 0.05% in epsilon):

    * ``"rdp"``: on the RDP epsilon itself;
    * ``"prv"``: on the PRV epsilon itself (our own certified numerical composition, tens of
      milliseconds per evaluation; the whole calibration takes well under a second);
    * ``"pld"``: on the PRV epsilon aiming 0.1% below the target, then dp-accounting's PLD bound
      certifies the result; if it does not, sigma is raised by the excess and checked again.

    Results are cached.

    Args:
        target_epsilon: the epsilon budget (> 0).
        delta: target delta in (0, 1).
        sample_rate: Poisson sampling probability q in (0, 1].
        steps: number of noisy steps (a positive int).
        accountant: ``"prv"`` (default), ``"rdp"`` or ``"pld"``.

    Returns:
        The noise multiplier sigma (float).

    Raises:
        ValueError, TypeError: for out-of-range arguments, or a target that no noise multiplier
            up to 1e4 reaches.

    Example:
        >>> from research_ext.privacy.accounting import epsilon
        >>> sigma = noise_multiplier_for(2.0, 1e-5, 0.01, 1000, accountant="rdp")
        >>> 0.9 < sigma < 1.1 and epsilon(sigma, 0.01, 1000, 1e-5, accountant="rdp") <= 2.0
        True
    """
    fn = "noise_multiplier_for"
    check_positive(fn, "target_epsilon", target_epsilon)
    check_probability(fn, "delta", delta, allow_one=False)
    check_probability(fn, "sample_rate", sample_rate)
    check_int(fn, "steps", steps, minimum=1)
    check_one_of(fn, "accountant", accountant, ACCOUNTANTS)
    return _calibrate(float(target_epsilon), float(delta), float(sample_rate), steps, accountant)


def _fast_rdp(sigma: float, q: float, steps: int, delta: float) -> float:
    return history_rdp_epsilon(((sigma, q, steps),), delta, fractional=False)


def _root(
    f: Callable[[float], float], level: float, lo: float, hi: float, f_lo: float, f_hi: float
) -> float:
    """A sigma with (1 - _FTOL) level <= f(sigma) <= level; f decreasing, f(lo) > level >= f(hi).

    Illinois regula falsi on (log sigma, log f): epsilon curves are smooth there, so a handful
    of evaluations suffice; the bracket always holds a feasible sigma (``hi``).
    """
    a, b = math.log(lo), math.log(hi)
    fa = math.log(f_lo / level) if math.isfinite(f_lo) else 50.0
    fb = math.log(max(f_hi, 1e-300) / level)
    wa, wb, last = fa, fb, ""  # Illinois weights: halved on a side that keeps its end
    while fb < math.log1p(-_FTOL) and b - a > _RTOL:
        x = (a * wb - b * wa) / (wb - wa)
        x = min(max(x, a + 1e-3 * (b - a)), b - 1e-3 * (b - a))
        value = f(math.exp(x))
        fx = math.log(max(value, 1e-300) / level) if math.isfinite(value) else 50.0
        if fx > 0:
            a, fa, wa = x, fx, fx
            wb = wb / 2 if last == "a" else wb
            last = "a"
        else:
            b, fb, wb = x, fx, fx
            wa = wa / 2 if last == "b" else wa
            last = "b"
    return math.exp(b)


def _bracket_below(
    f: Callable[[float], float],
    level: float,
    hi: float,
    f_hi: float,
    slope: float,
) -> tuple[float, float, float, float]:
    """A bracket ``(lo, f(lo), hi, f(hi))`` around the root below ``hi`` (f(hi) <= level).

    The first guess extrapolates from ``hi`` with ``slope`` = d log f / d log sigma (from the
    cheap RDP curve; the tight accountants bend alike), so the bracket is usually narrow.
    """
    guess = hi * math.exp(math.log(level / max(f_hi, 1e-300)) / slope)
    value = f(guess) if guess < hi else f_hi
    if value <= level:
        hi, f_hi = guess, value
    else:
        return guess, value, hi, f_hi
    lo = hi
    step = 0.99
    while True:
        lo *= step
        step = step**2
        if lo < _SIGMA_MIN:
            return _SIGMA_MIN, math.inf, hi, f_hi
        value = f(lo)
        if value > level:
            return lo, value, hi, f_hi
        hi, f_hi = lo, value


def _secant_bracket(
    f: Callable[[float], float], level: float, hi: float, f_hi: float, guess: float
) -> tuple[float, float, float, float]:
    """A narrow bracket ``(lo, f(lo), hi, f(hi))`` (f(lo) > level >= f(hi)), from ``guess``.

    Secant steps on (log sigma, log f) through the last two points, aimed 0.2% past the level
    on the side not yet seen, so that the bracket is usually about 0.1% wide after two or three
    evaluations (each step moves sigma by 0.1% to a factor 2).
    """
    feasible = (math.log(hi), math.log(max(f_hi, 1e-300) / level))
    infeasible: tuple[float, float] | None = None
    last, x = feasible, math.log(guess)
    for _ in range(30):
        value = f(math.exp(x))
        y = math.log(max(value, 1e-300) / level) if math.isfinite(value) else 50.0
        if y > 0:
            infeasible = (x, y) if infeasible is None or x > infeasible[0] else infeasible
        else:
            feasible = (x, y) if x < feasible[0] else feasible
        if infeasible is not None and (y > 0) != (last[1] > 0):
            break
        if infeasible is not None and feasible[1] >= math.log1p(-_FTOL):
            break
        aim = -0.002 if infeasible is not None else 0.002
        slope = (y - last[1]) / (x - last[0]) if x != last[0] else -1.0
        slope = min(slope, -0.1)
        step = min(max((aim - y) / slope, -math.log(2)), math.log(2))
        step = step if abs(step) >= 1e-3 else math.copysign(1e-3, step)
        last, x = (x, y), x + step
    if infeasible is None:  # sigma fell to the floor, still feasible
        return _SIGMA_MIN, math.inf, math.exp(feasible[0]), level * math.exp(feasible[1])
    lo, hi = math.exp(infeasible[0]), math.exp(feasible[0])
    return lo, level * math.exp(infeasible[1]), hi, level * math.exp(feasible[1])


def _slope(sigma: float, q: float, steps: int, delta: float) -> float:
    """The slope d log eps / d log sigma of the fast RDP bound at sigma (negative)."""
    up, down = _fast_rdp(sigma * 1.01, q, steps, delta), _fast_rdp(sigma / 1.01, q, steps, delta)
    if not 0 < up < down < math.inf:
        return -1.0
    return min(-0.5, math.log(up / down) / (2 * math.log(1.01)))


def _prv(sigma: float, q: float, steps: int, delta: float) -> float:
    return epsilon_of_history(((sigma, q, steps),), delta, "prv")


@functools.lru_cache(maxsize=1024)
def _calibrate(target: float, delta: float, q: float, steps: int, accountant: str) -> float:
    if _fast_rdp(_SIGMA_MAX, q, steps, delta) > target:
        raise ValueError(
            format_message(
                "noise_multiplier_for",
                "target_epsilon",
                "reachable with noise_multiplier <= 1e4",
                target,
                f"sample_rate={q}, steps={steps}, delta={delta} spend more even then",
            )
        )
    hi, lo = _SIGMA_MAX, 1.0
    while lo > _SIGMA_MIN and _fast_rdp(lo, q, steps, delta) <= target:
        hi, lo = lo, lo / 4
    lo = max(lo, _SIGMA_MIN)
    fast = functools.partial(_with_args, _fast_rdp, q, steps, delta)
    sigma_fast = _root(fast, target, lo, hi, fast(lo), fast(hi))  # feasible for every accountant
    slope = _slope(sigma_fast, q, steps, delta)
    if accountant == "rdp":
        full = functools.partial(_with_args, _full_rdp, q, steps, delta)
        f_hi = full(sigma_fast)
        lo, f_lo, hi, f_hi = _bracket_below(full, target, sigma_fast, f_hi, slope)
        return _root(full, target, lo, hi, f_lo, f_hi)
    prv = functools.partial(_with_args, _prv, q, steps, delta)
    level = target if accountant == "prv" else (1 - _PLD_MARGIN) * target
    hi, f_hi = sigma_fast, prv(sigma_fast)
    if f_hi > level:  # only where the RDP bound is nearly tight: look above it
        lo, f_lo = hi, f_hi
        while f_hi > level and hi < _SIGMA_MAX:
            lo, f_lo, hi = hi, f_hi, min(hi * 1.02, _SIGMA_MAX)
            f_hi = prv(hi)
    else:
        # First guess: where the RDP bound meets the level scaled by PRV / RDP at sigma_fast
        # (the ratio varies slowly with sigma), found on the cheap RDP curve.
        scaled = level * fast(sigma_fast) / f_hi
        while lo > _SIGMA_MIN and fast(lo) <= scaled:
            lo = max(lo / 4, _SIGMA_MIN)
        guess = _root(fast, scaled, lo, sigma_fast, fast(lo), fast(sigma_fast))
        if guess >= sigma_fast:  # otherwise: extrapolate along the RDP curve's slope
            guess = hi * math.exp(math.log(level / max(f_hi, 1e-300)) / slope)
        lo, f_lo, hi, f_hi = _secant_bracket(prv, level, hi, f_hi, guess)
    sigma = _root(prv, level, lo, hi, f_lo, f_hi)
    if accountant == "prv":  # prv(sigma) <= target by construction
        return sigma
    eps = pld_epsilon(((sigma, q, steps),), delta)
    for _ in range(8):
        if eps <= target:
            return sigma
        # Raise sigma by the excess, along the RDP curve's slope, and a little more.
        sigma = min(sigma_fast, sigma * (eps / target) ** (-1 / slope) * (1 + _PLD_MARGIN / 4))
        if sigma == sigma_fast:
            return sigma_fast
        eps = pld_epsilon(((sigma, q, steps),), delta)
    return sigma_fast


def _with_args(
    f: Callable[[float, float, int, float], float], q: float, steps: int, delta: float, s: float
) -> float:
    return f(s, q, steps, delta)


def _full_rdp(sigma: float, q: float, steps: int, delta: float) -> float:
    return history_rdp_epsilon(((sigma, q, steps),), delta)
