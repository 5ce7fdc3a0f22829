"""Per-trial overhead of `research_ext.hpo.run` against raw Optuna on the same storage.

Anchors, all with a trivial objective and the same seeded TPE sampler:
* raw `study.optimize` on the same storage as ours (SQLite, WAL, synchronous=NORMAL, heartbeat);
* raw `study.optimize` on SQLite as Optuna opens it (WAL, default sync), without/with heartbeat;
* raw `study.optimize` in memory (what the default storage costs on top of no storage at all).
Ours: `rh.run` on the default storage (SQLite next to the study file, WAL, heartbeats, tickets).
Runs are interleaved (ours, anchors, ours, ...) and medians reported, so machine noise cancels;
wall and CPU time of this process (heartbeat threads included: the steadier figure on a loaded
machine) are both shown, with the load average. Each runner is timed from opening its storage.
Targets (issues 4 and 12): ours vs raw with the same storage <= 5% or <= 0.5 ms per trial.
"""

import functools
import json
import os
import pathlib
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings

import optuna

import research_ext.hpo as rh
from research_ext.hpo._storage_open import connect_sqlite

N_TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
REPEATS = 3
STUDY = """
[study]
n_trials = {n}
sampler = {{ type = "tpe", n_startup_trials = 10 }}
seed = 0
[objective]
entry = "obj.py:f"
[space.x]
type = "float"
low = -5.0
high = 5.0
[space.y]
type = "int"
low = 0
high = 10
"""
OBJ = "def f(params):\n    return (params['x'] - 1.0) ** 2 + params['y']\n"


def objective(trial):
    return (trial.suggest_float("x", -5.0, 5.0) - 1.0) ** 2 + trial.suggest_int("y", 0, 10)


def raw(storage_kind: str, directory: pathlib.Path) -> float:
    # Timed from opening the storage, as `ours` is timed from `rh.run` (which opens it): both
    # sides pay for creating the schema and the study once.
    start = time.perf_counter()
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=10)
    if storage_kind == "memory":
        storage = None
    else:
        path = directory / f"raw-{storage_kind}.db"
        connection = sqlite3.connect(path)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.close()
        heartbeat = "heartbeat" in storage_kind
        engine_kwargs: dict = {"connect_args": {"timeout": 60}}
        if storage_kind == "same-storage":  # exactly our default: WAL + synchronous=NORMAL
            engine_kwargs = {"creator": functools.partial(connect_sqlite, str(path))}
            heartbeat = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = optuna.storages.RDBStorage(
                f"sqlite:///{path}",
                engine_kwargs=engine_kwargs,
                heartbeat_interval=2 if heartbeat else None,
                grace_period=20 if heartbeat else None,
            )
    study = optuna.create_study(storage=storage, sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=N_TRIALS)
    return time.perf_counter() - start


def ours(directory: pathlib.Path) -> float:
    (directory / "obj.py").write_text(OBJ)
    path = directory / "ours.toml"
    path.write_text(STUDY.format(n=N_TRIALS))
    config = rh.load_config(path)
    start = time.perf_counter()
    rh.run(config, show_progress=False)
    return time.perf_counter() - start


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_before = os.getloadavg()
    kinds = ["same-storage", "sqlite", "sqlite+heartbeat", "memory"]
    times: dict[str, list[float]] = {k: [] for k in ["ours", *kinds]}
    cpu: dict[str, list[float]] = {k: [] for k in ["ours", *kinds]}
    for _ in range(REPEATS):
        for name in ["ours", *kinds]:
            with tempfile.TemporaryDirectory() as tmp:
                d = pathlib.Path(tmp)
                before = time.process_time()
                times[name].append(ours(d) if name == "ours" else raw(name, d))
                cpu[name].append(time.process_time() - before)
    med = {k: statistics.median(v) for k, v in times.items()}
    per = {k: 1e3 * v / N_TRIALS for k, v in med.items()}
    per_cpu = {k: 1e3 * statistics.median(v) / N_TRIALS for k, v in cpu.items()}
    print(f"{N_TRIALS} trials, TPE, trivial objective; median of {REPEATS} interleaved runs")
    for k in times:
        print(f"  {k:<18} {med[k]:7.2f} s  {per[k]:6.2f} ms/trial  ({per_cpu[k]:6.2f} ms CPU)")
    result: dict = {
        "bench": "hpo_overhead",
        "n_trials": N_TRIALS,
        "ms_per_trial": per,
        "cpu_ms_per_trial": per_cpu,
    }
    for anchor in kinds:
        ratio = med["ours"] / med[anchor]
        extra = per["ours"] - per[anchor]
        cpu_ratio = per_cpu["ours"] / per_cpu[anchor]
        result[f"ratio_vs_{anchor}"] = ratio
        result[f"extra_ms_vs_{anchor}"] = extra
        result[f"cpu_ratio_vs_{anchor}"] = cpu_ratio
        print(
            f"  ours / raw {anchor:<17} = {ratio:5.2f}x  ({extra:+.2f} ms/trial); "
            f"CPU {cpu_ratio:5.2f}x ({per_cpu['ours'] - per_cpu[anchor]:+.2f} ms/trial)"
        )
    load = {"before": load_before, "after": os.getloadavg()}
    result["load_average"] = load
    shown = {k: " ".join(f"{x:.2f}" for x in v) for k, v in load.items()}
    print(f"  load average (1, 5, 15 min): before {shown['before']}, after {shown['after']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
