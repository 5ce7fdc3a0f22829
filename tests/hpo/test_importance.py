"""Importance on a conditional space: each parameter is explained on the trials where it exists."""

import textwrap
import warnings

import optuna
import pytest

import research_ext.hpo as rh
from research_ext.hpo._cli import main
from research_ext.hpo._inspect import importance_table

OBJECTIVE = textwrap.dedent(
    """
    def f(params):
        # kind matters (b is better), x matters a little, y (only when kind = b) not at all
        penalty = 0.0 if params["kind"] == "b" else 1.0
        return penalty + 0.3 * (params["x"] - 0.5) ** 2 + 0.0 * params.get("y", 0.0)
    """
)

STUDY = textwrap.dedent(
    """
    [study]
    name = "cond"
    direction = "minimize"
    n_trials = 45
    sampler = "random"
    seed = 3

    [objective]
    entry = "obj.py:f"

    [space.x]
    type = "float"
    low = 0.0
    high = 1.0

    [space.kind]
    type = "categorical"
    choices = ["a", "b", "c"]

    [space.y]
    type = "float"
    low = 0.0
    high = 1.0
    when = { kind = "b" }
    """
)


@pytest.fixture(scope="module")
def conditional_study(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cond")
    (directory / "obj.py").write_text(OBJECTIVE)
    path = directory / "study.toml"
    path.write_text(STUDY)
    rh.run(path, show_progress=False, log_trials=False)
    return path


def _subset_study(trials, params):
    study = optuna.create_study(direction="minimize")
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={p: t.params[p] for p in params},
                distributions={p: t.distributions[p] for p in params},
                value=t.value,
            )
            for t in trials
        ]
    )
    return study


@pytest.mark.parametrize("evaluator", ["ped_anova", "fanova"])
def test_a_conditional_parameter_is_ranked_on_the_trials_where_it_exists(
    conditional_study, evaluator
):
    study = optuna.load_study(
        study_name="cond", storage=f"sqlite:///{conditional_study.parent / 'study.db'}"
    )
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    with_y = [t for t in complete if "y" in t.params]
    assert 0.2 * len(complete) < len(with_y) < 0.5 * len(complete)  # about a third

    rows = {r["parameter"]: r for r in importance_table(conditional_study, evaluator=evaluator)}
    assert set(rows) == {"x", "kind", "y"}  # fANOVA no longer drops y
    assert rows["y"]["trials"] == f"{len(with_y)}/{len(complete)}"
    assert "where y exists" in rows["y"]["computed_on"]
    assert rows["x"]["computed_on"] == rows["kind"]["computed_on"] == "all complete trials"
    assert rows["x"]["importance"] + rows["kind"]["importance"] == pytest.approx(1.0)

    make = {
        "ped_anova": optuna.importance.PedAnovaImportanceEvaluator,
        "fanova": lambda: optuna.importance.FanovaImportanceEvaluator(seed=0),
    }[evaluator]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_subset = optuna.importance.get_param_importances(
            _subset_study(with_y, ["x", "kind", "y"]), evaluator=make(), params=["x", "kind", "y"]
        )
        on_all = optuna.importance.get_param_importances(
            _subset_study(complete, ["x", "kind"]), evaluator=make(), params=["x", "kind"]
        )
    assert rows["y"]["importance"] == pytest.approx(on_subset["y"])
    assert rows["kind"]["importance"] == pytest.approx(on_all["kind"])
    if evaluator == "fanova":  # kind carries most of the variance
        assert rows["kind"]["importance"] > rows["x"]["importance"]


def test_ped_anova_no_longer_credits_y_with_its_parents_effect(conditional_study):
    study = optuna.load_study(
        study_name="cond", storage=f"sqlite:///{conditional_study.parent / 'study.db'}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        naive = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
        )
    ours = rh.importance(conditional_study, evaluator="ped_anova")
    # over all trials PED-ANOVA ranks y (present exactly where kind = b is good) first; on the
    # trials that have it, y's own value is seen to matter less than x's
    assert max(naive, key=naive.get) == "y"
    assert ours["y"] < 0.5


def test_the_cli_names_the_evaluator_and_the_trials_each_row_used(conditional_study, capsys):
    assert main(["importance", str(conditional_study), "--evaluator", "fanova"]) == 0
    out = capsys.readouterr().out
    assert "computed_on" in out and "where y exists (conditional)" in out
    assert "fANOVA (Hutter et al. 2014)" in out and "conditional parameter is ranked" in out
