"""DP-SGD in the user's own loop (DPOptimizer) vs a non-private step, DPSGD.step and Opacus 1.6.

The user-loop step is what a training script runs: ``loss_fn(model(x), y).backward();
opt.step(); opt.zero_grad()`` with ``opt`` a :class:`research_ext.privacy.DPOptimizer`
(loss check on the first step only, the default). Models and batches are those of
``bench_privacy_step.py``: MLP 784-512-512-10 at B=256, GroupNorm CNN on 1x28x28 at B=128,
2-layer transformer (d=128, seq 64, vocab 5000) at B=32. Opacus runs every mode it supports
(hooks, functorch, ew, ghost); its fastest is the anchor. Methods run interleaved in one
process; medians of R rounds; the machine is shared, so read the ratios, not the times.

Run: python benchmarks/bench_privacy_own_loop.py [--rounds R] [--models mlp,cnn,transformer]
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time
import warnings

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_privacy_step as base  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))

METHODS = [
    "nonprivate",
    "ours_loop",
    "ours",
    "opacus_hooks",
    "opacus_functorch",
    "opacus_ew",
    "opacus_ghost",
]


def make_loop_step(name):
    """One DPOptimizer step in the user's loop on model ``name``."""
    from research_ext.privacy import DPOptimizer

    model, x, y, b = base.build(name)
    loss_fn = nn.CrossEntropyLoss()
    opt = DPOptimizer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        max_grad_norm=base.C,
        delta=1e-5,
        sample_rate=b / base.N,
        dataset_size=base.N,
        noise_multiplier=base.SIGMA,
        generator=torch.Generator().manual_seed(0),
    )

    def step():
        loss_fn(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_model(name, rounds):
    steps, errors = {}, {}
    for m in METHODS:
        try:
            s = make_loop_step(name) if m == "ours_loop" else base.make_step(name, m)
            s()
            s()  # warm-up (the loop's loss check runs on the first step)
            steps[m] = s
        except Exception as err:  # an Opacus mode that does not support a layer
            errors[m] = f"{type(err).__name__}: {str(err)[:80]}"
    times = {m: [] for m in steps}
    for _ in range(rounds):
        for m, s in steps.items():
            t = time.perf_counter()
            s()
            times[m].append(time.perf_counter() - t)
    return {m: statistics.median(v) for m, v in times.items()}, errors


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--models", default="mlp,cnn,transformer")
    args = parser.parse_args()
    report = {}
    for name in args.models.split(","):
        med, errors = time_model(name, args.rounds)
        opacus = {m: t for m, t in med.items() if m.startswith("opacus")}
        best = min(opacus, key=opacus.get) if opacus else None
        loop = med["ours_loop"]
        row = {
            "ms": {m: round(t * 1e3, 2) for m, t in med.items()},
            "loop_vs_nonprivate": round(loop / med["nonprivate"], 2),
            "loop_vs_dpsgd_step": round(loop / med["ours"], 2),
            "loop_vs_best_opacus": round(loop / opacus[best], 2) if best else None,
            "best_opacus": best,
            "errors": errors,
        }
        report[name] = row
        print(f"== {name}: step ms {row['ms']}")
        print(
            f"   user loop / non-private = {row['loop_vs_nonprivate']} (goal <= 1.5); "
            f"/ DPSGD.step = {row['loop_vs_dpsgd_step']}; "
            f"/ best Opacus ({best}) = {row['loop_vs_best_opacus']} (goal <= 0.7)"
        )
        if errors:
            print(f"   unsupported: {errors}")
    print(json.dumps({"benchmark": "privacy_own_loop", "results": report}))


if __name__ == "__main__":
    main()
