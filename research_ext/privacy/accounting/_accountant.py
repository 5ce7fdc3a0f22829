"""The history of a private run (phases of noise multiplier and sample rate); no formulas here."""

import typing
from typing import Any

from research_ext.core import check_one_of, check_positive, check_probability
from research_ext.privacy.accounting._epsilon import ACCOUNTANTS, epsilon_of_history

__all__ = ["PrivacyAccountant"]


@typing.final
class PrivacyAccountant:
    r"""Records the steps of a run and reports its epsilon with the chosen accountant.

    The history is a list of phases ``[noise_multiplier, sample_rate, steps]``; consecutive
    steps with the same settings are merged, so the history stays short. Epsilon is the
    composition over all phases (:func:`research_ext.privacy.accounting.epsilon` for one phase).

    Args:
        accountant: ``"prv"`` (default), ``"rdp"`` or ``"pld"``.

    Example:
        >>> acc = PrivacyAccountant(accountant="rdp")
        >>> for _ in range(1000):
        ...     acc.step(noise_multiplier=1.0, sample_rate=0.01)
        >>> acc.history, round(acc.epsilon(1e-5), 2)
        ([[1.0, 0.01, 1000]], 2.1)
    """

    def __init__(self, accountant: str = "prv") -> None:
        self.accountant = check_one_of("PrivacyAccountant", "accountant", accountant, ACCOUNTANTS)
        self.history: list[list[Any]] = []

    @property
    def steps(self) -> int:
        """Total number of recorded steps."""
        return sum(int(phase[2]) for phase in self.history)

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` steps with the given noise multiplier and sample rate."""
        check_positive(
            "PrivacyAccountant.step", "noise_multiplier", noise_multiplier, allow_zero=True
        )
        check_probability("PrivacyAccountant.step", "sample_rate", sample_rate)
        sigma, q = float(noise_multiplier), float(sample_rate)
        if self.history and self.history[-1][0] == sigma and self.history[-1][1] == q:
            self.history[-1][2] += steps
        else:
            self.history.append([sigma, q, steps])

    def epsilon(self, delta: float) -> float:
        """Epsilon spent so far at ``delta`` (0.0 before the first step)."""
        check_probability("PrivacyAccountant.epsilon", "delta", delta, allow_one=False)
        return epsilon_of_history([tuple(p) for p in self.history], delta, self.accountant)

    def state_dict(self) -> dict[str, Any]:
        """The accountant's name and history (plain Python values)."""
        return {"accountant": self.accountant, "history": [list(p) for p in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history saved by :meth:`state_dict`."""
        self.accountant = check_one_of(
            "PrivacyAccountant.load_state_dict", "accountant", state["accountant"], ACCOUNTANTS
        )
        self.history = [[float(s), float(q), int(t)] for s, q, t in state["history"]]
