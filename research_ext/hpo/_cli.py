"""``research-ext tune``: run and inspect Optuna studies from a study file.

Exit codes: 0 success, 1 a bad study file or storage argument, 2 bad usage, 3 the objective
failed ``max_failures`` times, 4 the storage failed (damaged, not writable, wrong password, server
unreachable: one line says which and what to do), 130 Ctrl-C, 143 SIGTERM (running trials are
re-queued in both cases).

The storage comes from ``--storage``, else the ``RESEARCH_EXT_STORAGE`` environment variable,
else the study file; a password is never printed (``postgresql://user:***@host/db``).
"""

import argparse
import json
import logging
import pathlib
import sys
from collections.abc import Callable, Sequence

__all__ = ["EXIT_STORAGE", "main"]

#: exit code of a storage fault (damaged file, not writable, refused password, server gone)
EXIT_STORAGE = 4

_EPILOG = (
    "Storage: a URL (sqlite:///x.db, postgresql://user@host/db) or a path (.db -> SQLite, "
    ".log -> journal); without --storage, $RESEARCH_EXT_STORAGE, else the study file's. "
    "Exit codes: 1 bad study file, 2 usage, 3 objective failures, 4 storage fault."
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", metavar="STUDY.toml", help="the study file")
    parser.add_argument(
        "--storage",
        help="storage URL or path (default: $RESEARCH_EXT_STORAGE, else the study file's)",
    )
    parser.add_argument("--study", dest="study_name", help="study name (default: the study file's)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="research-ext tune",
        description="Run and inspect Optuna studies from a TOML study file.",
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="create or resume a study; run it to n_trials finished trials")
    _common(p)
    p.add_argument("--n-trials", type=int, help="target number of finished trials")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None)
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log every trial, also on a terminal (without a terminal every trial is logged)",
    )
    p.set_defaults(handler=_run)

    p = sub.add_parser("worker", help="join a running study (e.g. from another machine)")
    _common(p)
    p.add_argument("--n-trials", type=int, help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help="worker index (seeds follow the trial)")
    p.add_argument("--exit-when-idle", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--time-left", type=float, help=argparse.SUPPRESS)
    p.add_argument("--overrides", help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="do not log the trials run")
    p.set_defaults(handler=_worker)

    p = sub.add_parser("status", help="trials per state against the target, best so far")
    _common(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=_status)

    p = sub.add_parser("best", help="the best trial (or the Pareto set)")
    _common(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=_best)

    p = sub.add_parser("trials", help="one row per trial")
    _common(p)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument(
        "--state",
        action="append",
        choices=("complete", "pruned", "fail", "running", "waiting"),
        help="only trials in this state (repeatable)",
    )
    p.set_defaults(handler=_trials)

    p = sub.add_parser("pareto", help="the Pareto front of a multi-objective study")
    _common(p)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(handler=_pareto)

    p = sub.add_parser("importance", help="hyperparameter importance (PED-ANOVA or fANOVA)")
    _common(p)
    p.add_argument("--evaluator", choices=("ped_anova", "fanova"), default="ped_anova")
    p.add_argument("--metric", help="objective to explain (multi-objective studies)")
    p.set_defaults(handler=_importance)

    p = sub.add_parser(
        "export", help="the best parameters as TOML or JSON, or every trial for TensorBoard"
    )
    _common(p)
    p.add_argument("--format", choices=("toml", "json", "tensorboard"), default="toml")
    p.add_argument(
        "dir",
        nargs="?",
        metavar="DIR",
        help="with --format tensorboard: the log directory, one run per trial (or -o DIR; "
        "DIR comes right after STUDY.toml)",
    )
    p.add_argument("-o", "--output", help="write to this file (or DIR) instead of stdout")
    p.set_defaults(handler=_export)

    p = sub.add_parser("report", help="a Markdown/HTML report with PNG plots")
    _common(p)
    p.add_argument("out_dir", metavar="OUT_DIR", help="directory to write")
    p.set_defaults(handler=_report)
    return parser


def _config(args: argparse.Namespace, validate_objective: bool = False):  # type: ignore[no-untyped-def]
    from research_ext.hpo._config import load_config
    from research_ext.hpo._storage import absolute_storage, storage_from_env

    storage = args.storage if args.storage is not None else storage_from_env()
    if storage is not None:
        args.storage_url = storage = absolute_storage(storage)
    config = load_config(
        args.study_file,
        storage=storage,
        name=args.study_name,
        n_trials=getattr(args, "n_trials", None),
        validate_objective=validate_objective,
    )
    args.config = config
    return config


def _run(args: argparse.Namespace) -> int:
    from research_ext.hpo._inspect import status
    from research_ext.hpo._owner_loop import run

    if args.verbose:
        logging.basicConfig(level=logging.INFO)
    from research_ext.hpo._storage_open import checkpoint
    from research_ext.hpo._study import storage_spec

    config = _config(args, validate_objective=True)
    study = run(
        config,
        workers=args.workers,
        show_progress=args.progress,
        log_trials=True if args.verbose else None,
    )
    del study
    checkpoint(storage_spec(config))
    print(status(config))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from research_ext.hpo._worker_loop import apply_overrides, worker

    config = _config(args, validate_objective=True)
    if args.overrides:
        config = apply_overrides(config, json.loads(args.overrides))
    worker(
        config,
        index=args.index,
        exit_when_idle=args.exit_when_idle,
        time_left=args.time_left,
        log_trials=not args.quiet,
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    import dataclasses

    from research_ext.hpo._inspect import status

    result = status(_config(args))
    if args.format == "json":
        print(json.dumps({**dataclasses.asdict(result), "complete": result.is_complete}))
    else:
        print(result)
    return 0


def _best(args: argparse.Namespace) -> int:
    from research_ext.hpo._inspect import best_params, format_rows

    best = best_params(_config(args))
    if args.format == "json":
        print(json.dumps(best, indent=1))
    else:
        rows = [{"number": b["number"], **b["values"], **b["params"]} for b in best]
        print(format_rows(rows) if rows else "no complete trial yet")
    return 0


def _trials(args: argparse.Namespace) -> int:
    from research_ext.hpo._inspect import format_rows, trials_table

    print(format_rows(trials_table(_config(args), states=args.state), args.format))
    return 0


def _pareto(args: argparse.Namespace) -> int:
    from research_ext.hpo._inspect import format_rows, pareto_front

    print(format_rows(pareto_front(_config(args)), args.format))
    return 0


def _importance(args: argparse.Namespace) -> int:
    from research_ext.hpo._importance import EVALUATORS
    from research_ext.hpo._inspect import format_rows, importance_table

    rows = importance_table(_config(args), evaluator=args.evaluator, metric=args.metric)
    print(format_rows(rows))
    print(f"\n{EVALUATORS[args.evaluator]}.")
    if any(r["computed_on"] != "all complete trials" for r in rows):
        print(
            "A conditional parameter is ranked on the trials where it exists: its share there, "
            "not comparable with the others."
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from research_ext.hpo._inspect import export_best

    if args.format == "tensorboard":
        from research_ext.hpo._tensorboard import export_tensorboard

        target = args.dir or args.output
        if target is None:
            print("research-ext tune export: --format tensorboard needs DIR", file=sys.stderr)
            return 2
        runs = export_tensorboard(_config(args), target)
        print(
            f"wrote {len(runs)} trial runs to {target}; view them with: tensorboard --logdir {target}"
        )
        return 0
    if args.dir is not None:
        print(
            "research-ext tune export: DIR is for --format tensorboard; use -o FILE",
            file=sys.stderr,
        )
        return 2
    text = export_best(_config(args), args.format)
    if args.output:
        pathlib.Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    from research_ext.hpo._report import report

    path = report(_config(args), args.out_dir)
    print(f"wrote {path} and {path.with_suffix('.html').name} with plots in {path.parent}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``research-ext tune``; returns the exit code.

    Args:
        argv: the arguments after ``tune`` (``sys.argv[1:]`` when ``None``).

    Returns:
        0 on success; 1 for a bad study file or storage argument; 2 for usage errors; 3 when the
        objective failed ``max_failures`` times; 4 when the storage failed; 130 after Ctrl-C;
        143 after SIGTERM.

    Example:
        >>> main(["--help"])  # doctest: +ELLIPSIS
        usage: research-ext tune [-h] COMMAND ...
        ...
        0
    """
    from research_ext.errors import ConfigError, StorageError, StudyFailedError
    from research_ext.hpo._worker_loop import Terminated

    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    handler: Callable[[argparse.Namespace], int] = args.handler
    import optuna

    if not getattr(args, "verbose", False):
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def fail(err: BaseException, code: int) -> int:
        print(f"research-ext tune {args.command}: {_scrub(err, args)}", file=sys.stderr)
        return code

    try:
        return handler(args)
    except StorageError as err:
        return fail(err, EXIT_STORAGE)
    except (ConfigError, ValueError) as err:
        if (storage_err := _storage_error(err, args)) is not None:
            return fail(storage_err, EXIT_STORAGE)
        return fail(err, 1)
    except StudyFailedError as err:
        return fail(err, 3)
    except KeyboardInterrupt:
        print(
            f"research-ext tune {args.command}: interrupted; running trials re-queued",
            file=sys.stderr,
        )
        return 130
    except Terminated:
        print(
            f"research-ext tune {args.command}: terminated; running trials re-queued",
            file=sys.stderr,
        )
        return 143
    except Exception as err:
        if (storage_err := _storage_error(err, args)) is not None:
            return fail(storage_err, EXIT_STORAGE)
        if isinstance(err, OSError):  # e.g. a report's or an export's output path
            return fail(err, 1)
        raise


def _storage_url(args: argparse.Namespace) -> str:
    config = getattr(args, "config", None)
    if config is not None:
        from research_ext.hpo._study import storage_spec

        try:
            return storage_spec(config).url
        except ValueError:
            pass
    return getattr(args, "storage_url", None) or ""


def _storage_error(err: BaseException, args: argparse.Namespace) -> BaseException | None:
    from research_ext.hpo._storage_faults import storage_error

    return storage_error(err, _storage_url(args))


def _scrub(err: BaseException, args: argparse.Namespace) -> str:
    """The error's message on one line, with any password of the storage URL redacted."""
    from research_ext.hpo._storage import url_secrets

    message = " ".join(str(err).split())
    for url in (_storage_url(args), getattr(args, "storage_url", None) or ""):
        for secret in url_secrets(url):
            message = message.replace(secret, "***")
    return message
