"""Complex layers vs native complex64 torch, real BatchNorm and complexPyTorch (interleaved).

Every case times one forward + backward pass per call; all implementations of a case run
alternately inside one loop so machine noise hits them alike, and the medians' ratio is printed
with its target. complexPyTorch (benchmark-only anchor, ``requirements-complex-layers.txt``) is
skipped with a note when it is not installed.

Targets: ComplexLinear / ComplexConv2d vs native complex64 torch <= 1.05x; whitening
ComplexBatchNorm2d vs real BatchNorm2d on 2C channels <= 2.0x. Both the ratio of medians and the
median of per-round (paired) ratios are printed. On a shared, oversubscribed machine pass
``--threads 1``: OpenMP spin-waiting under oversubscription distorts multi-op layers far more
than single fused kernels.
"""

import argparse
import importlib.util
import json
import platform
import statistics
import time

import torch

import research_ext.complex as rxc


def _fwd_bwd(module, x, grad):
    x.grad = None
    out = module(x)
    out.backward(grad)


def _cases(size):
    scale = {"small": 1, "full": 2}[size]
    n_lin, c, hw = 256 * scale, 32, 16 * scale
    cases = {}
    z = torch.randn(n_lin, 256, dtype=torch.complex64, requires_grad=True)
    cases["linear"] = {
        "input": z,
        "ours": rxc.nn.ComplexLinear(256, 256),
        "native": torch.nn.Linear(256, 256, dtype=torch.complex64),
        "target": 1.05,
        "baseline": "native",
    }
    z = torch.randn(16, 16, hw, hw, dtype=torch.complex64, requires_grad=True)
    cases["conv2d"] = {
        "input": z,
        "ours": rxc.nn.ComplexConv2d(16, 16, 3, padding=1),
        "native": torch.nn.Conv2d(16, 16, 3, padding=1, dtype=torch.complex64),
        "target": 1.05,
        "baseline": "native",
    }
    z = torch.randn(32, c, hw, hw, dtype=torch.complex64, requires_grad=True)
    cases["batchnorm2d"] = {
        "input": z,
        "ours": rxc.nn.ComplexBatchNorm2d(c),
        "real_bn_2c": torch.nn.BatchNorm2d(2 * c),
        "real_input": torch.randn(32, 2 * c, hw, hw, requires_grad=True),
        "target": 2.0,
        "baseline": "real_bn_2c",
    }
    if importlib.util.find_spec("complexPyTorch") is not None:
        from complexPyTorch import complexLayers as cpt

        cases["linear"]["complexPyTorch"] = cpt.ComplexLinear(256, 256)
        cases["conv2d"]["complexPyTorch"] = cpt.ComplexConv2d(16, 16, 3, padding=1)
        cases["batchnorm2d"]["complexPyTorch"] = cpt.ComplexBatchNorm2d(c)
    return cases


def _time_case(case, repeats, warmup):
    impls = [k for k, v in case.items() if isinstance(v, torch.nn.Module)]
    times = {k: [] for k in impls}
    for i in range(warmup + repeats):
        for name in impls:
            x = case["real_input"] if name == "real_bn_2c" else case["input"]
            grad = torch.ones_like(x)
            start = time.perf_counter()
            _fwd_bwd(case[name], x, grad)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    for name, case in _cases(args.size).items():
        times = _time_case(case, args.repeats, warmup=5)
        medians = {k: statistics.median(v) for k, v in times.items()}
        base = medians[case["baseline"]]
        # Median of per-round ratios: each round runs every implementation back to back, so this
        # pairs measurements taken under the same machine load.
        paired = statistics.median(
            o / b for o, b in zip(times["ours"], times[case["baseline"]], strict=True)
        )
        row = {f"{k}_ms": round(v * 1e3, 4) for k, v in medians.items()}
        row["ratio_ours_vs_" + case["baseline"]] = round(medians["ours"] / base, 3)
        row["paired_ratio_ours_vs_" + case["baseline"]] = round(paired, 3)
        row["target"] = case["target"]
        row["meets_target"] = medians["ours"] / base <= case["target"]
        if "complexPyTorch" in medians:
            row["ratio_ours_vs_complexPyTorch"] = round(
                medians["ours"] / medians["complexPyTorch"], 3
            )
            row["ratio_complexPyTorch_vs_" + case["baseline"]] = round(
                medians["complexPyTorch"] / base, 3
            )
        results[name] = row
        timings = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in medians.items())
        print(f"{name:12s} {timings}")
        print(
            f"{'':12s} ours/{case['baseline']} = {row['ratio_ours_vs_' + case['baseline']]:.3f}x "
            f"(paired {paired:.3f}x; target <= {case['target']}x, "
            f"{'met' if row['meets_target'] else 'MISSED'})"
            + (
                f"; ours/complexPyTorch = {row['ratio_ours_vs_complexPyTorch']:.3f}x"
                if "complexPyTorch" in medians
                else "; complexPyTorch not installed"
            )
        )
    meta = {
        "benchmark": "complex_layers",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "size": args.size,
    }
    print(json.dumps({**meta, "results": results}))


if __name__ == "__main__":
    main()
