r"""Estimators that turn membership scores into an epsilon lower bound with confidence.

Two estimators:

* :func:`one_run_epsilon` (Steinke, Nasr & Jagielski 2023): the :math:`m` canaries were each
  included independently with probability 1/2 in **one** training run. The auditor guesses "in"
  for the highest scores and "out" for the lowest, abstaining on the rest; with :math:`r` guesses
  of which :math:`v` are right, an :math:`(\varepsilon, \delta)`-DP run satisfies

  .. math::

      \Pr[V \ge v] \le \Pr[\mathrm{Bin}(r, p) \ge v]
          + 2m\delta \max_{1 \le i \le v} \frac{\Pr[v - i \le \mathrm{Bin}(r, p) < v]}{i},
      \qquad p = \frac{e^\varepsilon}{1 + e^\varepsilon},

  and the lower bound is the largest :math:`\varepsilon` this p-value rejects at the chosen
  confidence.
* :func:`clopper_pearson_epsilon` (Jagielski et al. 2020, Nasr et al. 2021): from the scores of
  members and non-members, a threshold test's true/false positive rates obey
  :math:`\mathrm{TPR} \le e^\varepsilon \mathrm{FPR} + \delta` and
  :math:`1 - \mathrm{FPR} \le e^\varepsilon (1 - \mathrm{TPR}) + \delta`; Clopper-Pearson intervals
  on the two rates give :math:`\varepsilon \ge \log((\underline{\mathrm{TPR}} - \delta) /
  \overline{\mathrm{FPR}})`. Its guarantee assumes independent trials (one canary per training
  run); applied to many canaries of one run it is the customary heuristic.

Both correct for choosing the number of guesses (the threshold) on the same scores with a
Bonferroni split of the error probability.

References:
    Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023,
    arXiv:2305.08846. Jagielski, Ullman & Oprea, "Auditing Differentially Private Machine
    Learning: How Private is Private SGD?", NeurIPS 2020. Nasr et al., "Adversary Instantiation:
    Lower Bounds for Differentially Private Machine Learning", IEEE S&P 2021.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import stats

from research_ext.core import check_in_range, check_int, check_probability, format_message

__all__ = ["clopper_pearson_epsilon", "one_run_epsilon", "one_run_p_value"]

_EPS_MAX = 50.0  # searched range of epsilon; a bound at the edge means "no privacy"
_BISECTIONS = 60


def one_run_p_value(
    num_canaries: int, num_guesses: int, num_correct: int, epsilon: float, delta: float
) -> float:
    r"""Probability of at least ``num_correct`` right guesses under :math:`(\varepsilon, \delta)`-DP.

    The bound of Steinke, Nasr & Jagielski (2023, Theorem 3.3) given in the module docstring.

    Args:
        num_canaries: :math:`m`, canaries each included with probability 1/2.
        num_guesses: :math:`r \le m`, guesses made (abstentions excluded).
        num_correct: :math:`v \le r`, right guesses.
        epsilon: :math:`\varepsilon \ge 0` of the null hypothesis.
        delta: :math:`\delta \in [0, 1]` of the null hypothesis.

    Returns:
        The p-value, in [0, 1].

    Raises:
        TypeError, ValueError: for counts that are not ints with ``num_correct <= num_guesses <=
            num_canaries``, or ``epsilon`` / ``delta`` out of range.

    Example:
        >>> round(one_run_p_value(100, 100, 60, 0.0, 0.0), 4)  # a fair coin: P[Bin(100,.5) >= 60]
        0.0284
    """
    fn = "one_run_p_value"
    check_int(fn, "num_canaries", num_canaries, minimum=1)
    check_int(fn, "num_guesses", num_guesses, minimum=0, maximum=num_canaries)
    check_int(fn, "num_correct", num_correct, minimum=0, maximum=num_guesses)
    check_in_range(fn, "epsilon", epsilon, 0.0, math.inf)
    check_in_range(fn, "delta", delta, 0.0, 1.0)
    return _p_value(num_canaries, num_guesses, num_correct, epsilon, delta)


def _p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    p = 1.0 / (1.0 + math.exp(-epsilon))  # accuracy of epsilon-DP randomized response
    tail = float(stats.binom.sf(v - 1, r, p))  # P[Bin(r, p) >= v]
    if v == 0 or delta == 0.0:
        return min(1.0, tail)
    # below[i - 1] = P[v - i <= Bin(r, p) < v] for i = 1..v
    below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, p))
    worst = float(np.max(below / np.arange(1, v + 1)))
    return min(1.0, tail + 2 * m * delta * worst)


def _largest_rejected_epsilon(p_value: Callable[[float], float], level: float) -> float:
    """Largest epsilon whose p-value is <= level; p_value is non-decreasing in epsilon."""
    if p_value(0.0) > level:
        return 0.0
    if p_value(_EPS_MAX) <= level:
        return _EPS_MAX
    low, high = 0.0, _EPS_MAX
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if p_value(middle) <= level:
            low = middle
        else:
            high = middle
    return low


def one_run_epsilon(
    scores: torch.Tensor,
    is_member: torch.Tensor,
    *,
    delta: float,
    confidence: float = 0.95,
    num_guesses: Sequence[int] | None = None,
) -> tuple[float, int, int]:
    r"""Epsilon lower bound from one training run (Steinke, Nasr & Jagielski 2023).

    For each candidate number of guesses :math:`r`, the :math:`\lceil r/2 \rceil` highest scores
    are guessed "in" and the :math:`\lfloor r/2 \rfloor` lowest "out"; the bound is the largest
    :math:`\varepsilon` whose p-value (:func:`one_run_p_value`) is at most
    :math:`(1 - \text{confidence})/k` for :math:`k` candidates (Bonferroni), maximised over them.

    Args:
        scores: ``(m,)`` membership scores, higher meaning "more likely a member".
        is_member: ``(m,)`` bool, whether each canary was included (probability 1/2 each).
        delta: :math:`\delta` of the DP claim being tested, in [0, 1).
        confidence: probability that the bound holds for a truly
            :math:`(\varepsilon, \delta)`-DP run, in (0, 1).
        num_guesses: candidate numbers of guesses in [1, m]; ``None`` tries
            :math:`m \cdot \{0.02, 0.05, 0.1, 0.2, 0.5, 1\}`.

    Returns:
        ``(eps_lower, guesses, correct)`` for the best candidate.

    Raises:
        TypeError, ValueError: for mismatched or non-1-D inputs and out-of-range arguments.

    Example:
        >>> scores = torch.tensor([3.0, 2.0, 1.0, -1.0, -2.0, -3.0] * 20)
        >>> member = scores > 0
        >>> eps, r, v = one_run_epsilon(scores, member, delta=0.0)
        >>> (r, v), round(eps, 2)
        ((120, 120), 3.2)
    """
    fn = "one_run_epsilon"
    scores, members = _check_scores(fn, scores, is_member)
    check_in_range(fn, "delta", delta, 0.0, 1.0, high_inclusive=False)
    check_probability(fn, "confidence", confidence, allow_one=False)
    m = scores.numel()
    candidates = _guess_counts(fn, num_guesses, m)
    order = torch.argsort(scores, descending=True, stable=True).cpu()
    ranked = members.cpu()[order].numpy()
    level = (1.0 - confidence) / len(candidates)
    best = (0.0, candidates[0], 0)
    for r in candidates:
        top = (r + 1) // 2  # guesses "in"; the remaining r - top lowest scores are guessed "out"
        correct = int(ranked[:top].sum())
        if r > top:
            correct += int((~ranked[m - (r - top) :]).sum())

        def p_value(e: float, r: int = r, v: int = correct) -> float:
            return _p_value(m, r, v, e, delta)

        eps = _largest_rejected_epsilon(p_value, level)
        if eps > best[0]:
            best = (eps, r, correct)
    return best


def _guess_counts(fn: str, num_guesses: Sequence[int] | None, m: int) -> list[int]:
    if num_guesses is None:
        return sorted({max(1, round(m * f)) for f in (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)})
    counts = list(num_guesses)
    if not counts or any(
        not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= m for r in counts
    ):
        raise ValueError(
            format_message(
                fn, "num_guesses", f"a non-empty sequence of ints in [1, {m}]", num_guesses
            )
        )
    return sorted(set(counts))


def _check_scores(fn: str, scores: object, is_member: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(scores, torch.Tensor) or scores.ndim != 1 or scores.numel() == 0:
        raise TypeError(format_message(fn, "scores", "a non-empty 1-D tensor", scores))
    if (
        not isinstance(is_member, torch.Tensor)
        or is_member.dtype != torch.bool
        or is_member.shape != scores.shape
    ):
        raise TypeError(
            format_message(
                fn, "is_member", f"a bool tensor of shape {tuple(scores.shape)}", is_member
            )
        )
    return scores.detach(), is_member


def clopper_pearson_epsilon(
    scores_in: torch.Tensor,
    scores_out: torch.Tensor,
    *,
    delta: float,
    confidence: float = 0.95,
    threshold: float | None = None,
) -> float:
    r"""Epsilon lower bound from member / non-member scores with Clopper-Pearson intervals.

    A score :math:`\ge t` is guessed "member". With one-sided Clopper-Pearson bounds
    :math:`\underline{\mathrm{TPR}}` and :math:`\overline{\mathrm{FPR}}` (and the mirrored pair for
    "non-member" guesses) the bound is
    :math:`\max(\log\frac{\underline{\mathrm{TPR}} - \delta}{\overline{\mathrm{FPR}}},
    \log\frac{\underline{\mathrm{TNR}} - \delta}{\overline{\mathrm{FNR}}})`, maximised over
    thresholds. The error probability :math:`1 - \text{confidence}` is split over the two rates,
    the two directions and, when ``threshold`` is ``None``, every candidate threshold (Bonferroni).

    Args:
        scores_in: ``(n_in,)`` scores of members (of canaries that were trained on).
        scores_out: ``(n_out,)`` scores of non-members.
        delta: :math:`\delta` of the DP claim being tested, in [0, 1).
        confidence: in (0, 1).
        threshold: a fixed threshold chosen before seeing these scores, or ``None`` to search all.

    Returns:
        The epsilon lower bound (0 when nothing can be concluded).

    Raises:
        TypeError, ValueError: for non-1-D or empty score tensors and out-of-range arguments.

    Example:
        >>> scores_in, scores_out = torch.full((500,), 1.0), torch.full((500,), -1.0)
        >>> round(clopper_pearson_epsilon(scores_in, scores_out, delta=0.0, threshold=0.0), 2)
        4.73
    """
    fn = "clopper_pearson_epsilon"
    for name, value in (("scores_in", scores_in), ("scores_out", scores_out)):
        if not isinstance(value, torch.Tensor) or value.ndim != 1 or value.numel() == 0:
            raise TypeError(format_message(fn, name, "a non-empty 1-D tensor", value))
    check_in_range(fn, "delta", delta, 0.0, 1.0, high_inclusive=False)
    check_probability(fn, "confidence", confidence, allow_one=False)
    s_in = np.sort(scores_in.detach().cpu().double().numpy())
    s_out = np.sort(scores_out.detach().cpu().double().numpy())
    if threshold is None:
        thresholds = np.unique(np.concatenate([s_in, s_out]))
    else:
        thresholds = np.asarray([float(threshold)])
    alpha = (1.0 - confidence) / (4 * len(thresholds))  # two rates x two directions x thresholds
    n_in, n_out = len(s_in), len(s_out)
    tp = n_in - np.searchsorted(s_in, thresholds, side="left")  # members scored >= t
    fp = n_out - np.searchsorted(s_out, thresholds, side="left")
    tpr_low = _cp_lower(tp, n_in, alpha)
    fpr_high = _cp_upper(fp, n_out, alpha)
    tnr_low = _cp_lower(n_out - fp, n_out, alpha)
    fnr_high = _cp_upper(n_in - tp, n_in, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        forward = np.log(np.maximum(tpr_low - delta, 0.0) / fpr_high)
        backward = np.log(np.maximum(tnr_low - delta, 0.0) / fnr_high)
    best = np.nanmax(np.concatenate([forward, backward, [0.0]]))
    return float(min(max(best, 0.0), _EPS_MAX))


def _cp_lower(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound: the alpha quantile of Beta(k, n - k + 1)."""
    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = stats.beta.ppf(alpha, k, trials - k + 1)
    return np.where(k == 0, 0.0, bound)


def _cp_upper(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound: the 1 - alpha quantile of Beta(k + 1, n - k)."""
    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = stats.beta.ppf(1 - alpha, k + 1, trials - k)
    return np.where(k == trials, 1.0, bound)
