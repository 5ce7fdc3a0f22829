"""Worker scaling of `research_ext.hpo.run`: 2 and 4 local workers against 1, on a 0.2 s objective.

Storages: the default (SQLite next to the study file) and PostgreSQL (a throwaway server started
with initdb + pg_ctl on 127.0.0.1 when the binaries exist). Sampler: TPE (the default), seeded.
Each configuration runs twice, interleaved 1, 2, 4, 1, 2, 4 workers; medians of wall time for
the whole `run` (study creation, workers' start, every trial, shutdown).
Targets (issue 4): >= 1.9x / >= 3.5x with 2 / 4 workers on the default storage, >= 3.5x with 4
on PostgreSQL.
"""

import contextlib
import json
import pathlib
import statistics
import sys
import tempfile
import time

import optuna

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repo's tests/

import research_ext.hpo as rh
from tests.postgres import PostgresUnavailableError, throwaway_postgres  # noqa: E402

N_TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 40
REPEATS = 2
STUDY = """
[study]
name = "{name}"
n_trials = {n}
seed = 0
[objective]
entry = "obj.py:f"
args = {{ sleep = 0.2 }}
[space.x]
type = "float"
low = -5.0
high = 5.0
[space.width]
type = "int"
low = 16
high = 128
step = 16
"""
OBJ = "import time\ndef f(params, sleep):\n    time.sleep(sleep)\n    return params['x'] ** 2\n"


def timed_run(directory: pathlib.Path, name: str, workers: int, storage: str | None) -> float:
    path = directory / f"{name}.toml"
    path.write_text(STUDY.format(name=name, n=N_TRIALS))
    config = rh.load_config(path, storage=storage)
    start = time.perf_counter()
    study = rh.run(config, workers=workers, show_progress=False)
    elapsed = time.perf_counter() - start
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.COMPLETE] * N_TRIALS, "lost or duplicated trials"
    return elapsed


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict = {"bench": "hpo_workers", "n_trials": N_TRIALS, "objective_s": 0.2}
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        (root / "obj.py").write_text(OBJ)
        with contextlib.ExitStack() as stack:
            storages: dict[str, str | None] = {"sqlite (default)": None}
            try:
                storages["postgresql"] = stack.enter_context(throwaway_postgres())
            except PostgresUnavailableError as err:
                print(f"postgresql skipped: {err}")
            for label, storage in storages.items():
                times: dict[int, list[float]] = {1: [], 2: [], 4: []}
                for rep in range(REPEATS):
                    for workers in (1, 2, 4):
                        name = f"s{label[:2]}{rep}w{workers}"
                        times[workers].append(timed_run(root, name, workers, storage))
                med = {k: statistics.median(v) for k, v in times.items()}
                ideal = N_TRIALS * 0.2
                print(f"{label}: {N_TRIALS} trials x 0.2 s (serial ideal {ideal:.1f} s)")
                for k in (1, 2, 4):
                    print(f"  {k} worker(s): {med[k]:6.2f} s  speedup {med[1] / med[k]:4.2f}x")
                results[label] = {f"speedup_{k}": med[1] / med[k] for k in (2, 4)}
                results[label]["wall_s"] = med
    print(json.dumps(results))


if __name__ == "__main__":
    main()
