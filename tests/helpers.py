"""Named tolerances and small shared oracles for the test suite."""

import subprocess
import sys

# Relative tolerances by dtype for comparisons against float64 references.
RTOL_FLOAT64 = 1e-10
ATOL_FLOAT64 = 1e-12
RTOL_FLOAT32 = 1e-5
ATOL_FLOAT32 = 1e-6
# Derivatives of ours against torch.func's in float64 (different but exact AD routes, so only
# rounding separates them; used by the OpInfo conformance sweep).
RTOL_AD_FLOAT64 = 1e-7
ATOL_AD_FLOAT64 = 1e-9


def tolerances(dtype) -> dict[str, float]:
    import torch

    if dtype in (torch.float64, torch.complex128):
        return {"rtol": RTOL_FLOAT64, "atol": ATOL_FLOAT64}
    return {"rtol": RTOL_FLOAT32, "atol": ATOL_FLOAT32}


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (for import-isolation checks)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
