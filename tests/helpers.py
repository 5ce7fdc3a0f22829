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


# Named slack of the functional tests' other comparisons (float64 unless the name says float32).
# The same sums in another order (a block product against its columns; the two sides of a
# symmetry or positivity check, relative to the products' scale): one evaluation's rounding.
RTOL_REORDERED_FLOAT64 = 1e-12
ATOL_REORDERED_FLOAT64 = 1e-14
# Values that come out of cancellation near zero (a Hessian's off-diagonal, an adjoint
# identity's inner products, a sketched trace or quadrature moments): an absolute floor of 1e-10.
ATOL_CANCELLING_FLOAT64 = 1e-10
# Higher derivatives up to order 8 (Taylor coefficients against nested AD or closed forms):
# rounding compounds with every order; a degree-7 polynomial's high orders reach ~1e3.
RTOL_HIGHER_ORDER_FLOAT64 = 1e-9
ATOL_HIGHER_ORDER_FLOAT64 = 1e-9
ATOL_POLYNOMIAL_FLOAT64 = 1e-8
# An iterative eigensolver (Lanczos, ARPACK) at convergence against a dense eigendecomposition:
# eigenvalues; Ritz vectors' orthogonality and residuals (relative to ||A||); and the looser
# eigenvalue bound of small random matrices at the default tolerance.
RTOL_EIGENSOLVER_FLOAT64 = 1e-8
ATOL_RITZ_VECTORS_FLOAT64 = 1e-8
RTOL_RITZ_VALUES_FLOAT64 = 1e-7
# A spectral density's mass against a kernel density's on the same grid.
RTOL_DENSITY_MASS = 1e-4
# Central finite differences (step 1e-6, float64) against an exact Jacobian.
RTOL_FINITE_DIFFERENCES = 1e-6
ATOL_FINITE_DIFFERENCES = 1e-7
# A Monte Carlo estimate from 4000 samples against its expectation, relative to the largest
# entry (the standard error is ~1/sqrt(4000) = 1.6%: five of them).
RTOL_MONTE_CARLO_4000 = 0.08
# Curvature products in float32 (a double backward pass) against float32 or float64 references.
RTOL_FLOAT32_CURVATURE = 1e-4
ATOL_FLOAT32_CURVATURE = 1e-5
