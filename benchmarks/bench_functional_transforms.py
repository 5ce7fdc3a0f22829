"""research_ext.functional transforms vs torch.func and torch.autograd.functional.

Every comparison runs side by side in one process, interleaved (ours, anchor, ours, ...), and
reports medians and the ratio ours / anchor, plus one JSON line per comparison.

    python benchmarks/bench_functional_transforms.py [--only jacobian,hessian,hvp,memory]
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import research_ext.functional as rf

torch.set_num_threads(1)
DTYPE = torch.float64
CLOCK = time.thread_time


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 7) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation.

    Each sample times enough back-to-back calls to last ~20 ms (short calls are noisy on a
    shared machine); the samples of all functions alternate, so drift hits them alike. The
    clock is the thread's CPU time (``time.thread_time``): with ``torch.set_num_threads(1)`` all
    work runs on this thread, and time spent descheduled by other processes does not count.
    """
    number = {}
    for key, fn in fns.items():  # warm-up (also fills caches such as the auto-mode decision)
        start = CLOCK()
        fn()
        number[key] = max(1, min(50, int(0.02 / max(CLOCK() - start, 1e-6))))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = CLOCK()
            for _ in range(number[key]):
                fn()
            times[key].append((CLOCK() - start) / number[key])
    return {k: statistics.median(v) for k, v in times.items()}


def report(name: str, medians: dict[str, float], ours: str, targets: dict[str, tuple]) -> None:
    """Print medians and ours/anchor ratios against targets; one JSON line."""
    row = {"bench": name, "median_s": medians, "ratios": {}}
    parts = [f"{k}={v * 1e3:.2f}ms" for k, v in medians.items()]
    print(f"{name}: " + ", ".join(parts))
    for anchor, (op, target) in targets.items():
        ratio = medians[ours] / medians[anchor]
        ok = ratio <= target if op == "<=" else ratio <= 1 / target
        shown = f"{ratio:.3f}" if op == "<=" else f"{1 / ratio:.1f}x faster"
        goal = f"<= {target}" if op == "<=" else f">= {target}x faster"
        print(f"  {ours}/{anchor}: {shown} (target {goal}) {'OK' if ok else 'MISS'}")
        row["ratios"][f"{ours}/{anchor}"] = {"ratio": ratio, "target": f"{op}{target}", "ok": ok}
    print(json.dumps(row))


def bench_jacobian() -> None:
    gen = torch.Generator().manual_seed(0)
    for n, m in [(1000, 10), (10, 1000), (500, 500)]:
        hidden = 256
        w1 = torch.randn(hidden, n, generator=gen, dtype=DTYPE) / n**0.5
        w2 = torch.randn(m, hidden, generator=gen, dtype=DTYPE) / hidden**0.5
        x = torch.randn(n, generator=gen, dtype=DTYPE)

        def f(x, w1=w1, w2=w2):
            return w2 @ torch.tanh(w1 @ x)

        ours = rf.jacobian(f)
        fns = {
            "auto": lambda: ours(x),  # noqa: B023
            "jacrev": lambda: torch.func.jacrev(f)(x),  # noqa: B023
            "jacfwd": lambda: torch.func.jacfwd(f)(x),  # noqa: B023
            "autograd": lambda: torch.autograd.functional.jacobian(f, x),  # noqa: B023
        }
        interleaved(fns, repeats=2)  # process warm-up (allocator, autograd caches)
        med = interleaved(fns, repeats=15)
        best = "jacrev" if med["jacrev"] <= med["jacfwd"] else "jacfwd"
        targets = {best: ("<=", 1.10)}
        if (n, m) in [(500, 500), (10, 1000)]:
            targets["autograd"] = (">=", 10)
        report(f"jacobian (n={n}, m={m})", med, "auto", targets)


def bench_hessian() -> None:
    gen = torch.Generator().manual_seed(1)
    for n in [200, 500, 1000]:
        a = torch.randn(n, n, generator=gen, dtype=DTYPE) / n**0.5
        x = torch.randn(n, generator=gen, dtype=DTYPE)

        def f(x, a=a):
            return torch.tanh(a @ x).pow(2).sum() + (x * (a @ x)).sum()

        ours = rf.hessian(f)
        fns = {
            "ours": lambda: ours(x),  # noqa: B023
            "jacrev(jacrev)": lambda: torch.func.jacrev(torch.func.jacrev(f))(x),  # noqa: B023
            "torch.func.hessian": lambda: torch.func.hessian(f)(x),  # noqa: B023
        }
        med = interleaved(fns, repeats=5)
        report(
            f"hessian (n={n})",
            med,
            "ours",
            {"jacrev(jacrev)": ("<=", 1.10), "torch.func.hessian": ("<=", 1.0)},
        )


def _mlp_problem(batch: int):
    gen = torch.Generator().manual_seed(2)
    # The ~50k-parameter MLP of the issue: 784 -> 64 -> 10 (50,890 parameters).
    model = nn.Sequential(nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 10))
    model = model.to(DTYPE)
    params = {k: v.detach() for k, v in model.named_parameters()}
    xb = torch.randn(batch, 784, generator=gen, dtype=DTYPE)
    yb = torch.randint(0, 10, (batch,), generator=gen)

    def loss(p):
        out = torch.func.functional_call(model, p, (xb,))
        return nn.functional.cross_entropy(out, yb)

    v = {k: torch.randn(t.shape, generator=gen, dtype=DTYPE) for k, t in params.items()}
    return loss, params, v


def _autograd_gradient(loss, params):
    leaves = {k: t.detach().requires_grad_() for k, t in params.items()}
    return torch.autograd.grad(loss(leaves), list(leaves.values()))


def bench_hvp() -> None:
    """hvp vs one gradient (the faster of torch.autograd.grad and torch.func.grad)."""
    for batch, fresh_target in [(128, 2.5), (1024, 2.0)]:
        loss, params, v = _mlp_problem(batch)
        n_params = sum(t.numel() for t in params.values())
        grad_fn = torch.func.grad(loss)
        hvp_at = rf.hessian_vector_product(loss, (params,))
        fns = {
            "hvp fresh": lambda: rf.hvp(loss, (params,), (v,)),  # noqa: B023
            "hvp repeated": lambda: hvp_at((v,)),  # noqa: B023
            "autograd.grad": lambda: _autograd_gradient(loss, params),  # noqa: B023
            "func.grad": lambda: grad_fn(params),  # noqa: B023
            "jvp(grad)": lambda: torch.func.jvp(grad_fn, (params,), (v,)),  # noqa: B023
            "autograd.functional.hvp": lambda: torch.autograd.functional.hvp(  # noqa: B023
                lambda *t: loss(dict(zip(params, t, strict=True))),  # noqa: B023
                tuple(params.values()),  # noqa: B023
                tuple(v.values()),  # noqa: B023
            ),
        }
        med = interleaved(fns, repeats=15)
        med["one gradient"] = min(med["autograd.grad"], med["func.grad"])
        print(f"# MLP 784-64-10 with {n_params} parameters, batch {batch}")
        report(
            f"hvp fresh (batch={batch})",
            med,
            "hvp fresh",
            {
                "one gradient": ("<=", fresh_target),
                "jvp(grad)": ("<=", 1.0),
                "autograd.functional.hvp": ("<=", 1.0),
            },
        )
        report(f"hvp repeated (batch={batch})", med, "hvp repeated", {"one gradient": ("<=", 1.2)})


def bench_jet() -> None:
    """derivatives(f, order) (Taylor mode, one pass) vs nested torch.func.grad, orders 1..8."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1000, generator=gen, dtype=DTYPE)

    def f(x):
        return torch.sin(x) * torch.exp(-x * x) + torch.tanh(x)

    rows = []
    for order in range(1, 9):
        fns_nested = [f]
        for _ in range(order):
            fns_nested.append(
                (lambda g: lambda z: torch.func.grad(lambda u: g(u).sum())(z))(fns_nested[-1])
            )
        nested_top = fns_nested[-1]
        ours = rf.derivatives(f, order)
        med = interleaved(
            {"derivatives": lambda ours=ours: ours(x), "nested grad": lambda g=nested_top: g(x)},
            repeats=7,
        )
        ratio = med["derivatives"] / med["nested grad"]
        rows.append({"order": order, **med, "ratio": ratio})
        print(
            f"order {order}: derivatives (all orders 0..{order}) {med['derivatives'] * 1e3:.2f}ms, "
            f"nested grad (order {order} only) {med['nested grad'] * 1e3:.2f}ms, ratio {ratio:.3f}"
        )
    growth = rows[-1]["derivatives"] / rows[0]["derivatives"]
    nested_growth = rows[-1]["nested grad"] / rows[0]["nested grad"]
    print(
        f"  cost growth order 1 -> 8: derivatives {growth:.1f}x, nested grad {nested_growth:.1f}x"
    )
    print(json.dumps({"bench": "derivatives vs nested grad", "rows": rows}))


def bench_memory() -> None:
    """Peak memory of a chunked dense Jacobian, in fresh subprocesses (Linux VmHWM, reset per call)."""
    import os
    import subprocess
    import sys

    code = r"""
import json, re, sys, time, torch
import research_ext.functional as rf
torch.set_num_threads(1)
n = 1500
gen = torch.Generator().manual_seed(3)
w = torch.randn(n, n, generator=gen, dtype=torch.float64) / n**0.5
x = torch.randn(n, generator=gen, dtype=torch.float64)
f = lambda x: torch.tanh(w @ x) * x
kind = sys.argv[1]
fn = {"auto": lambda: rf.jacobian(f, chunk_size="auto")(x), "jacrev": lambda: torch.func.jacrev(f)(x)}[kind]

def status(field):
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1))

fn()  # warm-up
extra, times = [], []
for _ in range(5):
    with open("/proc/self/clear_refs", "w") as handle:  # reset the peak (VmHWM) to the current RSS
        handle.write("5")
    base = status("VmRSS")
    t = time.thread_time(); jac = fn(); times.append(time.thread_time() - t)
    extra.append(status("VmHWM") - base)
    del jac
print(json.dumps({"extra_kib": sorted(extra)[2], "out_kib": n * n * 8 / 1024, "time": sorted(times)[2]}))
"""
    results: dict[str, list[dict]] = {"auto": [], "jacrev": []}
    for _ in range(3):  # interleave the processes too
        for kind in results:
            # A fixed mmap threshold makes glibc map and unmap every large block, so the peak
            # resident size tracks the peak of live tensors instead of heap fragmentation.
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run(
                [sys.executable, "-c", code, kind],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {}
    for kind, rows in results.items():
        summary[kind] = {
            "peak_over_output": statistics.median(r["extra_kib"] / r["out_kib"] for r in rows),
            "time": statistics.median(r["time"] for r in rows),
        }
    ratio_t = summary["auto"]["time"] / summary["jacrev"]["time"]
    mem = summary["auto"]["peak_over_output"]
    print(
        f"dense jacobian 1500x1500 with chunk_size='auto': peak {mem:.2f}x output "
        f"(target <= 2.5) {'OK' if mem <= 2.5 else 'MISS'}; jacrev peak "
        f"{summary['jacrev']['peak_over_output']:.2f}x; time auto/jacrev {ratio_t:.3f} "
        f"(target <= 1.2) {'OK' if ratio_t <= 1.2 else 'MISS'}"
    )
    print(json.dumps({"bench": "jacobian memory budget", **summary, "time_ratio": ratio_t}))


SECTIONS = {
    "jacobian": bench_jacobian,
    "hessian": bench_hessian,
    "hvp": bench_hvp,
    "jet": bench_jet,
    "memory": bench_memory,
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(SECTIONS))
    for section in parser.parse_args().only.split(","):
        SECTIONS[section]()
