"""A fixed slice of scipy's own tests, run against research_ext.complex in every `make test`.

The whole run is ``make conformance`` (tests/complex/scipy_conformance_run.py, tens of minutes);
this slice covers each suite's fixed bugs in one subprocess (about 10 s of CPU; marked slow, so
it runs in the second, slow pass of every `make test`): every listed scipy test must reach one
of our functions through the shim and pass.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import scipy

from tests.complex.scipy_conformance_run import ROOT, SUITES, pytest_command

SCIPY = Path(scipy.__file__).parent
SLICE = {
    "fft/tests/test_real_transforms.py": [
        "test_identity_1d_overwrite[numpy-True-ortho-0-float16-2-dct-idct]",
        "test_identity_nd[numpy-False-None-shape3-axes3-1-dctn]",
        "test_identity_nd[numpy-False-ortho-shape8-axes8-2-dstn]",
    ],
    "fft/_pocketfft/tests/test_real_transforms.py": [
        "Test_DCTN_IDCTN::test_axes_round_trip",
        "Test_DCTN_IDCTN::test_shape",
    ],
    "signal/tests/test_czt.py": ["test_1D", "test_empty_input", "test_nonsense_size"],
    "signal/tests/test_spectral.py": [
        "TestWelch::test_empty_input",
        "TestWelch::test_detrend_external",
        "TestCSD::test_real_onesided_even_32",
        "TestCSD::test_empty_input",
        "TestCSD::test_window_external",
        "TestSTFT::test_permute_axes",
        "TestSTFT::test_roundtrip_real",
    ],
    "signal/tests/test_windows.py": [
        "TestGetWindow::test_dpss",
        "TestGetWindow::test_kaiser_float",
        "TestGetWindow::test_invalid_parameter_NX",
    ],
    "signal/tests/test_signaltools.py": [
        "TestLinearFilterFloat64::test_lfiltic",
        "TestLinearFilterFloat32::test_zi_pseudobroadcast",
        "TestLFilterZI",
        "TestFiltFilt::test_sine",
        "TestFiltFilt::test_axis",
        "TestSOSFiltFilt::test_basic",
        "TestSOSFilt::test_sosfilt_zi",
        "TestSOSFilt::test_bad_zi_shape",
        "TestHilbert::test_hilbert_theoretical",
        "TestFFTConvolve::test_real",
        "TestConvolve::test_valid_mode2",
        "TestCorrelateReal::test_rank3_valid",
    ],
}


@pytest.mark.slow  # ~10 s of CPU in a subprocess (scipy's test modules import slowly)
def test_scipy_suite_slice_passes_through_the_shim(tmp_path):
    report = tmp_path / "report.jsonl"
    select = [f"{SCIPY / path}::{name}" for path, names in SLICE.items() for name in names]
    modules = ",".join(SUITES.values())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SCIPY_ARRAY_API", None)
    done = subprocess.run(
        pytest_command(modules, "ours", str(report), select),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    results = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(results) >= 60, [r["nodeid"] for r in results]  # the slice was collected
    failed = [
        (r["nodeid"], r["outcome"], r.get("message", "")[-800:])
        for r in results
        if r["outcome"] != "passed"
    ]
    unreached = [r["nodeid"] for r in results if not r["reached"]]
    assert not failed
    assert not unreached
    assert sys.modules.get("scipy") is scipy  # the shim ran in the subprocess only
