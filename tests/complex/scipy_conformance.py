"""pytest plugin: scipy's own test modules run against research_ext.complex through a shim.

Load it with ``-p tests.complex.scipy_conformance`` and name scipy test modules with
``--pyargs``; ``tests/complex/scipy_conformance_run.py`` (``make conformance``) drives it.

Before the scipy test modules are imported, every scipy function that research_ext.complex
mirrors (``scipy.fft.dct``, ``scipy.signal.welch``, ...) is replaced, in the namespaces the tests
import from, by a wrapper; the namespaces are restored right after the import, so scipy's own
internals never see a wrapper, and modules the tests hold (``from scipy import signal``) are
swapped for proxies that hand out the wrappers. With ``--scipy-shim=scipy`` (the baseline) the
wrapper calls scipy unchanged; with ``--scipy-shim=ours`` it converts numpy arrays (and the
array-like data arguments: lists, ranges, scalars; integer data as integer tensors for
``research_ext.complex.signal``, as scipy's float64 for ``research_ext.complex.fft``, which takes
floating tensors only; one array passed twice as one tensor) to tensors, renames ``axis``/``axes`` to ``dim`` (and
``time_axis`` to ``time_dim`` and so on),
drops scipy's performance-only knobs (``overwrite_x``, ``workers``), calls research_ext's
function and converts tensors in the result back to numpy. A call made while one of our
functions runs goes to real scipy (a thread-local depth counter), so an implementation that
builds on scipy cannot recurse into itself.

Every test records whether it reached a wrapper; ``--scipy-shim-report=PATH`` writes one JSON
line per test (node id, outcome, the mirrored names it reached).
"""

import importlib
import inspect
import json
import threading
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import research_ext.complex.signal as rxc_signal

# (scipy namespace, names) the tests import from; each name maps to research_ext's function of
# the same name in the matching research_ext namespace.
FFT_NAMES = ("dct", "idct", "dst", "idst", "dctn", "idctn", "dstn", "idstn")
# every public name of research_ext.complex.signal carries the scipy.signal name it mirrors
SIGNAL_NAMES = tuple(rxc_signal.__all__)
NAMESPACES = {
    "scipy.fft": ("research_ext.complex.fft", FFT_NAMES),
    "scipy.fft._pocketfft": ("research_ext.complex.fft", FFT_NAMES),
    "scipy.fft._pocketfft.realtransforms": ("research_ext.complex.fft", FFT_NAMES),
    "scipy.signal": ("research_ext.complex.signal", SIGNAL_NAMES),
    "scipy.signal.windows": ("research_ext.complex.signal", ("get_window",)),
}
# Names of array-like data arguments, converted to tensors (other arguments pass unchanged, so
# the tests also check that we accept scipy's argument forms: numpy ints, tuples, windows).
DATA_ARGS = frozenset({"x", "y", "z", "in1", "in2", "b", "a", "zi", "sos", "Zxx"})
# Functions that take integer tensors (computed as scipy computes integer data) get integer
# data as integer tensors; the others (research_ext.complex.fft) get scipy's float64 of it.
INTEGER_DATA_MODULES = ("research_ext.complex._scipy_signal.",)
SCALAR_ARGS_OF = {"czt": frozenset({"a", "w"}), "zoom_fft": frozenset({"fn"})}
DROPPED = ("overwrite_x", "workers")

_local = threading.local()


def _depth() -> int:
    return getattr(_local, "depth", 0)


class _Recorder:
    reached: set[str] = set()
    unrepresentable = False
    collecting = True


def _unrepresentable(value: Any) -> bool:
    """Data torch has no dtype for (long double): no tensor can carry it to our function."""
    if not isinstance(value, np.ndarray | np.generic):
        return False
    return value.dtype.kind in "fc" and value.dtype.newbyteorder("=") not in _TORCH_FLOATS


_TORCH_FLOATS = tuple(
    np.dtype(t) for t in ("float16", "float32", "float64", "complex64", "complex128")
)


def _to_torch(value: Any, integers: bool) -> Any:
    """numpy data as a tensor of the same dtype (integers as float64 unless ``integers``)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray | np.generic | list | tuple | range | int | float | complex):
        if isinstance(value, bool):
            return value
        arr = np.asarray(value)
        if arr.dtype.kind in "biu" and not integers:
            # research_ext.complex.fft takes floating tensors only (a documented deviation):
            # the shim hands it scipy's own first step for integer data, float64.
            arr = arr.astype(np.float64)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if arr.dtype.kind in "fcbiu":
            return torch.from_numpy(arr.copy(order="C"))  # keeps 0-d data 0-d
    return value


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().resolve_conj().resolve_neg().cpu().numpy()
    if isinstance(value, tuple):
        return tuple(_to_numpy(v) for v in value)
    if isinstance(value, list):
        return [_to_numpy(v) for v in value]
    return value


def _missing(name: str) -> Callable[..., Any]:
    def not_provided(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"research_ext.complex does not provide {name}")

    return not_provided


def make_wrapper(
    name: str, original: Callable[..., Any], ours: Callable[..., Any] | None, mode: str
):
    """The shim around one scipy function (see the module notes)."""
    try:
        signature: inspect.Signature | None = inspect.signature(original)
    except (TypeError, ValueError):
        signature = None
    target = ours if ours is not None else _missing(name)
    scalars = SCALAR_ARGS_OF.get(name, frozenset())
    integers = getattr(ours, "__module__", "").startswith(INTEGER_DATA_MODULES)

    def convert(param: str, value: Any, memo: dict[int, Any]) -> Any:
        if param in scalars:
            return value
        if param in DATA_ARGS or (param == "window" and isinstance(value, np.ndarray | list)):
            # one array passed twice (csd(x, x)) becomes one tensor: scipy tests `y is x`
            if id(value) not in memo:
                memo[id(value)] = _to_torch(value, integers)
            return memo[id(value)]
        return value

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not _Recorder.collecting:
            _Recorder.reached.add(name)
            values = [*args, *kwargs.values()]
            if any(_unrepresentable(v) for v in values):
                _Recorder.unrepresentable = True
        if mode == "scipy" or _depth() > 0:
            return original(*args, **kwargs)
        names: list[str] = []
        if signature is not None:
            params = [
                p.name
                for p in signature.parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            names = params[: len(args)]
        memo: dict[int, Any] = {}
        new_args = [convert(n, v, memo) for n, v in zip(names, args, strict=False)]
        new_args += list(args[len(names) :])
        new_kwargs = {}
        for key, value in kwargs.items():
            if key in DROPPED or (key == "xp" and getattr(value, "__name__", "").endswith("numpy")):
                continue  # xp=numpy picks numpy output, which the shim makes anyway
            name_ = "dim" if key in ("axis", "axes") else key.replace("_axis", "_dim")
            new_kwargs[name_] = convert(key, value, memo)
        _local.depth = _depth() + 1
        try:
            return _to_numpy(target(*new_args, **new_kwargs))
        finally:
            _local.depth = _depth() - 1

    wrapper.__name__ = name
    wrapper.__qualname__ = name
    wrapper.__doc__ = original.__doc__
    wrapper.__wrapped_scipy__ = original  # type: ignore[attr-defined]
    # scipy's array-API test decorators look functions up in its capabilities table.
    from scipy._lib._array_api import xp_capabilities_table

    if original in xp_capabilities_table:
        xp_capabilities_table[wrapper] = xp_capabilities_table[original]
    return wrapper


class _ProxyModule(types.ModuleType):
    """A stand-in for a scipy namespace held by a test module: wrappers first, then the module."""

    def __init__(self, real: types.ModuleType, wrappers: dict[str, Any]) -> None:
        super().__init__(real.__name__, real.__doc__)
        self.__dict__.update(wrappers)
        self._real = real

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._real, attr)


def build_wrappers(mode: str) -> dict[str, dict[str, Any]]:
    """Per scipy namespace, the wrappers of its mirrored names."""
    out: dict[str, dict[str, Any]] = {}
    for ns_name, (ours_name, names) in NAMESPACES.items():
        ns = importlib.import_module(ns_name)
        ours = importlib.import_module(ours_name)
        out[ns_name] = {
            n: make_wrapper(n, getattr(ns, n), getattr(ours, n, None), mode)
            for n in names
            if hasattr(ns, n)
        }
    return out


def import_patched(modules: list[str], mode: str) -> None:
    """Import the scipy test modules with the mirrored names swapped, then restore scipy."""
    wrappers = build_wrappers(mode)
    saved: list[tuple[types.ModuleType, str, Any]] = []
    by_original: dict[int, Any] = {}
    proxies: dict[str, _ProxyModule] = {}
    for ns_name, table in wrappers.items():
        ns = importlib.import_module(ns_name)
        for n, w in table.items():
            saved.append((ns, n, getattr(ns, n)))
            by_original[id(getattr(ns, n))] = w
        proxies[ns_name] = _ProxyModule(ns, table)
    try:
        for ns, n, _ in saved:
            setattr(ns, n, by_original[id(getattr(ns, n))])
        for name in modules:
            mod = importlib.import_module(name)
            for attr, value in list(vars(mod).items()):
                if isinstance(value, types.ModuleType) and value.__name__ in proxies:
                    setattr(mod, attr, proxies[value.__name__])
    finally:
        for ns, n, original in saved:
            setattr(ns, n, original)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("scipy-shim")
    group.addoption("--scipy-shim", choices=("ours", "scipy"), default="ours")
    group.addoption("--scipy-shim-report", default=None)
    group.addoption(
        "--scipy-shim-modules",
        default="",
        help="comma-separated scipy test modules to import through the shim",
    )


_results: dict[str, dict[str, Any]] = {}


def pytest_configure(config: pytest.Config) -> None:
    modules = [m for m in config.getoption("--scipy-shim-modules").split(",") if m]
    # scipy's helper for its stft tests calls stft/istft/get_window from its own globals.
    extra = ["scipy.signal.tests._scipy_spectral_test_shim"]
    if any(m.endswith("test_spectral") for m in modules):
        modules = extra + modules
    import_patched(modules, config.getoption("--scipy-shim"))


def pytest_collection_finish(session: pytest.Session) -> None:
    _Recorder.collecting = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    _Recorder.reached = set()
    _Recorder.unrepresentable = False
    _results[item.nodeid] = {"outcome": "passed", "reached": []}
    yield
    _results[item.nodeid]["reached"] = sorted(_Recorder.reached)
    _results[item.nodeid]["unrepresentable"] = _Recorder.unrepresentable
    module = getattr(getattr(item, "module", None), "__name__", "")
    _results[item.nodeid]["module"] = module


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _results.setdefault(report.nodeid, {"outcome": "passed", "reached": []})
    if report.failed:
        entry["outcome"] = "failed"
        entry.setdefault("message", str(report.longrepr)[-2000:])
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "xfailed" if hasattr(report, "wasxfail") else "skipped"


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--scipy-shim-report")
    if not path:
        return
    with open(path, "w") as fh:
        for nodeid, entry in _results.items():
            fh.write(json.dumps({"nodeid": nodeid, **entry}) + "\n")
