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
from research_ext.hpo._liveness import is_alive
from research_ext.hpo._study import ENDED, OWNER, RETRY_OF
from tests.hpo.conftest import write_study

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState
REPO = pathlib.Path(__file__).resolve().parents[2]


# Objectives that wait on conditions the test controls, so no test depends on how fast a busy
# machine starts processes or runs trials (each wait has a generous deadline).
GATED = '''

def gated(params, reporter, trial, trial_dir, block_from=0, gate="gate", steps=2):
    """Reports step 0, then waits while the file `gate` exists (trials >= block_from)."""
    import os
    import pathlib
    import time

    (trial_dir / "pid").write_text(str(os.getpid()))
    path = pathlib.Path(__file__).parent / gate
    value = 0.0
    for step in range(steps):
        value = (params["x"] - 0.3) ** 2 + 1.0 / (step + 1)
        reporter.report(value, step)
        deadline = time.monotonic() + 300
        while step == 0 and trial.number >= block_from and path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never opened the gate")
            time.sleep(0.05)
    return value


def meet(params, trial_dir, k=2):
    """Waits until trials of k different processes have started (then (x - 0.3)^2)."""
    import os
    import time

    pids = trial_dir.parent / "pids"
    pids.mkdir(exist_ok=True)
    (pids / str(os.getpid())).touch()
    deadline = time.monotonic() + 300
    while len(list(pids.iterdir())) < k:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {k} processes ran trials")
        time.sleep(0.05)
    return (params["x"] - 0.3) ** 2
'''


def _gated_study(directory: pathlib.Path, **kwargs) -> pathlib.Path:
    path = write_study(directory, **kwargs)
    with (directory / "objectives.py").open("a") as f:
        f.write(GATED)
    return path


def _start_run(path: pathlib.Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "research_ext.hpo", "run", str(path), *extra],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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


def _at_gate(db: pathlib.Path, block_from: int = 0) -> list[tuple[int, dict]]:
    """(number, owner) of every RUNNING trial ``gated`` holds at its gate: number >= block_from,
    step 0 reported (while the gate file exists, such a trial cannot get further)."""
    rows = _query(
        db,
        "SELECT t.number, a.value_json FROM trials t JOIN trial_system_attributes a "
        "ON a.trial_id = t.trial_id AND a.key = 'research_ext:worker' WHERE t.state = 'RUNNING' "
        f"AND t.number >= {int(block_from)} "
        "AND EXISTS (SELECT 1 FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id)",
    )
    return [(number, json.loads(value)) for number, value in rows]


def _wait_at_gate(path: pathlib.Path, block_from: int = 0, count: int = 1) -> list:
    db = path.parent / "study.db"
    _wait_for(lambda: len(_at_gate(db, block_from)) >= count, f"{count} trial(s) at the gate")
    return _at_gate(db, block_from)


def _load(path):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{path.parent / 'study.db'}")


def _check_complete(path, n):
    study = _load(path)
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state in (State.RUNNING, State.WAITING)]
    assert sum(t.state in (State.COMPLETE, State.PRUNED) for t in trials) == n
    return study


def test_kill_9_then_run_again_recovers(tmp_path):
    path = _gated_study(tmp_path, fn="gated", n_trials=3, args="{ block_from = 1 }")
    (tmp_path / "gate").touch()  # trial 0 runs through, trial 1 waits inside the objective
    proc = _start_run(path)
    ((number, _),) = _wait_at_gate(path, block_from=1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (tmp_path / "gate").unlink()
    victim = _load(path).trials[number]
    assert main(["run", str(path)]) == 0
    study = _check_complete(path, 3)
    dead = study.trials[victim.number]
    assert dead.state == State.FAIL and dead.system_attrs[ENDED] == "crashed"
    (retry,) = [t for t in study.trials if t.system_attrs.get(RETRY_OF) == victim.number]
    assert retry.params == victim.params and retry.state == State.COMPLETE


def test_sigterm_requeues_at_once(tmp_path):
    path = _gated_study(tmp_path, fn="gated", n_trials=3, args="{ block_from = 1 }")
    (tmp_path / "gate").touch()
    proc = _start_run(path)
    ((number, _),) = _wait_at_gate(path, block_from=1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143
    (tmp_path / "gate").unlink()
    victim = _load(path).trials[number]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == State.RUNNING]
    assert trials[victim.number].system_attrs[ENDED] == "terminated"
    (waiting,) = [t for t in trials if t.system_attrs.get(RETRY_OF) == victim.number]
    assert waiting.state == State.WAITING and waiting.params == victim.params
    assert main(["run", str(path)]) == 0
    _check_complete(path, 3)


def test_seeded_study_killed_and_resumed_gives_the_trials_of_one_go(tmp_path):
    """kill -9 mid-trial twice, resuming between: the parameters of an uninterrupted run."""
    (tmp_path / "once").mkdir()
    (tmp_path / "killed").mkdir()
    kwargs = {"fn": "gated", "n_trials": 6, "sampler": '{ type = "tpe", n_startup_trials = 3 }'}
    once = rh.run(_gated_study(tmp_path / "once", **kwargs))
    path = _gated_study(tmp_path / "killed", **kwargs, args="{ block_from = 1 }")
    gate = tmp_path / "killed" / "gate"
    for _ in range(2):
        gate.touch()
        proc = _start_run(path)
        _wait_at_gate(path, block_from=1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gate.unlink()
        rh.run(path, n_trials=len(_load(path).trials))  # resume part of the way
    assert main(["run", str(path)]) == 0
    study = _check_complete(path, 6)
    assert len([t for t in study.trials if t.system_attrs.get(ENDED) == "crashed"]) == 2
    complete = [t.params for t in study.trials if t.state == State.COMPLETE]
    assert complete == [t.params for t in once.trials]


def _assert_no_duplicates_or_losses(study, n):
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [State.COMPLETE] * n  # nothing lost, nothing twice
    assert len({t.system_attrs[OWNER]["pid"] for t in trials}) >= 1
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n


@pytest.mark.parametrize("workers", [2, 4])
def test_local_workers_on_sqlite(tmp_path, workers):
    path = _gated_study(tmp_path, fn="meet", n_trials=10, sampler='"random"')
    study = rh.run(path, workers=workers)
    _assert_no_duplicates_or_losses(study, 10)
    pids = {t.system_attrs[OWNER]["pid"] for t in study.trials}
    assert os.getpid() not in pids and len(pids) >= 2  # trials ran in the worker processes


@pytest.mark.parametrize("workers", [2, 4])
def test_local_workers_on_postgresql(tmp_path, postgres_url, workers):
    path = _gated_study(tmp_path, name=f"pg{workers}", fn="meet", n_trials=10, sampler='"random"')
    study = rh.run(path, workers=workers, storage=postgres_url)
    _assert_no_duplicates_or_losses(study, 10)
    status = rh.status(rh.load_config(path, storage=postgres_url))
    assert status.is_complete and status.finished == 10


# three trials are too few for PED-ANOVA's regimes; Optuna says so, rightly, for this tiny size
@pytest.mark.filterwarnings("ignore:Some regimes for parameter:UserWarning")
def test_demo_at_tiny_size(tmp_path):
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
    """A worker joined with the README's options runs trials beside the owner, never the same."""
    path = _gated_study(tmp_path, fn="gated", n_trials=6, sampler='"random"')
    (tmp_path / "gate").touch()  # every trial waits inside the objective until both run one
    owner = _start_run(path)
    _wait_at_gate(path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    joined = subprocess.Popen(
        [sys.executable, "-m", "research_ext.hpo", "worker", str(path), "--storage", storage],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    both = {owner.pid, joined.pid}
    _wait_for(
        lambda: {o["pid"] for _, o in _at_gate(tmp_path / "study.db")} == both,
        "the owner and the joined worker each inside a trial",
    )
    (tmp_path / "gate").unlink()
    output, _ = joined.communicate(timeout=300)
    assert joined.returncode == 0, output
    assert owner.wait(timeout=300) == 0
    study = _check_complete(path, 6)
    complete = [t for t in study.trials if t.state == State.COMPLETE]
    assert {t.system_attrs[OWNER]["pid"] for t in complete} == both
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 6
    for t in study.trials:
        if t.state == State.FAIL:  # a trial both created for the last place: refused, not run
            assert t.system_attrs[ENDED] == "surplus"


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


def test_workers_stop_when_their_run_is_killed(tmp_path):
    """kill -9 of `run --workers 2`: its workers stop, re-queue their trials, and exit."""
    path = _gated_study(tmp_path, fn="gated", n_trials=2, sampler='"random"')
    (tmp_path / "gate").touch()
    owner = _start_run(path, "--workers", "2")
    workers = [o for _, o in _wait_at_gate(path, count=2)]
    assert owner.pid not in {w["pid"] for w in workers}
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    _wait_for(lambda: not any(is_alive(w) for w in workers), "the workers to exit", timeout=60)
    (tmp_path / "gate").unlink()
    study = _load(path)
    stopped = [t for t in study.trials if t.system_attrs.get(ENDED) == "terminated"]
    assert len(stopped) == 2 and not [t for t in study.trials if t.state == State.RUNNING]
    assert main(["run", str(path), "--workers", "2"]) == 0
    _check_complete(path, 2)
