"""A fixed slice of the OpInfo conformance sweep (``opinfo_conformance.py``) in every test run.

The slice covers every path of the transforms: unary and binary ops, 0-d and empty samples,
list inputs (``cat``), tuple outputs with integer leaves (``max`` with ``dim``), real-to-complex
(``fft.fft``), complex inputs (real view and holomorphic), Taylor rules with branches
(``softplus``, ``special.entr``), the fallback through an unbound method (``cdouble``), the
double backwards torch cannot batch (``group_norm``, ``unfold``) and an op without forward mode
(``cdist``). ``make conformance`` runs every operator.
"""

import pytest

from tests.functional.opinfo_conformance import ops_by_id, run_op

SLICE = [
    "add",
    "cat",
    "max.reduction_with_dim",
    "fft.fft",
    "nn.functional.softplus",
    "special.entr",
    "cdouble",
    "nn.functional.group_norm",
    "unfold",
    "cdist",
]


@pytest.mark.parametrize("op_id", SLICE)
def test_agrees_with_torch_func(op_id):
    results = run_op(ops_by_id([op_id])[0], per_op=2)
    failures = [
        f"[sample {r.sample}] {r.transform}: {r.reason}" for r in results if r.status == "fail"
    ]
    assert not failures, "\n".join(failures)
    assert any(r.status == "pass" for r in results), [r.reason for r in results]
