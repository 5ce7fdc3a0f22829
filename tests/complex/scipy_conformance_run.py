"""Run scipy's own test modules against research_ext.complex and report per module.

``python -m tests.complex.scipy_conformance_run [SUITE ...] [--list-failures]`` (``make
conformance`` runs every suite). Each suite's scipy test module runs twice through the shim of
``tests/complex/scipy_conformance.py``: once calling scipy (the baseline) and once calling
research_ext. Counted are the tests that pass in the baseline and reach one of the mirrored
functions (tests on long-double data, which no tensor can carry, are reported apart); the report
gives how many of those also pass with research_ext. A counted test that fails must be named in
``docs/complex_scipy_deviations.md`` (as `path/under/scipy.py::Class::test`, a trailing ``*``
for a prefix) with the reason; the run exits 1 when an unlisted failure remains.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVIATIONS = ROOT / "docs" / "complex_scipy_deviations.md"
IIR = {"lfilter", "lfilter_zi", "lfiltic", "sosfilt", "sosfilt_zi", "sosfiltfilt", "filtfilt"}

# suite -> (scipy test module, how a counted test is labelled: a fixed label or by reach)
SUITES = {
    "fft_real_transforms": "scipy.fft.tests.test_real_transforms",
    "pocketfft_dct_dst": "scipy.fft._pocketfft.tests.test_real_transforms",
    "czt": "scipy.signal.tests.test_czt",
    "spectral": "scipy.signal.tests.test_spectral",
    "windows": "scipy.signal.tests.test_windows",
    "signaltools": "scipy.signal.tests.test_signaltools",
}


def pytest_command(module: str, mode: str, report: str, select: list[str] | None = None):
    """The pytest command line running one scipy test module through the shim."""
    targets = select if select else [module]
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "tests.complex.scipy_conformance",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "-o",
        "addopts=",
        "-o",
        "filterwarnings=",
        "-o",
        "xfail_strict=false",
        "-o",
        "timeout=900",
        "-q",
        "--no-header",
        "--tb=line",
        f"--scipy-shim={mode}",
        f"--scipy-shim-report={report}",
        f"--scipy-shim-modules={module}",
        "--pyargs",
        *targets,
    ]


def run_mode(module: str, mode: str, select: list[str] | None = None) -> dict[str, dict]:
    """Run one module in one mode; node id -> {outcome, reached, message?}."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.jsonl")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SCIPY_ARRAY_API": ""}
        env.pop("SCIPY_ARRAY_API")
        subprocess.run(
            pytest_command(module, mode, report, select),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        with open(report) as fh:
            return {e["nodeid"]: e for e in map(json.loads, fh)}


def label(suite: str, reached: list[str]) -> str:
    if suite != "signaltools":
        return suite
    return "signaltools_iir" if IIR & set(reached) else "signaltools_convolve_hilbert_resample"


def documented() -> list[str]:
    """Test names (``path::Class::test``, ``*`` for a prefix) in the deviations document."""
    if not DEVIATIONS.exists():
        return []
    return re.findall(r"`([\w/]+/tests/[\w.]+::[^`]+)`", DEVIATIONS.read_text())


def test_name(nodeid: str, module: str) -> str:
    """A test's name under scipy/ ("signal/tests/test_x.py::T::t"), whatever pytest's rootdir."""
    test = nodeid.partition("::")[2]
    if module:
        return module.removeprefix("scipy.").replace(".", "/") + ".py::" + test
    return nodeid.partition("::")[0].rsplit("scipy/", 1)[-1] + "::" + test


def is_documented(name: str, patterns: list[str]) -> bool:
    """A pattern names a test as :func:`test_name` does; a trailing ``*`` makes it a prefix."""
    return any(name == p or (p.endswith("*") and name.startswith(p[:-1])) for p in patterns)


def compare(suite: str, base: dict[str, dict], ours: dict[str, dict]):
    """Per label: (counted, passed, failing node ids with messages)."""
    table: dict[str, list] = {}
    for nodeid, b in base.items():
        if b["outcome"] != "passed" or not b["reached"]:
            continue
        row = table.setdefault(label(suite, b["reached"]), [0, 0, [], 0])
        if b.get("unrepresentable"):
            row[3] += 1  # long double data: torch has no such dtype, nothing reaches us
            continue
        row[0] += 1
        o = ours.get(nodeid, {"outcome": "missing"})
        if o["outcome"] == "passed":
            row[1] += 1
        else:
            name = test_name(nodeid, b.get("module", ""))
            row[2].append((name, o.get("message", o["outcome"])))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", choices=[*SUITES, []], default=[])
    parser.add_argument("--list-failures", action="store_true")
    parser.add_argument("--json", default=None, help="write the per-label counts here")
    args = parser.parse_args(argv)
    patterns = documented()
    undocumented = 0
    summary = {}
    for suite in args.suites or list(SUITES):
        module = SUITES[suite]
        base = run_mode(module, "scipy")
        ours = run_mode(module, "ours")
        for name, row in sorted(compare(suite, base, ours).items()):
            counted, passed, failures, excluded = row
            pct = 100.0 * passed / counted if counted else 100.0
            summary[name] = {"counted": counted, "passed": passed, "long_double": excluded}
            print(
                f"{name:40s} {passed:6d}/{counted:<6d} {pct:6.2f} %"
                f"  (+{excluded} long-double tests not counted)",
                flush=True,
            )
            for test, message in failures:
                doc = is_documented(test, patterns)
                undocumented += not doc
                if args.list_failures or not doc:
                    tag = "documented" if doc else "UNDOCUMENTED"
                    first = message.strip().splitlines()[-1] if message.strip() else ""
                    print(f"    {tag}: {test}\n        {first[:300]}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(f"undocumented failures: {undocumented}")
    return 1 if undocumented else 0


if __name__ == "__main__":
    sys.exit(main())
