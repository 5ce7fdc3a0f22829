"""DP-SGD step time and memory: research_ext.privacy vs Opacus 1.6, as ratios to a non-private step.

Four models (defined in ``privacy_models.py``, shared with ``bench_privacy_own_loop.py``): MLP
784-512-512-10 at B=256, a GroupNorm CNN on 1x28x28 at B=128, a 2-layer transformer (d=128, seq
64, vocab 5000) at B=32, and an LSTM classifier (embedding 5000x64, nn.LSTM 64->128 over 32
steps, linear head) at B=32 (Opacus runs its DPLSTM there). Methods run interleaved in one
process (median of R rounds) so the shared machine's noise cancels in the ratios; step memory is
the peak resident-memory growth (sampled) of a fresh subprocess during 3 steps of one
method, after one warm-up step (so it counts activations, per-sample state and gradients, not
parameters or caches).

Run: python benchmarks/bench_privacy_step.py [--rounds R] [--models mlp,cnn,transformer,lstm]
[--no-memory]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from privacy_models import THREADS, best_opacus, time_methods  # noqa: E402

METHODS = ["nonprivate", "ours", "opacus_hooks", "opacus_functorch", "opacus_ew", "opacus_ghost"]


_MEMORY_PROBE = """
import sys, threading, time, torch
sys.path.insert(0, "benchmarks")
import privacy_models as b

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

step = b.make_step(NAME, METHOD)
step()  # first call: lazy allocations, caches
peak, stop = [0], [False]

def sample():
    while not stop[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.0005)

base = rss()
thread = threading.Thread(target=sample)
thread.start()
for _ in range(3):
    step()
stop[0] = True
thread.join()
print((max(peak[0], rss()) - base) / 2**20)
"""


def memory_of(name, method, repeats=3):
    """Median over ``repeats`` fresh processes of the peak resident-memory growth (MiB)."""
    return statistics.median(_memory_once(name, method) for _ in range(repeats))


def _memory_once(name, method):
    """Peak resident-memory growth (MiB) during 3 steps, sampled every 0.5 ms in a fresh process."""
    code = _MEMORY_PROBE.replace("NAME", repr(name)).replace("METHOD", repr(method))
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        return float(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", default="mlp,cnn,transformer,lstm")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    targets = {"mlp": 2.0, "cnn": 1.5, "transformer": 1.6, "lstm": 2.0}
    report = {}
    for name in args.models.split(","):
        med, cpu, errors = time_methods(name, METHODS, args.rounds)
        base = med["nonprivate"]
        best, best_time = best_opacus(med)
        row = {
            "ms": {m: round(t * 1e3, 2) for m, t in med.items()},
            "ratio_to_nonprivate": {m: round(t / base, 2) for m, t in med.items()},
            "ours_vs_best_opacus": round(med["ours"] / best_time, 2) if best else None,
            "cpu_ms": {m: round(t * 1e3, 2) for m, t in cpu.items()},
            "cpu_ratio_to_nonprivate": {m: round(t / cpu["nonprivate"], 2) for m, t in cpu.items()},
            "load_average_1min": round(os.getloadavg()[0], 2),
            "best_opacus": best,
            "time_target": targets[name],
            "errors": errors,
        }
        if not args.no_memory:
            mem = {m: memory_of(name, m) for m in med}
            row["step_mem_mib"] = {m: round(v, 1) for m, v in mem.items()}
            row["mem_ratio_to_nonprivate"] = {
                m: round(v / max(mem["nonprivate"], 1e-9), 2) for m, v in mem.items()
            }
        report[name] = row
        print(f"== {name}: step ms {row['ms']}")
        print(
            f"   ratio to non-private {row['ratio_to_nonprivate']} (target ours <= {targets[name]})"
        )
        print(f"   ours / best Opacus ({best}) = {row['ours_vs_best_opacus']} (target <= 0.8)")
        print(
            f"   CPU time: ratio to non-private {row['cpu_ratio_to_nonprivate']} "
            f"(load average {row['load_average_1min']})"
        )
        if "step_mem_mib" in row:
            print(
                f"   step memory MiB {row['step_mem_mib']}; ratio {row['mem_ratio_to_nonprivate']}"
            )
        if errors:
            print(f"   unsupported: {errors}")
    print(json.dumps({"benchmark": "privacy_step", "threads": THREADS, "results": report}))


if __name__ == "__main__":
    main()
