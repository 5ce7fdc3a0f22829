"""Real processes: kill -9 and SIGTERM of a running study, K local workers on SQLite/PostgreSQL."""

import importlib.util
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest

import research_ext.hpo as rh
from research_ext.hpo._cli import main
from research_ext.hpo._study import ENDED, OWNER, RETRY_OF, is_alive
from tests.hpo.conftest import write_study

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState
REPO = pathlib.Path(__file__).resolve().parents[2]


def _start_run(path: pathlib.Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "research_ext.hpo", "run", str(path)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_running_trial(path: pathlib.Path, timeout: float = 120.0) -> int:
    """Number of the running trial once its objective started (read-only sqlite3 polling)."""
    db = path.parent / "study.db"
    query = (
        "SELECT t.number FROM trials t JOIN trial_system_attributes a ON a.trial_id = t.trial_id "
        "WHERE t.state = 'RUNNING' AND a.key = 'research_ext:worker' AND "
        "(SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE') > 0"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if not db.exists():
            continue
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as connection:
                rows = connection.execute(query).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            continue
        if rows:
            time.sleep(0.3)  # let the objective start
            return rows[0][0]
    raise AssertionError("no trial started running")


def _load(path):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{path.parent / 'study.db'}")


def _check_complete(path, n):
    study = _load(path)
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (State.RUNNING, State.WAITING)]
    assert sum(t.state in (State.COMPLETE, State.PRUNED) for t in trials) == n
    return study


def test_kill_9_then_run_again_recovers(tmp_path):
    path = write_study(tmp_path, fn="stepped", n_trials=3, args="{ steps = 3, sleep = 0.3 }")
    proc = _start_run(path)
    number = _wait_for_running_trial(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    victim = _load(path).trials[number]
    started = time.monotonic()
    assert main(["run", str(path)]) == 0
    assert time.monotonic() - started < 60
    study = _check_complete(path, 3)
    dead = study.trials[victim.number]
    assert dead.state == State.FAIL and dead.system_attrs[ENDED] == "crashed"
    (retry,) = [t for t in study.trials if t.system_attrs.get(RETRY_OF) == victim.number]
    assert retry.params == victim.params and retry.state == State.COMPLETE


def test_sigterm_requeues_at_once(tmp_path):
    path = write_study(tmp_path, fn="stepped", n_trials=3, args="{ steps = 3, sleep = 0.3 }")
    proc = _start_run(path)
    number = _wait_for_running_trial(path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    victim = _load(path).trials[number]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == State.RUNNING]
    assert trials[victim.number].system_attrs[ENDED] == "terminated"
    (waiting,) = [t for t in trials if t.system_attrs.get(RETRY_OF) == victim.number]
    assert waiting.state == State.WAITING and waiting.params == victim.params
    assert main(["run", str(path)]) == 0
    _check_complete(path, 3)


def _assert_no_duplicates_or_losses(study, n):
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [State.COMPLETE] * n  # nothing lost, nothing twice
    assert len({t.system_attrs[OWNER]["pid"] for t in trials}) >= 1
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n


@pytest.mark.parametrize("workers", [2, 4])
def test_local_workers_on_sqlite(tmp_path, workers):
    path = write_study(tmp_path, n_trials=10, args="{ sleep = 0.2 }", sampler='"random"')
    study = rh.run(path, workers=workers)
    _assert_no_duplicates_or_losses(study, 10)
    pids = {t.system_attrs[OWNER]["pid"] for t in study.trials}
    assert os.getpid() not in pids and len(pids) >= 2  # trials ran in the worker processes


@pytest.mark.parametrize("workers", [2, 4])
def test_local_workers_on_postgresql(tmp_path, postgres_url, workers):
    path = write_study(
        tmp_path, name=f"pg{workers}", n_trials=10, args="{ sleep = 0.2 }", sampler='"random"'
    )
    study = rh.run(path, workers=workers, storage=postgres_url)
    _assert_no_duplicates_or_losses(study, 10)
    status = rh.status(rh.load_config(path, storage=postgres_url))
    assert status.is_complete and status.finished == 10


def test_demo_at_tiny_size(tmp_path):
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn (research-ext[examples]) is not installed")
    spec = importlib.util.spec_from_file_location("demo", REPO / "examples" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = tmp_path / "demo"
    assert demo.main(["--n-trials", "3", "--epochs", "1", "--workers", "1", "--out", str(out)]) == 0
    config = rh.load_config(
        REPO / "examples" / "dp_digits.toml", storage=str(out / "dp_digits.db"), n_trials=3
    )
    status = rh.status(config)
    assert status.finished == 3 and status.is_complete
    assert (out / "report" / "index.html").exists()
    assert (out / "report" / "pareto_front.png").stat().st_size > 2000


def test_worker_joins_a_running_study(tmp_path):
    path = write_study(tmp_path, n_trials=10, args="{ sleep = 1.0 }", sampler='"random"')
    owner = _start_run(path)
    _wait_for_running_trial(path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    joined = subprocess.run(
        [sys.executable, "-m", "research_ext.hpo", "worker", str(path), "--storage", storage],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert joined.returncode == 0, joined.stderr
    assert owner.wait(timeout=120) == 0
    study = _check_complete(path, 10)
    pids = {t.system_attrs[OWNER]["pid"] for t in study.trials}
    assert owner.pid in pids and len(pids) == 2  # the joining worker ran trials too
    assert len(study.trials) == 10


def _wait_for(condition, what, timeout=300.0):
    """Poll ``condition()`` until it is true; fail naming ``what`` after a generous deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _query(db: pathlib.Path, sql: str) -> list:
    """Rows of ``sql`` on the study database read-only (nothing if it does not exist yet)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as connection:
            return connection.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or busy
        return []


def test_runs_and_workers_on_one_study_finish_exactly_n_trials(tmp_path):
    """Two `run` processes creating the study at once and a joined worker: exactly n finished."""
    path = write_study(tmp_path, n_trials=30, args="{ sleep = 0.05 }", sampler='"random"')
    command = [sys.executable, "-m", "research_ext.hpo"]
    logs = [open(tmp_path / f"log{i}.txt", "w") for i in range(3)]  # noqa: SIM115
    procs = [
        subprocess.Popen([*command, "run", str(path)], cwd=REPO, stdout=log, stderr=log)
        for log in logs[:2]
    ]
    db = tmp_path / "study.db"
    _wait_for(lambda: _query(db, "SELECT COUNT(*) FROM trials")[:1] not in ([], [(0,)]), "a trial")
    storage = f"sqlite:///{db}"
    procs.append(
        subprocess.Popen(
            [*command, "worker", str(path), "--storage", storage],
            cwd=REPO,
            stdout=logs[2],
            stderr=logs[2],
        )
    )
    codes = [proc.wait(timeout=600) for proc in procs]
    for log in logs:
        log.close()
    assert codes == [0, 0, 0], [(tmp_path / f"log{i}.txt").read_text()[-2000:] for i in range(3)]
    study = _check_complete(path, 30)
    complete = [t for t in study.trials if t.state == State.COMPLETE]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 30
    for t in study.trials:
        if t.state == State.FAIL:  # only refused surplus trials fail here: they ran nothing
            assert t.system_attrs[ENDED] == "surplus" and not t.params


def _running_owners(db: pathlib.Path) -> list[dict]:
    rows = _query(
        db,
        "SELECT a.value_json FROM trials t JOIN trial_system_attributes a "
        "ON a.trial_id = t.trial_id AND a.key = 'research_ext:worker' WHERE t.state = 'RUNNING'",
    )
    return [json.loads(value) for (value,) in rows]


def test_workers_stop_when_their_run_is_killed(tmp_path):
    """kill -9 of `run --workers 2`: its workers stop, re-queue their trials, and exit."""
    path = write_study(
        tmp_path, fn="stepped", n_trials=2, args="{ steps = 40, sleep = 0.25 }", sampler='"random"'
    )
    owner = subprocess.Popen(
        [sys.executable, "-m", "research_ext.hpo", "run", str(path), "--workers", "2"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = tmp_path / "study.db"
    _wait_for(lambda: len(_running_owners(db)) == 2, "both workers to run a trial")
    workers = _running_owners(db)
    assert owner.pid not in {w["pid"] for w in workers}
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    _wait_for(lambda: not any(is_alive(w) for w in workers), "the workers to exit", timeout=60)
    study = _load(path)
    stopped = [t for t in study.trials if t.system_attrs.get(ENDED) == "terminated"]
    assert len(stopped) == 2 and not [t for t in study.trials if t.state == State.RUNNING]
    assert main(["run", str(path), "--workers", "2"]) == 0
    _check_complete(path, 2)
