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


def run_on_gloo_ranks(worker, out_dir, world_size: int = 2, *, weights_only: bool = False) -> list:
    """Spawn ``worker(rank, world_size, port, out_dir)`` on ``world_size`` ranks; load each rank's
    ``rank{r}.pt`` from ``out_dir``."""
    import pathlib

    import torch
    import torch.multiprocessing as mp

    mp.start_processes(
        worker,
        args=(world_size, free_port(), str(out_dir)),
        nprocs=world_size,
        join=True,
        start_method="spawn",
    )
    return [
        torch.load(pathlib.Path(out_dir) / f"rank{r}.pt", weights_only=weights_only)
        for r in range(world_size)
    ]


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

# Named slack of the complex, core, privacy and hpo tests (float64 unless the name says otherwise).
# The same sums in another order on values of unit scale, some of which land near zero (a batched
# call against one sample, a vmapped or chunked call, a scipy LinearOperator against the dense
# matrix, two ranks against one process): an absolute floor of 1e-12; at 1e-13 when only a
# linear transform of unit-scale rows separates the two sides.
ATOL_REORDERED_UNIT_FLOAT64 = 1e-12
ATOL_REBATCHED_TRANSFORM_FLOAT64 = 1e-13
# A transform followed by its inverse (or an orthonormal transform's adjoint against its inverse)
# on unit-scale signals: a few ulps; at 1e-12 through the unnormalised (None, "forward") scalings.
ATOL_ROUND_TRIP_FLOAT64 = 1e-13
ATOL_ROUND_TRIP_SCALED_FLOAT64 = 1e-12
# An STFT followed by its inverse (overlap-add, dividing by the window's summed squares).
ATOL_STFT_ROUND_TRIP_FLOAT64 = 1e-10
# A quantity that is exactly zero in exact arithmetic, computed from O(1) values in float64
# (a linear signal after linear detrending): a few ulps.
ATOL_ZERO_FLOAT64 = 1e-15
# A softmax's probabilities (at most 1) against numpy's in float64, and the attention outputs
# built from them (values of unit scale).
ATOL_PROBABILITIES_FLOAT64 = 1e-15
ATOL_ATTENTION_FLOAT64 = 1e-14
# scipy parity: our chirp-z and zoom FFT (Bluestein, three FFTs of a padded length) against
# scipy's pocketfft FFT in float64; oversampled (10x or 100x the points) the chirp's phase error
# grows with the length, and a band zoom over the whole circle at 1e-11.
RTOL_CHIRP_Z_FLOAT64 = 1e-13
RTOL_CHIRP_Z_OVERSAMPLED_FLOAT64 = 1e-12
ATOL_CHIRP_Z_OVERSAMPLED_FLOAT64 = 1e-10
RTOL_ZOOM_FFT_FLOAT64 = 1e-11
ATOL_ZOOM_FFT_FLOAT64 = 1e-14
# The chirp-z transform at m = n against torch.fft.fft (absolute, unit-scale signals).
ATOL_CHIRP_Z_FLOAT64 = 1e-10
# FFT convolution against direct convolution (gradients over thousands of points): relative
# 1e-10 with an absolute floor of 1e-10 per sqrt(number of entries); two FFT routes (in place or
# not, overlap-add blocks or one FFT) of the same 6000-12000 point convolution: 1e-11 absolute.
RTOL_FFT_VS_DIRECT_FLOAT64 = 1e-10
ATOL_FFT_VS_DIRECT_FLOAT64 = 1e-10
ATOL_FFT_ROUTES_FLOAT64 = 1e-11
# float16 results against scipy's (11 significant bits: ~5e-4 per rounding).
RTOL_FLOAT16 = 1e-3
ATOL_FLOAT16 = 1e-3
# A spectral layer in float32 / complex64 against a float64 explicit DFT.
RTOL_SPECTRAL_FLOAT32 = 1e-4
ATOL_SPECTRAL_FLOAT32 = 1e-5
# Wirtinger derivatives against central differences in x and y (step 1e-6) in complex128.
RTOL_WIRTINGER_FINITE_DIFFERENCES = 1e-7
ATOL_WIRTINGER_FINITE_DIFFERENCES = 1e-7
# torch's gradcheck/gradgradcheck of complex layers (finite differences with eps=1e-6; tighter
# than torch's defaults of rtol=1e-3, atol=1e-5).
RTOL_GRADCHECK = 1e-5
ATOL_GRADCHECK = 1e-6
# Complex whitening against scipy's sqrtm (a Schur method) of the 2x2 covariance.
RTOL_MATRIX_SQRT_FLOAT64 = 1e-10
ATOL_MATRIX_SQRT_FLOAT64 = 1e-10
# A whitened batch's covariance against the identity: eps=1e-5 added to a variance of ~1e1
# shifts it by ~1e-6, and a group's 40 samples estimate it with that slack.
ATOL_WHITENED_COVARIANCE = 1e-4
# A batch whitened in eval mode without running statistics: its mean power |y|^2 against 1.
ATOL_WHITENED_POWER = 1e-3
# Complex batch norm of a scaled, shifted or rotated batch against the original's output: the
# covariance's inverse square root amplifies rounding by its condition number.
RTOL_WHITENING_INVARIANCE_FLOAT64 = 1e-7
ATOL_WHITENING_INVARIANCE_FLOAT64 = 1e-7
# scipy's ARPACK (eigsh) top-k eigenvalues at its default tolerance against a dense eigvalsh.
RTOL_ARPACK_EIGENVALUES_FLOAT64 = 1e-9
# Privacy accounting: a closed form or series against the same quantity summed term by term
# (a different order of many log-space terms), against scipy's quad integration (epsrel 1e-12)
# of the privacy-loss moments, and against a direct formula solved by another route.
RTOL_ACCOUNTING_SERIES = 1e-9
ATOL_TAIL_PROBABILITY = 1e-15
RTOL_ACCOUNTING_QUADRATURE = 1e-8
RTOL_ACCOUNTING_DIRECT_FORMULA = 1e-6
# A Clopper-Pearson epsilon against scipy's binomtest intervals (root-finding on both sides).
RTOL_CLOPPER_PEARSON = 1e-7
# An epsilon printed by the CLI with 4 decimals against the value computed in-process.
ATOL_PRINTED_EPSILON = 1e-4
# Figures quoted in the tuning issue for an MNIST-like run (printed to 2 decimals).
ATOL_PAPER_FIGURE_SINGLE = 0.02
ATOL_PAPER_FIGURE_NAIVE = 0.05
# Opacus vs ours end to end: epsilon and sigma calibrated to the same target by different
# searches and accountant grids agree to 3%.
RTOL_OPACUS_CALIBRATION = 0.03
# The standard deviation of the noise two ranks add to one update (relative standard error
# 1/sqrt(2n), ~1.6%) against sigma * C: five standard errors (noise on both ranks would be
# sqrt(2) x, noise split wrongly 1/sqrt(2) x).
RTOL_DISTRIBUTED_NOISE_STD = 0.08
# Empirical noise std from >= 2000 draws: about 1.6 % standard error, so 6 % is > 3.5 sigma.
RTOL_NOISE_STD = 0.06
# Per-sample gradients of the engines against a per-example loop (a double-precision floor of
# 1e-10 and a single-precision one of 1e-6, relative slack 10x that).
ATOL_PER_SAMPLE_FLOAT64 = 1e-10
ATOL_PER_SAMPLE_FLOAT32 = 1e-6
# Relative slack on brute-force sensitivities: float64 sums of a handful of clipped vectors.
RTOL_SENSITIVITY = 1e-9
# RDP against Opacus's: both sum the same closed form in floating point; they differ in the last
# digits.
RTOL_RDP = 1e-7
# dp-accounting bounds the subsampled Gaussian's RDP slightly differently at fractional orders;
# with noise multiplier >= 1 the two agree to ~1e-5 relative.
RTOL_DP_ACCOUNTING = 2e-4
# PLD accounting: ours against dp-accounting's pessimistic PLD (same discretisation idea, mesh
# 1e-4): never below it, and at most this much above (seen: 2e-6 to 3e-4 relative); ours against
# the exact epsilon of the composed Gaussian mechanism (q = 1): never below it, and at most this
# much above (seen: up to 2.4e-5).
RTOL_OVER_DP_ACCOUNTING = 1e-3
RTOL_OVER_EXACT = 1e-4
# A Fourier mode a spectral layer drops, fed as a unit-amplitude wave: only the FFTs' rounding
# leaks through (seen: ~4e-16).
ATOL_DROPPED_MODE_FLOAT64 = 1e-13
# The chirp-z transform off the unit circle (a = 1.01, |w| = 1.001): its adjoint identity, relative
# to the inner products' scale, loses digits to the chirp's growing powers.
RTOL_CHIRP_Z_ADJOINT_FLOAT64 = 1e-10
# scipy parity of the spectral ops (scipy is the oracle), as max |ours - scipy| / max |scipy|:
# float64 in general, tighter for DCT/DST, hilbert, fftconvolve and welch (one FFT route on
# each side: MKL/pocketfft against pocketfft), and float32 (also within 2x scipy's own float32
# error, see tests/complex/spectral_utils.py).
RTOL_SCIPY_PARITY_FLOAT64 = 1e-13
RTOL_SCIPY_PARITY_TIGHT_FLOAT64 = 2e-14
RTOL_SCIPY_PARITY_FLOAT32 = 3e-6
