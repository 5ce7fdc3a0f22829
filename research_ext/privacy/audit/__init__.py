"""Privacy auditing: canaries, membership scores and empirical epsilon lower bounds.

An audit plants canaries in one training run, scores them against the trained model and turns the
scores into an epsilon lower bound with confidence. A lower bound above the accountant's epsilon
proves the run was not as private as claimed.

Example:
    >>> import torch
    >>> from research_ext.privacy.audit import one_run_epsilon
    >>> scores = torch.tensor([1.0, -1.0] * 50)
    >>> eps, guesses, correct = one_run_epsilon(scores, scores > 0, delta=0.0)
    >>> eps > 1.5
    True
"""

from research_ext.privacy.audit._audit import AuditResult, audit, plot_audit
from research_ext.privacy.audit._canaries import (
    Canaries,
    FeatureCanaryModel,
    dirac_canaries,
    feature_canaries,
    input_canaries,
)
from research_ext.privacy.audit._estimators import (
    clopper_pearson_epsilon,
    one_run_epsilon,
    one_run_p_value,
)

__all__ = [
    "AuditResult",
    "Canaries",
    "FeatureCanaryModel",
    "audit",
    "clopper_pearson_epsilon",
    "dirac_canaries",
    "feature_canaries",
    "input_canaries",
    "one_run_epsilon",
    "one_run_p_value",
    "plot_audit",
]
