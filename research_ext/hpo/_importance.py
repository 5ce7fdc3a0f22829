"""Hyperparameter importance that is honest about conditional parameters.

A conditional parameter (``when = { kind = "b" }``) exists only in some trials. Optuna's
evaluators treat that differently and both mislead: fANOVA keeps only the parameters every trial
has, so it drops the conditional one silently; PED-ANOVA compares each parameter's values among the
top trials with all of its values, so a parameter that exists only where the objective is good
(because its parent's choice is good) looks decisive even when its own value does not matter.

So each parameter is explained on the trials where it exists, and says so:

* the *unconditional* parameters (present in every complete trial) are ranked together on all
  complete trials; their importances sum to 1;
* each *conditional* parameter is ranked on the complete trials that have it, together with the
  parameters all of those trials have; its row gives its share there and the number of trials
  it was computed on. Its value answers "once the parameter exists, how much does it matter?",
  and it is not comparable with the unconditional shares.

The two evaluators still answer different questions: fANOVA (Hutter et al. 2014) fits a random
forest to all values and splits the variance of the prediction between the parameters; PED-ANOVA
(Watanabe et al. 2023) asks how differently each parameter is distributed among the top 10% of
trials than among all of them. A parameter that matters only for good trials (or only for bad ones)
ranks higher under PED-ANOVA; with few trials both are noisy.
"""

import math
import warnings
from typing import Any

__all__ = ["EVALUATORS", "importance_rows"]

#: what each evaluator measures, for tables and reports
EVALUATORS = {
    "ped_anova": (
        "PED-ANOVA (Watanabe et al. 2023): how differently a parameter is distributed among the "
        "top 10% of trials than among all of them; it sees what matters near the best trials"
    ),
    "fanova": (
        "fANOVA (Hutter et al. 2014): the share of the objective's variance, over the whole "
        "space, that a random forest fitted to all trials attributes to each parameter"
    ),
}


def _evaluator(name: str, seed: int) -> Any:
    import optuna

    if name == "ped_anova":
        return optuna.importance.PedAnovaImportanceEvaluator()
    return optuna.importance.FanovaImportanceEvaluator(seed=seed)


def _shares(
    trials: list[Any], values: list[float], params: list[str], evaluator: str, seed: int
) -> dict[str, float]:
    """Importances of ``params`` on ``trials`` (objective ``values``, lower is better)."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" lines
    try:
        study = optuna.create_study(direction="minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={p: t.params[p] for p in params},
                distributions={p: t.distributions[p] for p in params},
                value=v,
            )
            for t, v in zip(trials, values, strict=True)
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = optuna.importance.get_param_importances(
            study, evaluator=_evaluator(evaluator, seed), params=params
        )
    return {k: float(v) for k, v in result.items()}


def importance_rows(
    trials: list[Any],
    values: list[float],
    *,
    evaluator: str,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Importance rows: parameter, importance, the trials it was computed on, which ones.

    Args:
        trials: complete ``FrozenTrial`` s.
        values: their objective values, oriented so that lower is better.
        evaluator: ``"ped_anova"`` or ``"fanova"``.
        seed: seed of fANOVA's random forest.

    Returns:
        One dict per parameter (``parameter``, ``importance``, ``trials`` as ``"k/n"``,
        ``computed_on``), unconditional parameters first, each group largest first. A
        conditional parameter present in fewer than two trials gets ``importance`` ``None``.
    """
    n = len(trials)
    names: list[str] = []
    for trial in trials:
        names += [p for p in trial.params if p not in names]
    everywhere = [p for p in names if all(p in t.params for t in trials)]
    rows: list[dict[str, Any]] = []
    if everywhere:
        shares = _shares(trials, values, everywhere, evaluator, seed)
        for p in sorted(everywhere, key=lambda p: -shares.get(p, 0.0)):
            rows.append(
                {
                    "parameter": p,
                    "importance": shares.get(p),
                    "trials": f"{n}/{n}",
                    "computed_on": "all complete trials",
                }
            )
    conditional: list[dict[str, Any]] = []
    for p in names:
        if p in everywhere:
            continue
        where = [i for i, t in enumerate(trials) if p in t.params]
        sub = [trials[i] for i in where]
        share: float | None = None
        if len(sub) >= 2:
            present = [q for q in names if all(q in t.params for t in sub)]
            try:
                share = _shares(sub, [values[i] for i in where], present, evaluator, seed).get(p)
            except (ValueError, RuntimeError):  # too few distinct values to rank
                share = None
        if share is not None and not math.isfinite(share):
            share = None
        conditional.append(
            {
                "parameter": p,
                "importance": share,
                "trials": f"{len(sub)}/{n}",
                "computed_on": f"the {len(sub)} trials where {p} exists (conditional)",
            }
        )
    conditional.sort(key=lambda r: -float(r["importance"] or 0.0))
    return rows + conditional
