"""Tests that pin down behaviour of ``_jacobian`` which the other suites left open.

Each test here kills mutants that survived a mutation-testing pass over
``research_ext/functional/_jacobian.py`` (``tools/mutation_jacobian.sh``): the auto chunk size's
arithmetic, the recognition of torch's "no forward-mode formula" errors, the hessian's own
error names, tie-breaking and chunking, and the paths of the general (non-lean) transform.
"""

from collections import OrderedDict

import pytest
import torch

import research_ext.functional as rf
from research_ext.functional import _jacobian
from tests.helpers import tolerances

D = torch.float64
MiB = 2**20


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, **tolerances(D))


class _Doubled(torch.autograd.Function):
    """``2 x`` with a backward formula but no jvp (forward mode raises)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return 2 * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


@pytest.mark.parametrize("chunk_size", [None, 2])  # the lean path and the general one
def test_auto_mode_falls_back_to_reverse_for_a_custom_function_without_jvp(chunk_size):
    # A square Jacobian ties, and ties go to forward mode, which this Function lacks.
    x = torch.linspace(-1.0, 1.0, 3, dtype=D)
    jac = rf.jacobian(_Doubled.apply, chunk_size=chunk_size)
    _close(jac(x), 2 * torch.eye(3, dtype=D))
    _close(jac(x), 2 * torch.eye(3, dtype=D))  # the cached decision is reverse mode now
    _close(rf.jacobian(lambda x: (_Doubled.apply(x),))(x)[0], 2 * torch.eye(3, dtype=D))
    with pytest.raises(NotImplementedError, match="forward mode AD"):
        rf.jacobian(_Doubled.apply, mode="fwd")(x)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Trying to use forward AD with _cdist_forward that does not support it", True),
        ("You must implement the jvp function ... to use it with forward mode AD.", True),
        ("forward-mode AD not implemented for operator", True),
        ("some other missing kernel", False),
    ],
)
def test_no_forward_ad_recognizes_torchs_wordings(message, expected):
    assert _jacobian._no_forward_ad(NotImplementedError(message)) is expected


@pytest.mark.parametrize(
    ("rows", "n", "m", "itemsize", "expected"),
    [
        # budget 64 MiB (the cap) over 2 * (n + m) * 8 bytes per row: 209 rows
        (10_000, 10_000, 10_000, 8, 209),
        # budget half the Jacobian (36e6 bytes) over 72_000 bytes per row: 500 rows
        (6_000, 3_000, 6_000, 4, 500),
        # 256 rows would pass the cap: as many as it allows (64 MiB // 640_000 bytes)
        (20_000, 20_000, 20_000, 8, 104),
        # a tiny problem: the 1 MiB floor covers every row
        (50, 10, 50, 8, 50),
        # at least 256 rows while the cap allows, never more than there are
        (1_000, 1_000, 1_000, 8, 256),
        (1, 5, 1, 8, 1),
    ],
)
def test_auto_chunk_size(rows, n, m, itemsize, expected):
    chunk = _jacobian._auto_chunk(rows, n, m, itemsize)
    assert type(chunk) is int
    assert chunk == expected
    per_row = 2 * (n + m) * itemsize
    assert chunk * per_row <= 64 * MiB or chunk == 1


def test_auto_chunk_size_with_nothing_to_chunk():
    assert _jacobian._auto_chunk(0, 0, 0, 8) == 1


def test_hessian_argument_errors_name_hessian():
    with pytest.raises(TypeError, match=r"^hessian: `argnums` must be"):
        rf.hessian(lambda x: x.sum(), argnums="0")
    with pytest.raises(TypeError, match=r"^hessian: `f` must be callable"):
        rf.hessian(3)
    x = torch.ones(2, dtype=D)
    with pytest.raises(TypeError, match=r"^hessian: "):  # raised by the inner level
        rf.hessian(lambda x: "no tensor")(x)


@pytest.mark.parametrize("n", [1, 4])
def test_hessian_levels_break_ties_towards_reverse_mode(monkeypatch, n):
    # The gradient of a scalar f has as many outputs as inputs: a tie, which goes to reverse mode.
    def no_forward(*args, **kwargs):
        raise AssertionError("hessian took forward mode on a tie")

    monkeypatch.setattr(_jacobian, "_lean_fwd", no_forward)
    monkeypatch.setattr(_jacobian, "_fwd", no_forward)
    x = torch.linspace(0.5, 1.5, n, dtype=D)
    _close(rf.hessian(lambda x: (x**3).sum())(x), torch.diag(6 * x))
    _close(rf.hessian(lambda x: (x**3).sum(), chunk_size=2)(x), torch.diag(6 * x))


def test_hessian_chunks_its_outer_level(monkeypatch):
    chunks = []
    real_rev = _jacobian._rev

    def rev(problem, chunk, state):
        chunks.append(chunk)
        return real_rev(problem, chunk, state)

    monkeypatch.setattr(_jacobian, "_rev", rev)
    x = torch.linspace(0.5, 1.5, 5, dtype=D)
    _close(rf.hessian(lambda x: (x**3).sum(), chunk_size=2)(x), torch.diag(6 * x))
    assert chunks == [2]


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_chunked_jacobian_evaluates_chunk_by_chunk(monkeypatch, mode):
    spans = []
    real_basis = _jacobian._basis

    def basis(start, stop, sizes, like):
        spans.append((start, stop))
        return real_basis(start, stop, sizes, like)

    monkeypatch.setattr(_jacobian, "_basis", basis)
    x = torch.linspace(-1.0, 1.0, 5, dtype=D)
    _close(rf.jacobian(torch.sin, mode=mode, chunk_size=2)(x), torch.diag(x.cos()))
    assert spans == [(0, 2), (2, 4), (4, 5)]
    spans.clear()
    _close(rf.jacobian(torch.sin, mode=mode, chunk_size=5)(x), torch.diag(x.cos()))
    assert spans == [(0, 5)]


@pytest.mark.parametrize(("n", "m", "mode"), [(2, 6, "fwd"), (6, 2, "rev")])
def test_auto_chunk_size_sees_the_jacobians_shape(monkeypatch, n, m, mode):
    calls = []
    real_auto_chunk = _jacobian._auto_chunk

    def auto_chunk(rows, n_in, m_out, itemsize):
        calls.append((rows, n_in, m_out, itemsize))
        return real_auto_chunk(rows, n_in, m_out, itemsize)

    monkeypatch.setattr(_jacobian, "_auto_chunk", auto_chunk)
    x = torch.linspace(-1.0, 1.0, n, dtype=D)
    weight = torch.linspace(0.5, 2.0, m * n, dtype=D).reshape(m, n)
    jac = rf.jacobian(lambda x: weight @ x, chunk_size="auto")
    _close(jac(x), weight)
    rows = n if mode == "fwd" else m
    assert calls == [(rows, n, m, 8)]


@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
def test_empty_input_with_aux_and_tuple_outputs(mode):
    x = torch.zeros(0, dtype=D)

    def f(x):
        return (x.sum() * torch.ones(3, dtype=D), x.sum().reshape(1)), torch.tensor(7.0)

    (a, b), aux = rf.jacobian(f, mode=mode, has_aux=True)(x)
    assert float(aux) == 7.0
    assert a.shape == (3, 0) and b.shape == (1, 0)


@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
@pytest.mark.parametrize("chunk_size", [None, 2, "auto"])
@pytest.mark.parametrize("n", [0, 1, 5])
def test_results_stay_on_the_inputs_device_whatever_the_default(mode, chunk_size, n):
    # Every buffer follows the inputs (a default device of "meta" would leave it empty).
    x = torch.linspace(-1.0, 1.0, n, dtype=D)
    z = torch.complex(x, -x)
    with torch.device("meta"):
        jac = rf.jacobian(torch.sin, mode=mode, chunk_size=chunk_size)(x)
        tall = rf.jacobian(lambda x: (x.sin(), x.sum().reshape(1)), mode=mode)(x)
        empty_out = rf.jacobian(lambda x: x[:0], mode=mode, chunk_size=chunk_size)(x)
        pair = rf.jacobian(lambda a, b: a * b, (0, 1), mode=mode, chunk_size=chunk_size)(x, x)
        holo = rf.jacobian(torch.sin, mode=mode, chunk_size=chunk_size, holomorphic=True)(z)
    _close(jac, torch.diag(x.cos()))
    _close(tall[0], torch.diag(x.cos()))
    _close(tall[1], torch.ones(1, n, dtype=D))
    assert empty_out.device == x.device and empty_out.shape == (0, n)
    _close(pair[0], torch.diag(x))
    assert holo.device == z.device


@pytest.mark.parametrize("chunk_size", [None, 3])  # the lean path and the general one
def test_auto_mode_evaluates_f_once_when_it_picks_reverse_mode(chunk_size):
    evaluations = []

    def f(x):
        evaluations.append(1)
        return x.sum().reshape(1) * x[:2]

    x = torch.linspace(-1.0, 1.0, 6, dtype=D)  # 6 inputs, 2 outputs: reverse mode
    rf.jacobian(f, chunk_size=chunk_size)(x)
    assert len(evaluations) == 1  # the evaluation that decided is reused for the products


def test_decide_breaks_ties_as_told_and_keeps_a_bounded_lru_cache():
    cache: OrderedDict = OrderedDict()
    decide = _jacobian._decide
    assert decide(cache, "tie-fwd", 3, 3, "fwd") == "fwd"
    assert decide(cache, "tie-rev", 3, 3, "rev") == "rev"
    assert decide(cache, "wide", 2, 3, "rev") == "fwd"
    assert decide(cache, "tall", 4, 3, "fwd") == "rev"
    assert list(cache.items()) == [
        ("tie-fwd", ("fwd", 3)),
        ("tie-rev", ("rev", 3)),
        ("wide", ("fwd", 3)),
        ("tall", ("rev", 3)),
    ]
    size = _jacobian._CACHE_SIZE
    for key in range(size - 4):
        decide(cache, key, 1, 2, "fwd")
    assert len(cache) == size and "tie-fwd" in cache  # full, nothing evicted yet
    decide(cache, "one more", 1, 2, "fwd")
    assert len(cache) == size and "tie-fwd" not in cache and "tie-rev" in cache


def test_signature_tells_apart_what_the_decision_depends_on():
    sig = _jacobian._signature
    x = torch.ones(2, dtype=D)
    base = sig((x,), (0,))
    assert base == sig((torch.zeros(2, dtype=D),), (0,))  # values do not matter
    assert base != sig((torch.ones(3, dtype=D),), (0,))
    assert base != sig((x.float(),), (0,))
    assert base != sig((x.to("meta"),), (0,))
    assert sig((x, x), (0,)) != sig((x, x), (1,))
    tree = sig(([x, x],), (0,))
    assert tree == sig(([x + 1, x],), (0,))
    assert tree != sig(((x, x),), (0,))  # a list and a tuple are different trees
    assert tree != sig(([x, x.float()],), (0,))
    assert tree != sig(([x, torch.ones(3, dtype=D)],), (0,))
    assert tree != sig(([x, x.to("meta")],), (0,))
    assert tree != sig(([x, x],), (1,))
    assert sig((x, 2), (0,)) == sig((x, 3), (0,))  # a non-tensor leaf counts by its type
    assert sig((x, 2), (0,)) != sig((x, 2.0), (0,))


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("chunk_size", [None, 1])
def test_holomorphic_jacobian_in_complex32(mode, chunk_size):
    # torch has no eye or fill for complex32: the identity rows are built in complex64.
    z = torch.tensor([1 + 1j, 2 - 1j], dtype=torch.complex64).to(torch.complex32)
    jac = rf.jacobian(lambda z: z * 2, mode=mode, chunk_size=chunk_size, holomorphic=True)(z)
    assert jac.dtype == torch.complex32
    torch.testing.assert_close(jac.to(torch.complex64), 2 * torch.eye(2, dtype=torch.complex64))


def _count_calls(monkeypatch, name):
    calls = []
    real = getattr(_jacobian, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(_jacobian, name, counted)
    return calls


def test_lean_path_reuses_its_cached_decision(monkeypatch):
    forward = _count_calls(monkeypatch, "_lean_fwd")
    x = torch.linspace(-1.0, 1.0, 2, dtype=D)
    jac = rf.jacobian(lambda x: torch.cat([x.sin()] * 5))  # 2 inputs, 10 outputs: forward
    expected = torch.cat([torch.diag(x.cos())] * 5)
    _close(jac(x), expected)
    _close(jac(x), expected)
    assert forward == ["_lean_fwd"] * 2
    forward.clear()
    _close(rf.jacobian(torch.sin)(x), torch.diag(x.cos()))  # a square Jacobian ties: forward
    assert forward == ["_lean_fwd"]


def test_one_real_tensor_in_and_out_takes_the_lean_path(monkeypatch):
    def no_problem(*args, **kwargs):
        raise AssertionError("the general path ran")

    monkeypatch.setattr(_jacobian, "_Problem", no_problem)
    x = torch.linspace(-1.0, 1.0, 3, dtype=D)
    for mode in ("auto", "fwd", "rev"):
        _close(rf.jacobian(torch.sin, mode=mode)(x), torch.diag(x.cos()))


@pytest.mark.parametrize("chunk_size", [None, 2])  # the lean path and the general one
def test_auto_mode_remembers_that_reverse_mode_failed(chunk_size):
    # batch norm's running statistics have no reverse-mode derivative: forward mode, every call
    x = torch.linspace(-1, 1, 12, dtype=D).reshape(3, 4)
    var = torch.ones(4, dtype=D)

    def f(running_mean):
        return torch.native_batch_norm(x, None, None, running_mean, var, True, 0.5, 1e-5)[0]

    mean = torch.zeros(4, dtype=D)
    expected = torch.func.jacfwd(f)(mean)
    jac = rf.jacobian(f, chunk_size=chunk_size)
    _close(jac(mean), expected)
    _close(jac(mean), expected)


@pytest.mark.parametrize("chunk_size", [None, 2])  # the lean path and the general one
def test_auto_mode_raises_reverse_modes_error_when_both_modes_fail(chunk_size):
    def f(x):
        raise RuntimeError("no derivative here")

    with pytest.raises(RuntimeError, match="no derivative here"):
        rf.jacobian(f, chunk_size=chunk_size)(torch.ones(3, dtype=D))


def test_general_path_breaks_ties_towards_forward_mode(monkeypatch):
    forward = _count_calls(monkeypatch, "_fwd")
    x = torch.linspace(-1.0, 1.0, 3, dtype=D)
    _close(rf.jacobian(torch.sin, chunk_size=2)(x), torch.diag(x.cos()))
    assert forward == ["_fwd"]


def test_transform_docstring_names_f_and_mode():
    assert rf.jacobian(torch.sin).__doc__ == "Jacobian of sin (mode='auto')."
    assert rf.jacobian(_Doubled.apply, mode="rev").__doc__ == "Jacobian of apply (mode='rev')."

    class Unnamed:
        def __call__(self, x):
            return x

    assert rf.jacobian(Unnamed(), mode="fwd").__doc__ == "Jacobian of f (mode='fwd')."


def test_general_path_remembers_that_forward_mode_failed(monkeypatch):
    forward = _count_calls(monkeypatch, "_fwd")
    x = torch.linspace(-1.0, 1.0, 3, dtype=D)
    jac = rf.jacobian(_Doubled.apply, chunk_size=2)  # a tie: forward mode first, which fails
    _close(jac(x), 2 * torch.eye(3, dtype=D))
    _close(jac(x), 2 * torch.eye(3, dtype=D))
    assert forward == ["_fwd"]  # the second call goes straight to reverse mode


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_forward_mode_asked_for_raises_without_a_forward_formula(chunk_size):
    x = torch.linspace(-1.0, 1.0, 3, dtype=D)
    with pytest.raises(NotImplementedError, match="forward mode AD"):
        rf.jacobian(_Doubled.apply, mode="fwd", chunk_size=chunk_size)(x)


def test_forward_fallback_keeps_aux_and_chunks(monkeypatch):
    # batch norm's running statistics: reverse mode fails, forward mode takes over
    spans = []
    real_basis = _jacobian._basis

    def basis(start, stop, sizes, like):
        spans.append((start, stop))
        return real_basis(start, stop, sizes, like)

    monkeypatch.setattr(_jacobian, "_basis", basis)
    x = torch.linspace(-1, 1, 12, dtype=D).reshape(3, 4)
    var = torch.ones(4, dtype=D)

    def f(running_mean):
        out = torch.native_batch_norm(x, None, None, running_mean, var, True, 0.5, 1e-5)[0]
        return out, out.sum()

    mean = torch.zeros(4, dtype=D)
    expected = torch.func.jacfwd(lambda m: f(m)[0])(mean)
    jac, aux = rf.jacobian(f, chunk_size=3, has_aux=True)(mean)
    _close(jac, expected)
    _close(aux, f(mean)[1])
    assert spans == [(0, 3), (3, 4)]


def test_reverse_fallback_reuses_the_deciding_evaluation_and_chunks(monkeypatch):
    spans = []
    real_basis = _jacobian._basis

    def basis(start, stop, sizes, like):
        spans.append((start, stop))
        return real_basis(start, stop, sizes, like)

    monkeypatch.setattr(_jacobian, "_basis", basis)
    evaluations = []

    def f(x):
        evaluations.append(1)
        return _Doubled.apply(x)

    x = torch.linspace(-1.0, 1.0, 3, dtype=D)
    _close(rf.jacobian(f, chunk_size=2)(x), 2 * torch.eye(3, dtype=D))  # a tie: forward first
    assert len(evaluations) == 2  # one to decide (reused by reverse mode), one in forward mode
    assert spans == [(0, 2), (0, 2), (2, 3)]  # forward mode's first chunk, then reverse mode's
