"""DP-SGD step time and memory: research_ext.privacy vs Opacus 1.6, as ratios to a non-private step.

Four models: MLP 784-512-512-10 at B=256, a GroupNorm CNN on 1x28x28 at B=128, a 2-layer
transformer (d=128, seq 64, vocab 5000) at B=32, and an LSTM classifier (embedding 5000x64,
nn.LSTM 64->128 over 32 steps, linear head) at B=32 (Opacus runs its DPLSTM there). Methods run interleaved in one
process (median of R rounds) so the shared machine's noise cancels in the ratios; step memory is
the peak resident-memory growth (sampled) of a fresh subprocess during 3 steps of one
method, after one warm-up step (so it counts activations, per-sample state and gradients, not
parameters or caches).

Run: python benchmarks/bench_privacy_step.py [--rounds R] [--models mlp,cnn,transformer,lstm]
[--no-memory]
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch
from torch import nn

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)
warnings.filterwarnings("ignore")

N = 60_000
SIGMA, C = 1.0, 1.0


class TinyTransformer(nn.Module):
    def __init__(self, vocab=5000, d=128, seq=64, layers=2, classes=10):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True)
            for _ in range(layers)
        )
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        pos = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        h = self.tok(x) + self.pos(pos)
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(1))


class LSTMClassifier(nn.Module):
    def __init__(self, lstm=nn.LSTM, vocab=5000, d=64, hidden=128, classes=10):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.rnn = lstm(d, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        _, (h, _) = self.rnn(self.emb(x))
        return self.head(h[-1])


def build(name, opacus=False):
    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )
        b = 256
        x = torch.randn(b, 1, 28, 28)
    elif name == "cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.GroupNorm(4, 16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.GroupNorm(4, 32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 10),
        )
        b = 128
        x = torch.randn(b, 1, 28, 28)
    elif name == "lstm":
        if opacus:  # Opacus needs its own DPLSTM (nn.LSTM has no grad sampler there)
            from opacus.layers import DPLSTM

            model = LSTMClassifier(lstm=DPLSTM)
        else:
            model = LSTMClassifier()
        b = 32
        x = torch.randint(0, 5000, (b, 32))
    else:
        model = TinyTransformer()
        b = 32
        x = torch.randint(0, 5000, (b, 64))
    y = torch.randint(0, 10, (b,))
    return model, x, y, b


def make_step(name, method):
    """A closure running one optimizer step of ``method`` on model ``name``."""
    model, x, y, b = build(name)
    loss_fn = nn.CrossEntropyLoss()
    if method == "nonprivate":
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

        return step
    if method.startswith("ours"):
        from research_ext.privacy import DPSGD

        mode = method.split("_", 1)[1] if "_" in method else "auto"
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        dp = DPSGD(
            model,
            opt,
            loss_fn=loss_fn,
            max_grad_norm=C,
            delta=1e-5,
            sample_rate=b / N,
            dataset_size=N,
            noise_multiplier=SIGMA,
            grad_sample_mode=mode,
            generator=torch.Generator().manual_seed(0),
        )
        return lambda: dp.step((x, y))
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    mode = method.split("_", 1)[1]
    model = ModuleValidator.fix(copy.deepcopy(build(name, opacus=True)[0]))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=b)
    engine = PrivacyEngine(accountant="rdp")
    out = engine.make_private(
        module=model,
        optimizer=opt,
        data_loader=loader,
        criterion=loss_fn,
        noise_multiplier=SIGMA,
        max_grad_norm=C,
        poisson_sampling=False,
        grad_sample_mode=mode,
    )
    pmodel, popt = out[0], out[1]
    crit = out[2] if mode == "ghost" else loss_fn

    def step():
        popt.zero_grad(set_to_none=True)
        crit(pmodel(x), y).backward()
        popt.step()

    return step


METHODS = ["nonprivate", "ours", "opacus_hooks", "opacus_functorch", "opacus_ew", "opacus_ghost"]


def time_model(name, rounds):
    steps, errors = {}, {}
    for m in METHODS:
        try:
            s = make_step(name, m)
            s()
            s()  # warm-up
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


_MEMORY_PROBE = """
import sys, threading, time, torch
sys.path.insert(0, "benchmarks")
import bench_privacy_step as b

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
        med, errors = time_model(name, args.rounds)
        base = med["nonprivate"]
        opacus = {m: t for m, t in med.items() if m.startswith("opacus")}
        best = min(opacus, key=opacus.get) if opacus else None
        row = {
            "ms": {m: round(t * 1e3, 2) for m, t in med.items()},
            "ratio_to_nonprivate": {m: round(t / base, 2) for m, t in med.items()},
            "ours_vs_best_opacus": round(med["ours"] / opacus[best], 2) if best else None,
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
        if "step_mem_mib" in row:
            print(
                f"   step memory MiB {row['step_mem_mib']}; ratio {row['mem_ratio_to_nonprivate']}"
            )
        if errors:
            print(f"   unsupported: {errors}")
    print(json.dumps({"benchmark": "privacy_step", "threads": THREADS, "results": report}))


if __name__ == "__main__":
    main()
