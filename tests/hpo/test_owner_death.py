"""A worker never waits forever: joined workers carry on alone, forked ones stop with their run."""

import optuna

import research_ext.hpo as rh
from research_ext.hpo._study import OWNER, open_study
from tests.hpo.conftest import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState


def test_a_joined_worker_without_an_owner_finishes_the_study(tmp_path):
    path = write_study(tmp_path, n_trials=4, sampler='"random"')
    rh.run(path, n_trials=1)  # the study exists; its run is gone
    # that run stored its target (1) in the study; the worker is told the study file's 4
    ran = rh.worker(path, n_trials=4, patience=0.2, poll_interval=0.05, time_left=60)
    assert ran == 3
    trials = open_study(rh.load_config(path)).study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [State.COMPLETE] * 4
    assert len({t.system_attrs[OWNER]["pid"] for t in trials}) == 1  # all in this process


def test_worker_processes_get_the_storage_and_their_owner_through_the_environment(tmp_path):
    import os

    from research_ext.hpo._liveness import OWNER_ENV
    from research_ext.hpo._owner_loop import _worker_command, _worker_env
    from research_ext.hpo._storage import STORAGE_ENV

    storage = f"sqlite:///{tmp_path / 'secret-name.db'}"
    path = write_study(tmp_path, n_trials=1)
    handle = open_study(rh.load_config(path, storage=storage))
    command = _worker_command(handle, 0, None)
    assert not any("secret-name" in part for part in command) and "--storage" not in command
    env = _worker_env(handle)
    assert "secret-name" in env[STORAGE_ENV] and env[OWNER_ENV] == str(os.getpid())
