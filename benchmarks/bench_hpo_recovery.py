"""Kill-and-recover time: from `kill -9` of a worker mid-trial to its trial re-queued.

Three detections, each on a study whose running trial's process is killed:
* local: the trial's owner ran on this host, its pid is gone -> failed and re-queued at once;
* remote, SQLite/RDB: the owner is on another host -> Optuna's heartbeat (1 s interval, 2 s grace);
* remote, journal: our heartbeat attribute (1 s interval, 2 s grace).
Anchor: raw Optuna without a heartbeat never recovers (the trial stays RUNNING); with one it
re-queues after the grace period, as our remote case does. Prints the median of 3 runs each.
"""

import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import optuna

import research_ext.hpo as rh
from research_ext.hpo._queue import recover
from research_ext.hpo._study import OWNER, open_study

STUDY = """
[study]
n_trials = 2
seed = 0
heartbeat_interval = 1
grace_period = 2
{storage}
[objective]
entry = "obj.py:f"
[space.x]
type = "float"
low = 0.0
high = 1.0
"""
OBJ = "import time\ndef f(params):\n    time.sleep(600)\n    return params['x']\n"


def one(directory: pathlib.Path, mode: str) -> float:
    storage = 'storage = "study.log"' if mode == "remote journal" else ""
    path = directory / "study.toml"
    path.write_text(STUDY.format(storage=storage))
    (directory / "obj.py").write_text(OBJ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "research_ext.hpo", "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = rh.load_config(path)
    deadline = time.monotonic() + 120
    handle = None
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            handle = handle or open_study(config, create=False)
        except Exception:
            continue
        running = handle.storage.get_all_trials(
            handle.study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
        )
        if running and OWNER in running[0].system_attrs:
            break
    assert handle is not None
    victim = running[0]
    if mode.startswith("remote"):  # pretend the owner ran on another machine
        owner = dict(victim.system_attrs[OWNER], host="elsewhere")
        handle.storage.set_trial_system_attr(victim._trial_id, OWNER, owner)
    time.sleep(1.5)  # a heartbeat or two
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.perf_counter()
    while recover(handle) == 0:
        time.sleep(0.05)
    return time.perf_counter() - killed


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = {"bench": "hpo_recovery"}
    for mode in ("local", "remote sqlite", "remote journal"):
        times = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as tmp:
                times.append(one(pathlib.Path(tmp), mode))
        result[mode] = statistics.median(times)
        print(f"{mode:<15} kill -9 -> re-queued in {result[mode]:.2f} s (median of 3)")
    print("raw Optuna without heartbeat: never (the trial stays RUNNING)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
