"""Fixtures of the functional tests."""

import pytest

from research_ext.functional._curvature import VMAP_ON_CPU_ENV


@pytest.fixture(params=["loop", "vmap"])
def curvature_branch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test under both branches of the curvature operators' block products.

    ``loop`` is the CPU default (one backward pass per column); ``vmap`` is what accelerators
    run (one vmapped pass per block), forced on the CPU by the environment switch.
    """
    monkeypatch.setenv(VMAP_ON_CPU_ENV, "1" if request.param == "vmap" else "0")
    return request.param
