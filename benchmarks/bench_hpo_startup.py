"""Start-up and per-trial cost of `research-ext tune` against plain Optuna on the same storage.

Three comparisons, each interleaved (ours, anchor, ours, ...) with medians and ratios printed:

* `research-ext tune --help` in a fresh interpreter vs Optuna's own CLI (`optuna --help`);
* a whole run of a 1-trial study in a fresh interpreter (`research-ext tune run`, SQLite next to
  the study file) vs a script that imports optuna, creates the same study on SQLite and optimizes
  one trial: the start-up a researcher waits for;
* the per-trial overhead of `rh.run` vs `study.optimize` on the same storage (SQLite, WAL,
  synchronous=NORMAL, heartbeat), reusing bench_hpo_overhead.py's two runners: wall and CPU
  milliseconds a trial (CPU time is the steadier figure on a loaded machine), with the load
  average before and after.

Goals (issue 12): --help <= 0.5 s; a run starts <= 0.5 s later than plain Optuna; per-trial
overhead <= 5 % or <= 0.5 ms a trial. Usage: `python benchmarks/bench_hpo_startup.py [N_TRIALS]`.
"""

import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import bench_hpo_overhead as overhead  # noqa: E402

N_TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
REPEATS = 5
TRIAL_REPEATS = 5
PLAIN_RUN = """
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(storage=f"sqlite:///{sys.argv[1]}", study_name="plain",
                            sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10))
study.optimize(lambda t: (t.suggest_float("x", -5.0, 5.0) - 1.0) ** 2
               + t.suggest_int("y", 0, 10), n_trials=1)
print(len(study.trials))
"""


_CPU: dict[str, list[float]] = {}


def _wall(command: list[str], cwd: pathlib.Path | None = None, label: str = "") -> float:
    """Wall seconds of a fresh process; its CPU seconds (user + sys) go to ``_CPU[label]``.

    CPU time is the steadier figure on a loaded machine: waiting for a core does not count.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=cwd, env=os.environ.copy())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    _CPU.setdefault(label, []).append(cpu)
    return wall


def _optuna_cli() -> list[str]:
    script = pathlib.Path(sys.executable).with_name("optuna")
    return [str(script)] if script.exists() else [sys.executable, "-m", "optuna.cli"]


def startup() -> dict[str, dict[str, float]]:
    """Median wall seconds of --help and of a whole 1-trial run, ours vs plain Optuna."""
    times: dict[str, list[float]] = {
        k: [] for k in ("help_ours", "help_optuna", "run_ours", "run_optuna")
    }
    ours_cli = [sys.executable, "-m", "research_ext.cli", "tune"]
    for _ in range(REPEATS):
        times["help_ours"].append(_wall([*ours_cli, "--help"], label="help_ours"))
        times["help_optuna"].append(_wall([*_optuna_cli(), "--help"], label="help_optuna"))
        with tempfile.TemporaryDirectory() as tmp:
            d = pathlib.Path(tmp)
            (d / "obj.py").write_text(overhead.OBJ)
            (d / "s.toml").write_text(overhead.STUDY.format(n=1))
            times["run_ours"].append(
                _wall([*ours_cli, "run", "s.toml", "--no-progress"], d, "run_ours")
            )
            times["run_optuna"].append(
                _wall([sys.executable, "-c", PLAIN_RUN, str(d / "plain.db")], d, "run_optuna")
            )
    return {
        k: {"median_s": statistics.median(v), "median_cpu_s": statistics.median(_CPU[k])}
        for k, v in times.items()
    }


def per_trial() -> dict[str, dict[str, float]]:
    """Median ms a trial of rh.run and of study.optimize on the same storage, wall and CPU.

    Both runners are timed from opening the storage to the last trial told (bench_hpo_overhead.py),
    in this process, alternately; CPU time (this process's, its heartbeat threads included) is
    the steadier figure on a loaded machine.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overhead.N_TRIALS = N_TRIALS
    runners = {
        "ours": overhead.ours,
        "optuna": lambda d: overhead.raw("same-storage", d),
    }
    wall: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(TRIAL_REPEATS):
        for name, runner in runners.items():
            with tempfile.TemporaryDirectory() as tmp:
                before = time.process_time()
                wall[name].append(runner(pathlib.Path(tmp)))
                cpu[name].append(time.process_time() - before)
    return {
        "wall": {k: 1e3 * statistics.median(v) / N_TRIALS for k, v in wall.items()},
        "cpu": {k: 1e3 * statistics.median(v) / N_TRIALS for k, v in cpu.items()},
    }


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def main() -> None:
    load_before = os.getloadavg()
    s = startup()
    p = per_trial()
    rows = [
        ("tune --help vs optuna --help", s["help_ours"]["median_s"], s["help_optuna"]["median_s"]),
        ("1-trial run, fresh process", s["run_ours"]["median_s"], s["run_optuna"]["median_s"]),
        ("--help, CPU seconds", s["help_ours"]["median_cpu_s"], s["help_optuna"]["median_cpu_s"]),
        (
            "1-trial run, CPU seconds",
            s["run_ours"]["median_cpu_s"],
            s["run_optuna"]["median_cpu_s"],
        ),
    ]
    print(f"start-up: median of {REPEATS} interleaved fresh processes (wall, then CPU seconds)")
    print(f"  {'':<30} {'ours':>8} {'optuna':>8} {'ratio':>7} {'extra':>8}")
    for name, ours, anchor in rows:
        print(
            f"  {name:<30} {ours:8.3f} {anchor:8.3f} {ours / anchor:6.2f}x {ours - anchor:+7.3f}s"
        )
    print(f"per trial: {N_TRIALS} trials, TPE, trivial objective, same SQLite storage (ms/trial)")
    print(f"  median of {TRIAL_REPEATS} interleaved runs in this process")
    for kind in ("wall", "cpu"):
        ours, anchor = p[kind]["ours"], p[kind]["optuna"]
        label = f"rh.run vs study.optimize, {kind}"
        print(
            f"  {label:<30} {ours:8.3f} {anchor:8.3f} {ours / anchor:6.2f}x {ours - anchor:+7.3f}ms"
        )
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): before {_load(load_before)}, after {_load(load_after)}")
    result = {
        "bench": "hpo_startup",
        "help_s": {"ours": rows[0][1], "optuna": rows[0][2]},
        "run_s": {"ours": rows[1][1], "optuna": rows[1][2], "extra": rows[1][1] - rows[1][2]},
        "help_cpu_s": {"ours": rows[2][1], "optuna": rows[2][2]},
        "run_cpu_s": {"ours": rows[3][1], "optuna": rows[3][2], "extra": rows[3][1] - rows[3][2]},
        "ms_per_trial": {
            kind: {
                **p[kind],
                "extra": p[kind]["ours"] - p[kind]["optuna"],
                "ratio": p[kind]["ours"] / p[kind]["optuna"],
            }
            for kind in ("wall", "cpu")
        },
        "load_average": {"before": load_before, "after": load_after},
        "goals": {"help_s": 0.5, "run_extra_s": 0.5, "trial_ratio": 1.05, "trial_extra_ms": 0.5},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
