"""``research-ext privacy``: epsilon of a training plan and noise calibration, per accountant."""

import argparse
import sys
import time
from collections.abc import Sequence

from research_ext.privacy.accounting._calibration import noise_multiplier_for
from research_ext.privacy.accounting._epsilon import ACCOUNTANTS, epsilon

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="research-ext privacy", description="DP-SGD privacy accounting."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--sample-rate", type=float, required=True, help="Poisson rate q")
    common.add_argument("--delta", type=float, required=True)
    length = common.add_mutually_exclusive_group(required=True)
    length.add_argument("--epochs", type=float, help="training epochs (steps = epochs / q)")
    length.add_argument("--steps", type=int, help="training steps")
    common.add_argument(
        "--accountant",
        action="append",
        choices=ACCOUNTANTS,
        help="accountant(s) to report (default: rdp, prv and pld when installed)",
    )
    eps = sub.add_parser("epsilon", parents=[common], help="epsilon spent by a training plan")
    eps.add_argument("--noise", type=float, required=True, help="noise multiplier sigma")
    cal = sub.add_parser("calibrate", parents=[common], help="noise multiplier for a target")
    cal.add_argument("--target-epsilon", type=float, required=True)
    return parser


def _accountants(chosen: list[str] | None) -> list[str]:
    if chosen:
        return list(dict.fromkeys(chosen))
    names = ["rdp", "prv"]
    try:
        import dp_accounting  # noqa: F401

        names.append("pld")
    except ImportError:
        pass
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``research-ext privacy epsilon|calibrate``; print a table; return the exit code.

    Example:
        >>> main(["epsilon", "--noise", "1.0", "--sample-rate", "0.01", "--steps", "1000",
        ...       "--delta", "1e-5", "--accountant", "rdp"])  # doctest: +ELLIPSIS
        accountant  epsilon   seconds
        rdp         2.1014    ...
        0
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    steps = args.steps if args.steps is not None else max(1, int(args.epochs / args.sample_rate))
    rows = []
    import opacus.accountants  # noqa: F401  (imported once here so the timings exclude it)

    try:
        for name in _accountants(args.accountant):
            start = time.perf_counter()
            if args.command == "epsilon":
                value = epsilon(args.noise, args.sample_rate, steps, args.delta, accountant=name)
            else:
                value = noise_multiplier_for(
                    args.target_epsilon, args.delta, args.sample_rate, steps, accountant=name
                )
            rows.append((name, value, time.perf_counter() - start))
    except (ValueError, TypeError) as err:
        print(f"research-ext privacy: {err}", file=sys.stderr)
        return 2
    column = "epsilon" if args.command == "epsilon" else "noise_multiplier"
    width = len(column) + 2
    print(f"{'accountant':<11} {column:<{width}} seconds")
    for name, value, seconds in rows:
        print(f"{name:<11} {value:<{width}.4f} {seconds:.2f}")
    return 0
