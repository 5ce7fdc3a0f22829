"""`make demo`: tune DP-SGD on scikit-learn's digits for accuracy vs epsilon, crash-safe, in SQLite.

Runs the study `examples/dp_digits.toml` end to end with `research_ext.hpo` (two worker processes
sharing one SQLite file, each trial a DP-SGD run from `research_ext.privacy`), then prints the
Pareto front of test accuracy against epsilon, the privacy cost of the search itself and which
hyperparameters mattered, and writes a Markdown/HTML report with plots.

    python examples/demo.py [--n-trials 36] [--workers 2] [--epochs 10] [--out runs/demo]

Running it again resumes: a finished study is only reported (delete the output directory to
start over), an interrupted one is completed.
"""

import argparse
import dataclasses
import pathlib
import sys
import time

import optuna

import research_ext.hpo as rh

HERE = pathlib.Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, help="finished trials (default: the study file's)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default: the study file's)")
    parser.add_argument("--out", default="runs/demo", help="storage and report directory")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    out = pathlib.Path(args.out).resolve()
    config = rh.load_config(
        HERE / "dp_digits.toml", n_trials=args.n_trials, storage=str(out / "dp_digits.db")
    )
    if args.epochs is not None:
        config = dataclasses.replace(config, args={**config.args, "epochs": args.epochs})
    config = dataclasses.replace(config, trials_dir=out / "trials")
    space = ", ".join(p.name for p in config.space)
    print(
        f"research_ext demo: DP-SGD on sklearn digits, {config.n_trials} trials x "
        f"{config.args['epochs']} epochs, {args.workers} workers"
    )
    print(
        f"  objectives: maximize test accuracy, minimize epsilon (delta={config.delta:g}); "
        f"per-trial budget epsilon <= {config.epsilon_budget:g}"
    )
    print(f"  search space: {space}")
    print(f"  storage: {out / 'dp_digits.db'} (SQLite, WAL; re-running resumes)")
    started = time.perf_counter()
    rh.run(config, workers=args.workers)
    elapsed = time.perf_counter() - started
    status = rh.status(config)
    print(f"\n{status}  [{elapsed:.0f} s]")

    front = rh.pareto_front(config)
    columns = [
        "number",
        "accuracy",
        "epsilon",
        "params.lr",
        "params.max_grad_norm",
        "params.sample_rate",
        "params.width",
        "noise_multiplier_used",
    ]
    rows = [{c.removeprefix("params."): row.get(c) for c in columns} for row in front]
    print("\nPareto front (test accuracy vs epsilon, feasible trials):")
    print(rh.format_rows(rows))

    cost = rh.search_privacy_cost(config)
    if cost is not None:
        print(
            f"\nPrivacy cost of the whole search ({cost.n_trials} trials, delta <= {cost.delta:.1e}):"
            f"\n  naive composition (sum over trials):   epsilon <= {cost.epsilon:.1f}"
        )
        if cost.composed_epsilon is not None:
            print(
                f"  RDP composition of the trials:         epsilon <= {cost.composed_epsilon:.1f}"
            )
        print(
            f"  the most any one trial spent:          epsilon  = {cost.max_single_epsilon:.2f}"
            " (what quoting only the chosen model would claim)"
        )
    try:
        importance = rh.importance(config, metric="accuracy")
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(importance.items())[:4])
        print(f"Importance for accuracy (PED-ANOVA): {top}")
    except ValueError as err:
        print(f"Importance not available: {err}")

    index = rh.report(config, out / "report")
    print(
        f"\nReport: {index} and {index.with_suffix('.html')} "
        f"({len(list(index.parent.glob('*.png')))} plots)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
