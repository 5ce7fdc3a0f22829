"""Many processes on one study: exactly ``n_trials`` finished, a new study created safely."""

import multiprocessing
import warnings

import optuna
import pytest

import research_ext.hpo as rh
from research_ext.hpo import _queue
from research_ext.hpo._queue import next_trial
from research_ext.hpo._study import ENDED, counts, n_done, open_study
from research_ext.hpo._worker_loop import SignalGuard, run_trial
from tests.hpo.conftest import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState


def test_two_owners_racing_for_the_last_trial_finish_exactly_n(tmp_path, monkeypatch):
    """Both owners count 1 of 2 finished before either creates its trial: one trial is surplus."""
    path = write_study(tmp_path, n_trials=2, sampler='"random"')
    config = rh.load_config(path)
    first, second = open_study(config), open_study(config, create=False)
    guard = SignalGuard()
    assert run_trial(first, next_trial(first), guard) == "complete"
    stale = counts(first)
    monkeypatch.setattr(_queue, "counts", lambda handle: dict(stale))
    ids = [next_trial(first), next_trial(second)]
    monkeypatch.undo()
    assert None not in ids and ids[0] != ids[1]
    outcomes = [run_trial(h, i, guard) for h, i in zip((first, second), ids, strict=True)]
    assert sorted(outcomes) == ["complete", "surplus"]
    trials = first.study.get_trials(deepcopy=False)
    assert n_done(counts(first)) == 2
    (surplus,) = [t for t in trials if t.state == State.FAIL]
    assert surplus.system_attrs[ENDED] == "surplus" and surplus._trial_id == max(ids)


def _open_at_once(path, barrier, results):
    try:
        barrier.wait(timeout=120)
        handle = open_study(rh.load_config(path))
        results.put(("ok", handle.study_id))
    except BaseException as err:  # report every failure to the parent
        results.put(("error", repr(err)))


@pytest.mark.slow  # six processes (and a PostgreSQL server): ~10 s on a busy machine
@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_processes_creating_a_new_study_at_once(tmp_path, request, storage):
    extra = ""
    if storage == "postgresql":
        url = request.getfixturevalue("postgres_url")
        extra = f'storage = "{url}"'
    path = write_study(
        tmp_path,
        name=f"race-{tmp_path.name}",
        extra_study=extra,
        directions='directions = ["minimize", "minimize"]\nmetrics = ["loss", "size"]',
        sampler='"random"',
    )
    context = multiprocessing.get_context("fork")
    n = 6
    barrier, results = context.Barrier(n), context.Queue()
    with warnings.catch_warnings():  # fork with threads alive (Python >= 3.12)
        warnings.simplefilter("ignore", DeprecationWarning)
        procs = [
            context.Process(target=_open_at_once, args=(path, barrier, results)) for _ in range(n)
        ]
        for proc in procs:
            proc.start()
    outcomes = [results.get(timeout=300) for _ in range(n)]
    for proc in procs:
        proc.join(timeout=60)
    assert [kind for kind, _ in outcomes] == ["ok"] * n, outcomes
    assert len({study_id for _, study_id in outcomes}) == 1
    study = optuna.load_study(
        study_name=f"race-{tmp_path.name}", storage=open_study(rh.load_config(path)).storage
    )
    assert study.metric_names == ["loss", "size"]
