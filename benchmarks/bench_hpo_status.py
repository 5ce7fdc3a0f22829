"""`status` on a 10k-trial study: one GROUP BY query against loading every trial.

Builds a 10,000-trial study in our default storage (SQLite, WAL), then times, interleaved,
`rh.status` (warm, as `research-ext tune status` answers after its imports) and the naive
`len(study.get_trials())` count through Optuna. Target (issue 4): status < 0.5 s.
"""

import json
import pathlib
import statistics
import sys
import tempfile
import time

import optuna

import research_ext.hpo as rh

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
STUDY = """
[study]
n_trials = {n}
[objective]
entry = "math:sqrt"
[space.x]
type = "float"
low = 0.0
high = 1.0
"""


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "big.toml"
        path.write_text(STUDY.format(n=N))
        config = rh.load_config(path, validate_objective=False)
        handle = rh.open_study(config)
        distribution = optuna.distributions.FloatDistribution(0.0, 1.0)
        start = time.perf_counter()
        handle.study.add_trials(
            [
                optuna.trial.create_trial(
                    params={"x": i / N}, distributions={"x": distribution}, value=float(i % 97)
                )
                for i in range(N)
            ]
        )
        print(f"built {N} trials in {time.perf_counter() - start:.0f} s")
        ours, naive = [], []
        for _ in range(3):
            start = time.perf_counter()
            status = rh.status(config)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            study = optuna.load_study(study_name=config.name, storage=handle.spec.url)
            count = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
            naive.append(time.perf_counter() - start)
        assert status.finished == count == N
        med_ours, med_naive = statistics.median(ours), statistics.median(naive)
        print(f"rh.status: {med_ours:.3f} s   load_study + get_trials: {med_naive:.3f} s")
        print(f"ratio ours / naive = {med_ours / med_naive:.3f}")
        print(
            json.dumps(
                {
                    "bench": "hpo_status",
                    "n_trials": N,
                    "status_s": med_ours,
                    "naive_s": med_naive,
                    "ratio": med_ours / med_naive,
                }
            )
        )


if __name__ == "__main__":
    main()
