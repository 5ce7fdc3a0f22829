"""DP-SGD in the user's own loop (DPOptimizer) vs a non-private step, DPSGD.step and Opacus 1.6.

The user-loop step is what a training script runs: ``loss_fn(model(x), y).backward();
opt.step(); opt.zero_grad()`` with ``opt`` a :class:`research_ext.privacy.DPOptimizer`
(loss check on the first step only, the default). Models and batches are those of
``bench_privacy_step.py`` (both take them from ``privacy_models.py``): MLP 784-512-512-10 at
B=256, GroupNorm CNN on 1x28x28 at B=128, 2-layer transformer (d=128, seq 64, vocab 5000) at
B=32; ``--models tied`` adds a next-token transformer whose output layer is tied to its token
embedding (also timed through whole-model vmap). Opacus runs every mode it supports (hooks, functorch, ew, ghost); its fastest is the
anchor. Methods run interleaved in one process; medians of R rounds; the machine is shared, so
read the ratios, not the times (the load average is printed with them). Each step is timed in
wall time and in the process's CPU time (one torch thread: the CPU time is what the step costs
whatever else the machine runs, so its ratios are the steadier ones on a loaded machine).

Run: python benchmarks/bench_privacy_own_loop.py [--rounds R] [--models mlp,cnn,transformer,tied]
"""

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from privacy_models import OPACUS_MODES, THREADS, best_opacus, time_methods  # noqa: E402

METHODS = ["nonprivate", "ours_loop", "ours", *(f"opacus_{m}" for m in OPACUS_MODES)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--models", default="mlp,cnn,transformer")
    args = parser.parse_args()
    report = {}
    for name in args.models.split(","):
        # The tied model also runs the user loop through whole-model vmap (what "auto" did with
        # tied weights before they stayed on the hook engine).
        methods = METHODS + (["ours_loop_vmap"] if name == "tied" else [])
        wall, cpu, errors = time_methods(name, methods, args.rounds)
        load = os.getloadavg()[0]
        row = {"best_opacus": {}, "load_average_1min": round(load, 2), "errors": errors}
        print(f"== {name} (load average {load:.2f})")
        for clock, med in (("wall", wall), ("cpu", cpu)):
            best, best_time = best_opacus(med)
            loop = med["ours_loop"]
            ratios = {
                "loop_vs_nonprivate": round(loop / med["nonprivate"], 2),
                "loop_vs_dpsgd_step": round(loop / med["ours"], 2),
                "loop_vs_best_opacus": round(loop / best_time, 2) if best else None,
            }
            row[f"{clock}_ms"] = {m: round(t * 1e3, 2) for m, t in med.items()}
            row[clock] = ratios
            row["best_opacus"][clock] = best
            print(f"   {clock} ms {row[f'{clock}_ms']}")
            if "ours_loop_vmap" in med:
                ratios["loop_vs_whole_model_vmap"] = round(loop / med["ours_loop_vmap"], 2)
                print(
                    f"   {clock}: user loop / whole-model vmap = {ratios['loop_vs_whole_model_vmap']}"
                )
            print(
                f"   {clock}: user loop / non-private = {ratios['loop_vs_nonprivate']} "
                f"(goal <= 1.5); / DPSGD.step = {ratios['loop_vs_dpsgd_step']}; "
                f"/ best Opacus ({best}) = {ratios['loop_vs_best_opacus']} (goal <= 0.7)"
            )
        if errors:
            print(f"   unsupported: {errors}")
        report[name] = row
    print(json.dumps({"benchmark": "privacy_own_loop", "threads": THREADS, "results": report}))


if __name__ == "__main__":
    main()
