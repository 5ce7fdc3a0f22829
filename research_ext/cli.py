"""The ``research-ext`` command line: a dispatcher to each subpackage's own CLI.

Each subcommand maps to a module exposing ``main(argv: list[str] | None) -> int``; the module is
imported only when its subcommand runs, so ``research-ext --help`` never imports optuna or opacus.

Example:
    >>> main(["--version"])  # doctest: +ELLIPSIS
    research-ext ...
    0
"""

import importlib
import sys
from collections.abc import Sequence

from research_ext import __version__

__all__ = ["main"]

#: subcommand -> (module with a ``main(argv)``, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "tune": ("research_ext.hpo._cli", "run and inspect Optuna studies from a study file"),
    "privacy": ("research_ext.privacy._cli", "privacy accounting: epsilon and noise calibration"),
}


def _usage() -> str:
    lines = [
        "usage: research-ext [--version] [--help] COMMAND [ARGS...]",
        "",
        "commands:",
        *(f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()),
        "",
        "Run `research-ext COMMAND --help` for a command's options.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``research-ext`` command line; returns the exit code.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` when ``None``).

    Returns:
        0 on success; 2 for usage errors; otherwise the subcommand's exit code.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"research-ext {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        choices = ", ".join(repr(c) for c in COMMANDS)
        print(f"research-ext: unknown command {name!r}; choose one of {choices}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):
            print(
                f"research-ext {name}: this command is not available in this build", file=sys.stderr
            )
            return 2
        raise
    result: int = module.main(rest)
    return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
