"""Seeding that never repeats: resumed runs continue the sequence, every process draws differently."""

import optuna
import pytest

import research_ext.hpo as rh
from research_ext.hpo._queue import next_trial
from research_ext.hpo._seeding import reseed, trial_seed
from research_ext.hpo._study import RETRY_OF, open_study
from research_ext.hpo._worker_loop import SignalGuard, Terminated, run_trial
from tests.hpo.conftest import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState

SAMPLERS = {"random": '"random"', "tpe": '{ type = "tpe", n_startup_trials = 3 }'}

# An objective that sends its own process SIGTERM on the calls listed in `kill_at` (counted in a
# file, so across resumed runs): the in-process equivalent of stopping `run` mid-trial.
SIGTERM_AT = """

def sigterm_at(params, kill_at=(), counter="calls.txt"):
    import os
    import pathlib
    import signal
    import time

    path = pathlib.Path(__file__).parent / counter
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls in kill_at:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises inside the objective before this ends
    return (params["x"] - 0.3) ** 2 + params.get("y", 0.0)
"""


def _complete_params(study):
    return [t.params for t in study.get_trials(deepcopy=False) if t.state == State.COMPLETE]


def _distinct(trials):
    return len({tuple(sorted(t.params.items())) for t in trials})


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_resumed_run_continues_the_sequence(tmp_path, sampler):
    (tmp_path / "once").mkdir()
    (tmp_path / "resumed").mkdir()
    once = rh.run(write_study(tmp_path / "once", n_trials=8, sampler=SAMPLERS[sampler]))
    path = write_study(tmp_path / "resumed", n_trials=8, sampler=SAMPLERS[sampler])
    for n in (2, 5, 8):  # inside TPE's random start-up, past it, to the end
        resumed = rh.run(path, n_trials=n)
    assert _complete_params(resumed) == _complete_params(once)
    assert _distinct(resumed.trials) == 8


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_stopped_and_resumed_any_number_of_times_gives_the_same_trials(tmp_path, sampler):
    (tmp_path / "once").mkdir()
    (tmp_path / "stopped").mkdir()
    once = rh.run(write_study(tmp_path / "once", n_trials=8, sampler=SAMPLERS[sampler]))
    path = write_study(
        tmp_path / "stopped",
        fn="sigterm_at",
        n_trials=8,
        sampler=SAMPLERS[sampler],
        args="{ kill_at = [2, 3, 6, 9] }",
    )
    with (tmp_path / "stopped" / "objectives.py").open("a") as f:
        f.write(SIGTERM_AT)
    stops = 0
    while True:
        try:
            study = rh.run(path)
            break
        except Terminated:
            stops += 1
    assert stops == 4
    trials = study.get_trials(deepcopy=False)
    retries = [t for t in trials if RETRY_OF in t.system_attrs]
    assert len(retries) == 4  # the second stop hit the first retry: a copy of a copy
    assert all(t.params == trials[t.system_attrs[RETRY_OF]].params for t in retries)
    assert _complete_params(study) == _complete_params(once)


def test_two_processes_with_default_options_draw_differently(tmp_path):
    """An owner and a worker that joined without options (worker index 0) never share draws."""
    path = write_study(tmp_path, n_trials=6, sampler='"random"')
    config = rh.load_config(path)
    owner = open_study(config)
    joined = open_study(config, create=False)
    guard = SignalGuard()
    for _ in range(3):
        for handle in (owner, joined):
            trial_id = next_trial(handle)
            assert trial_id is not None
            assert run_trial(handle, trial_id, guard) == "complete"
    trials = owner.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [State.COMPLETE] * 6
    assert _distinct(trials) == 6


def test_reseed_in_place_equals_a_freshly_seeded_sampler():
    for cls, kwargs in [
        (optuna.samplers.TPESampler, {"n_startup_trials": 2}),
        (optuna.samplers.RandomSampler, {}),
    ]:
        seed = trial_seed(0, 5)
        used = cls(seed=1, **kwargs)
        reseed(used, seed)
        fresh = cls(seed=seed, **kwargs)
        draws = []
        for sampler in (used, fresh):
            study = optuna.create_study(sampler=sampler)
            study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
            draws.append([t.params for t in study.trials])
        assert draws[0] == draws[1]
