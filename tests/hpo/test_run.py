import dataclasses
import socket
import subprocess
import sys

import optuna
import pytest

import research_ext.hpo as rh
from research_ext.hpo._queue import pop_ticket, top_up
from research_ext.hpo._seeding import trial_seed
from research_ext.hpo._study import ENDED, OWNER, RETRY_OF, TRIAL_DIR, open_study
from tests.helpers import RTOL_ACCOUNTING_SERIES
from tests.hpo.conftest import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState


def _states(study):
    out = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _finished(study):
    return sum(t.state in (State.COMPLETE, State.PRUNED) for t in study.get_trials(deepcopy=False))


def test_run_reaches_exactly_n_trials_and_is_idempotent(tmp_path):
    path = write_study(tmp_path, n_trials=5)
    study = rh.run(path)
    assert _states(study) == {"COMPLETE": 5}
    assert len(rh.run(path).trials) == 5  # done: adds nothing
    study = rh.run(path, n_trials=7)
    assert _states(study) == {"COMPLETE": 7}
    assert [t.number for t in study.trials] == list(range(7))
    assert (tmp_path / "study.db").exists()  # default storage: next to the study file


def test_same_trials_as_raw_optuna(tmp_path):
    """Our layer proposes and records what raw Optuna does when trial i's sampler is seeded with
    ``trial_seed(seed, i)`` (per-trial seeds: a resumed or shared study never repeats draws)."""
    path = write_study(tmp_path, n_trials=8, sampler='{ type = "tpe", n_startup_trials = 3 }')
    ours = rh.run(path)

    def objective(trial):
        params = {"x": trial.suggest_float("x", 0.0, 1.0)}
        params["kind"] = trial.suggest_categorical("kind", ["a", "b"])
        if params["kind"] == "b":
            params["y"] = trial.suggest_float("y", 0.0, 0.5)
        extra = params.get("y", 0.0) if params["kind"] == "b" else 0.0
        return (params["x"] - 0.3) ** 2 + extra

    raw = optuna.create_study()
    for i in range(8):
        raw.sampler = optuna.samplers.TPESampler(seed=trial_seed(0, i), n_startup_trials=3)
        raw.optimize(objective, n_trials=1)
    assert [t.params for t in ours.trials] == [t.params for t in raw.trials]
    assert [t.value for t in ours.trials] == pytest.approx([t.value for t in raw.trials])


def test_failures_are_replaced_by_fresh_trials(tmp_path):
    path = write_study(
        tmp_path,
        n_trials=6,
        sampler='"random"',
        args="{ fail_above = 0.6 }",
        extra_study="max_failures = 50",
    )
    study = rh.run(path)
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == State.FAIL]
    assert _finished(study) == 6 and len(trials) == 6 + len(failed) and failed
    for t in failed:
        assert t.params["x"] > 0.6 and t.system_attrs[ENDED] == "error"
        assert "too large" in t.user_attrs["error"]


def test_max_failures_stops_the_run(tmp_path, capsys):
    path = write_study(
        tmp_path, n_trials=4, args="{ fail_above = -1.0 }", extra_study="max_failures = 2"
    )
    with pytest.raises(
        rh.StudyFailedError, match=r"the objective failed 2 times \(study.max_failures=2\)"
    ):
        rh.run(path)
    from research_ext.hpo._cli import main

    assert main(["run", str(path)]) == 3
    assert "max_failures" in capsys.readouterr().err


def test_pruning_from_the_config(tmp_path):
    path = write_study(
        tmp_path,
        fn="stepped",
        n_trials=10,
        sampler='"random"',
        args="{ steps = 4 }",
        extra_study='pruner = { type = "median", n_startup_trials = 2 }',
    )
    study = rh.run(path)
    states = _states(study)
    assert states.get("PRUNED", 0) > 0 and _finished(study) == 10 and "FAIL" not in states
    for t in study.trials:
        assert len(t.intermediate_values) == (
            4 if t.state == State.COMPLETE else max(t.intermediate_values) + 1
        )
        assert (tmp_path / "s.trials" / f"trial-{t.number:05d}" / "pid").exists()


def _dominates(a, b):
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def test_multi_objective_pareto_front(tmp_path):
    path = write_study(
        tmp_path,
        fn="two_objectives",
        n_trials=12,
        directions='directions = ["minimize", "minimize"]\nmetrics = ["loss", "size"]',
        sampler='{ type = "nsgaii", population_size = 4 }',
    )
    study = rh.run(path)
    assert study.metric_names == ["loss", "size"]
    complete = [t for t in study.trials if t.state == State.COMPLETE]
    expected = {
        t.number for t in complete if not any(_dominates(o.values, t.values) for o in complete)
    }
    front = rh.pareto_front(path)
    assert {row["number"] for row in front} == expected
    assert [row["loss"] for row in front] == sorted(row["loss"] for row in front)
    assert all(t.user_attrs["aux"] == 1.0 for t in complete)  # extra metrics are kept


def test_constraints_use_optuna_set_constraint(tmp_path):
    path = write_study(
        tmp_path,
        fn="two_objectives",
        n_trials=6,
        directions='directions = ["minimize", "minimize"]\nmetrics = ["loss", "size"]',
        sampler='"nsgaii"',
        extra="[constraints]\nsize = 0.8\n",
    )
    study = rh.run(path)
    for t in study.trials:
        assert t.constraints == {"size": pytest.approx(t.values[1] - 0.8)}
    feasible = {t.number for t in study.trials if t.values[1] <= 0.8}
    assert {row["number"] for row in rh.pareto_front(path)} <= feasible


def test_epsilon_budget_prunes_as_soon_as_it_is_passed(tmp_path):
    path = write_study(
        tmp_path,
        fn="private",
        n_trials=8,
        directions='directions = ["maximize", "minimize"]\nmetrics = ["accuracy", "epsilon"]',
        sampler='"random"',
        extra='[space.noise]\ntype = "float"\nlow = 0.5\nhigh = 5.0\n[privacy]\nepsilon_budget = 2.0\ndelta = 1e-5\n',
    )
    study = rh.run(path)
    spent = []
    for t in study.trials:
        noise = t.params["noise"]
        # independent replay: epsilon after k epochs is k / noise; pruned at the first k passing 2
        eps = [k / noise for k in range(1, 6)]
        over = [e for e in eps if e > 2.0]
        assert t.state == (State.PRUNED if over else State.COMPLETE)
        expected = over[0] if over else eps[-1]
        assert t.user_attrs["epsilon"] == pytest.approx(expected)
        spent.append(expected)
    cost = rh.search_privacy_cost(path)
    assert cost.epsilon == pytest.approx(sum(spent)) and cost.n_trials == 8
    assert cost.delta == pytest.approx(8e-5) and "naive composition" in cost.method
    assert cost.composed_epsilon is None  # the trials recorded no mechanism


def _dp_study(tmp_path, space, n_trials=4):
    return write_study(
        tmp_path,
        fn="dp_sgd",
        n_trials=n_trials,
        directions='directions = ["maximize", "minimize"]\nmetrics = ["accuracy", "epsilon"]',
        sampler='"random"',
        extra=space + "[privacy]\ndelta = 1e-5\n",
    )


def test_search_cost_composes_identical_trials_like_one_long_run(tmp_path):
    import research_ext.privacy as rp

    path = _dp_study(tmp_path, '[space.noise]\ntype = "categorical"\nchoices = [1.5]\n')
    rh.run(path)
    cost = rh.search_privacy_cost(path)
    # Four identical 60-step trials compose like one 240-step run (independent single-phase path).
    expected = rp.epsilon(1.5, 0.05, 4 * 60, 4e-5, accountant="rdp")
    assert cost.composed_epsilon == pytest.approx(expected, rel=RTOL_ACCOUNTING_SERIES)
    assert (
        cost.composed_epsilon
        < cost.epsilon
        == pytest.approx(4 * rp.epsilon(1.5, 0.05, 60, 1e-5, accountant="rdp"))
    )
    assert cost.best_epsilon == cost.composed_epsilon


def test_search_cost_composition_of_mixed_trials_beats_the_sum(tmp_path):
    path = _dp_study(tmp_path, '[space.noise]\ntype = "float"\nlow = 0.8\nhigh = 3.0\n', 6)
    rh.run(path)
    cost = rh.search_privacy_cost(path)
    assert cost.n_trials == 6 and cost.composed_epsilon is not None
    assert cost.max_single_epsilon < cost.composed_epsilon < cost.epsilon
    report = rh.report(path, tmp_path / "report")
    assert "Rényi-DP curves instead gives epsilon" in report.read_text()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_dead_trial_is_rerun_with_same_params_and_directory(tmp_path):
    path = write_study(tmp_path, fn="stepped", n_trials=3, args="{ steps = 2 }")
    config = rh.load_config(path)
    handle = open_study(config)
    top_up(handle)
    trial_id = pop_ticket(handle)
    trial = optuna.trial.Trial(handle.study, trial_id)
    x = trial.suggest_float("x", 0.0, 1.0)
    handle.storage.set_trial_system_attr(
        trial_id, OWNER, {"host": socket.gethostname(), "pid": _dead_pid(), "start": None}
    )
    study = rh.run(path)
    states = _states(study)
    assert states == {"COMPLETE": 3, "FAIL": 1}
    dead = study.trials[0]
    assert dead.state == State.FAIL and dead.system_attrs[ENDED] == "crashed"
    retry = [t for t in study.trials if t.system_attrs.get(RETRY_OF) == dead.number]
    assert len(retry) == 1 and retry[0].params["x"] == x
    assert retry[0].system_attrs[TRIAL_DIR] == "trial-00000"
    assert (tmp_path / "s.trials" / "trial-00000" / "pid").exists()


def test_journal_storage_with_our_heartbeat(tmp_path):
    path = write_study(tmp_path, n_trials=3, extra_study='storage = "study.log"')
    config = rh.load_config(path)
    handle = open_study(config)
    assert handle.spec.kind == "journal"
    top_up(handle)
    trial_id = pop_ticket(handle)
    # a trial from another machine whose heartbeat stopped long ago
    handle.storage.set_trial_system_attr(trial_id, OWNER, {"host": "elsewhere", "pid": 1})
    handle.storage.set_trial_system_attr(trial_id, "research_ext:heartbeat", 0.0)
    study = rh.run(path)
    assert _states(study) == {"COMPLETE": 3, "FAIL": 1}
    assert study.trials[0].system_attrs[ENDED] == "stale heartbeat"


def test_ctrl_c_marks_interrupted_and_requeues(tmp_path, monkeypatch):
    path = write_study(tmp_path, n_trials=3)
    objectives = tmp_path / "objectives.py"
    objectives.write_text(
        objectives.read_text()
        + "\nCALLS = []\ndef interrupt_once(params):\n    CALLS.append(params)\n"
        "    if len(CALLS) == 2:\n        raise KeyboardInterrupt\n    return params['x']\n"
    )
    path.write_text(
        path.read_text().replace("objectives.py:quadratic", "objectives.py:interrupt_once")
    )
    with pytest.raises(KeyboardInterrupt):
        rh.run(path)
    study = rh.run(path)  # resumes
    interrupted = [t for t in study.trials if t.system_attrs.get(ENDED) == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].state == State.FAIL
    retry = [t for t in study.trials if t.system_attrs.get(RETRY_OF) == interrupted[0].number]
    assert retry[0].params == interrupted[0].params and retry[0].state == State.COMPLETE
    assert _finished(study) == 3 and _states(study)["FAIL"] == 1


def test_status_matches_the_trials(tmp_path):
    path = write_study(
        tmp_path,
        fn="stepped",
        n_trials=6,
        sampler='"random"',
        extra_study='pruner = { type = "median", n_startup_trials = 1 }',
    )
    study = rh.run(path)
    status = rh.status(path)
    assert status.states["COMPLETE"] == _states(study).get("COMPLETE", 0)
    assert status.states["PRUNED"] == _states(study).get("PRUNED", 0)
    assert status.finished == 6 and status.is_complete
    assert status.best_value == study.best_value and status.best_trial == study.best_trial.number


def test_run_rejects_workers_without_shared_storage(tmp_path):
    config = dataclasses.replace(rh.load_config(write_study(tmp_path)), storage=":memory:")
    with pytest.raises(
        ValueError,
        match=r"run: `workers` must be 1 unless the study has a study file and a shared storage, got workers=2",
    ):
        rh.run(config, workers=2)
    with pytest.raises(ValueError, match=r"run: `workers` must be a positive int, got workers=0"):
        rh.run(config, workers=0)


def test_sys_exit_in_the_objective_fails_the_trial_with_the_reason(tmp_path):
    path = write_study(tmp_path, n_trials=4, sampler='"random"', extra_study="max_failures = 50")
    objectives = tmp_path / "objectives.py"
    objectives.write_text(
        objectives.read_text() + "\ndef exits(params):\n    import sys\n    if params['x'] > 0.5:\n"
        "        sys.exit(7)\n    return params['x']\n"
    )
    path.write_text(path.read_text().replace("objectives.py:quadratic", "objectives.py:exits"))
    study = rh.run(path)
    failed = [t for t in study.trials if t.state == State.FAIL]
    assert failed and _finished(study) == 4 and "RUNNING" not in _states(study)
    for t in failed:
        assert t.params["x"] > 0.5 and t.system_attrs[ENDED] == "error"
        assert "sys.exit(7)" in t.user_attrs["error"]
