"""Sparse Jacobian by coloring vs dense ``torch.func.jacrev``, side by side.

Problem: the residual of a discretized 1-D nonlinear PDE (``-u'' + u^3 - f = 0`` with
Dirichlet ends), n = 5000 unknowns, a tridiagonal Jacobian (3 colors). Timings alternate ours/dense
in one process (medians, and minima since the machine is shared); peak memory of each method is
measured in its own fresh subprocess (``ru_maxrss`` growth during the call). No PyTorch library
computes sparse Jacobians, so the anchor is the dense Jacobian of torch.func.

Target (issue 7): >= 500x faster than dense jacrev, peak memory O(nnz).
"""

import json
import resource
import statistics
import subprocess
import sys
import time

import torch

import research_ext.functional as rf

torch.set_num_threads(1)
N = 5000


def residual(u):
    h = 1.0 / (u.shape[0] + 1)
    padded = torch.nn.functional.pad(u, (1, 1))
    laplacian = (padded[2:] - 2 * padded[1:-1] + padded[:-2]) / h**2
    return -laplacian + u**3 - 1.0


def point(n=N):
    return torch.linspace(0.0, 1.0, n, dtype=torch.float64).sin()


def peak_memory(method: str) -> float:
    """MiB of peak resident-set growth while one call runs, in a fresh interpreter."""
    code = f"""
import resource, sys, torch

def peak():  # VmHWM belongs to this address space; ru_maxrss would include the parent's
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

sys.path.insert(0, "benchmarks")
from bench_functional_sparse import residual, point
import research_ext.functional as rf
torch.set_num_threads(1)
x = point()
if "{method}" == "sparse":
    jac = rf.sparse_jacobian(residual, rf.color_jacobian(rf.jacobian_sparsity(residual, x)))
    fn = lambda: jac(x)
else:
    fn = lambda: torch.func.jacrev(residual)(x)
before = peak()
out = fn()
after = peak()
print((after - before) / 1024)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main():
    x = point()
    start = time.perf_counter()
    pattern = rf.jacobian_sparsity(residual, x)
    detect = time.perf_counter() - start
    start = time.perf_counter()
    plan = rf.color_jacobian(pattern)
    color = time.perf_counter() - start
    print(f"n = {N}: pattern nnz {pattern._nnz()} detected in {detect:.2f} s (NaN propagation)")
    print(f"coloring: {plan.num_colors} colors ({plan.kind}) in {color * 1e3:.1f} ms")

    jac = rf.sparse_jacobian(residual, plan)
    dense = torch.func.jacrev(residual)
    sparse_out = jac(x)
    assert torch.equal(sparse_out.to_dense(), dense(x)), "sparse and dense Jacobians differ"

    times = {"sparse": [], "dense": []}
    for _ in range(7):
        for name, fn in (("sparse", lambda: jac(x)), ("dense", lambda: dense(x))):
            start = time.perf_counter()
            for _ in range(20 if name == "sparse" else 1):
                fn()
            times[name].append((time.perf_counter() - start) / (20 if name == "sparse" else 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    speedup, speedup_min = med["dense"] / med["sparse"], low["dense"] / low["sparse"]
    print(f"sparse_jacobian: {med['sparse'] * 1e3:.2f} ms   dense jacrev: {med['dense']:.2f} s")
    print(f"speed-up: {speedup:.0f}x (median), {speedup_min:.0f}x (min)")

    mem = {m: peak_memory(m) for m in ("sparse", "dense")}
    nnz_mib = sparse_out._nnz() * (8 + 2 * 8) / 2**20
    print(
        f"peak RSS growth: sparse {mem['sparse']:.1f} MiB (the result itself: {nnz_mib:.2f} MiB), "
        f"dense {mem['dense']:.1f} MiB (the n x n result alone: {N * N * 8 / 2**20:.0f} MiB)"
    )
    ok = speedup >= 500
    print(f"[{'ok' if ok else 'MISS'}] >= 500x faster than dense jacrev: {speedup:.0f}x")
    print(
        json.dumps(
            {
                "benchmark": "functional_sparse",
                "n": N,
                "colors": plan.num_colors,
                "detect_s": detect,
                "color_s": color,
                "sparse_s": med["sparse"],
                "dense_s": med["dense"],
                "speedup_median": speedup,
                "speedup_min": speedup_min,
                "peak_mib_sparse": mem["sparse"],
                "peak_mib_dense": mem["dense"],
                "maxrss_total_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
