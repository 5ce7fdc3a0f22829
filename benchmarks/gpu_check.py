"""Representative timings on a device against the CPU and the anchors: research_ext on one GPU.

Cases: DCT-II 256x4096, fftconvolve 1e6 x 1023, Welch over 16 x 2^18 samples (float32; anchor:
scipy on the CPU), a 500x500 Jacobian and a 500x500 Hessian (anchor: torch.func on the same
device), a Hessian-vector product of a 784-256-256-10 MLP's loss (anchor: torch.func's
forward-over-reverse on the same device), and one DP-SGD step of an MLP (784-512-512-10, B=256)
and of a GroupNorm CNN (1x28x28, B=128) (anchor: Opacus's fastest mode on the same device, when
opacus is installed). Each case runs research_ext on ``--device``, research_ext on the CPU and
the anchor interleaved in one process, ``torch.cuda.synchronize()`` closing every timed call on
CUDA; medians of ``--rounds`` rounds and two ratios are printed: CPU / device (the speed-up the
device gives research_ext) and device / anchor (research_ext's time relative to the anchor's).
Each case first checks that research_ext on the device agrees with the anchor, and ends with
a JSON line of its medians and ratios.

``--device cpu`` runs the same cases with the CPU as the device (so the script can be smoke-run
anywhere; the CPU column is then the device column), ``--small`` shrinks every size about 16x.
On a shared machine, quote the ratios with that caveat, and pass ``--threads 1``: torch's
multi-threaded CPU kernels slow down many times over when other processes hold the cores.

Run: python benchmarks/gpu_check.py [--device cuda|cpu] [--rounds R] [--small]
[--cases dct,fftconvolve,...] [--threads N] [--budget-s S]
"""

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

warnings.filterwarnings("ignore")

CPU = torch.device("cpu")


class Case:
    """Builders of the three timed callables of one case, at a device."""

    def __init__(self, name: str, anchor_name: str, build: Callable[..., Any]) -> None:
        self.name, self.anchor_name, self.build = name, anchor_name, build


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _rel_err(ours: Any, ref: Any) -> float:
    a = ours.detach().cpu().double().numpy() if isinstance(ours, torch.Tensor) else ours
    b = ref.detach().cpu().double().numpy() if isinstance(ref, torch.Tensor) else ref
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# ---------------------------------------------------------------------------------------------
# Spectral cases (anchor: scipy on the CPU, float32 like ours).


def _dct(device: torch.device, small: bool):
    import scipy.fft

    import research_ext.complex as rxc

    rows, n = (64, 512) if small else (256, 4096)
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(0))
    xd, xn = x.to(device), x.numpy()
    return (
        lambda: rxc.fft.dct(xd, type=2),
        lambda: rxc.fft.dct(x, type=2),
        lambda: scipy.fft.dct(xn, type=2),
        f"{rows}x{n}",
    )


def _fftconvolve(device: torch.device, small: bool):
    import scipy.signal

    import research_ext.complex as rxc

    n, k = (100_000, 255) if small else (1_000_000, 1023)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, generator=g), torch.randn(k, generator=g)
    ad, bd, an, bn = a.to(device), b.to(device), a.numpy(), b.numpy()
    return (
        lambda: rxc.signal.fftconvolve(ad, bd),
        lambda: rxc.signal.fftconvolve(a, b),
        lambda: scipy.signal.fftconvolve(an, bn),
        f"{n}x{k}",
    )


def _welch(device: torch.device, small: bool):
    import scipy.signal

    import research_ext.complex as rxc

    rows, n = (4, 2**15) if small else (16, 2**18)
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(0))
    xd, xn = x.to(device), x.numpy()
    return (
        lambda: rxc.signal.welch(xd, nperseg=1024)[1],
        lambda: rxc.signal.welch(x, nperseg=1024)[1],
        lambda: scipy.signal.welch(xn, nperseg=1024)[1],
        f"{rows}x{n}, nperseg 1024",
    )


# ---------------------------------------------------------------------------------------------
# Transform cases (anchor: torch.func on the same device).


def _square_map(n: int, device: torch.device):
    w = torch.randn(n, n, generator=torch.Generator().manual_seed(0)) / n**0.5
    wd = w.to(device)
    return lambda x: torch.tanh(wd @ x) + 0.1 * x * x.sum()


def _jacobian(device: torch.device, small: bool):
    import research_ext.functional as rf

    n = 100 if small else 500
    x = torch.randn(n, generator=torch.Generator().manual_seed(1))
    f_dev, f_cpu = _square_map(n, device), _square_map(n, CPU)
    xd = x.to(device)
    return (
        lambda: rf.jacobian(f_dev)(xd),
        lambda: rf.jacobian(f_cpu)(x),
        lambda: torch.func.jacrev(f_dev)(xd),
        f"{n}x{n}",
    )


def _hessian(device: torch.device, small: bool):
    import research_ext.functional as rf

    n = 100 if small else 500
    x = torch.randn(n, generator=torch.Generator().manual_seed(1))
    f_dev, f_cpu = _square_map(n, device), _square_map(n, CPU)
    xd = x.to(device)

    def scalar(f):
        return lambda x: f(x).square().sum()

    return (
        lambda: rf.hessian(scalar(f_dev))(xd),
        lambda: rf.hessian(scalar(f_cpu))(x),
        lambda: torch.func.hessian(scalar(f_dev))(xd),
        f"{n}x{n}",
    )


def _mlp(widths: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _curvature(device: torch.device, small: bool):
    import research_ext.functional as rf

    widths, batch = ((784, 64, 10), 32) if small else ((784, 256, 256, 10), 256)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(batch, 784, generator=g), torch.randint(0, 10, (batch,), generator=g)
    loss_fn = nn.CrossEntropyLoss()

    def ops(dev):
        model = _mlp(widths).to(dev)
        data = (x.to(dev), y.to(dev))
        op = rf.hessian_operator(model, loss_fn, data)
        v = torch.randn(op.shape[1], generator=torch.Generator().manual_seed(3)).to(dev)
        return model, data, op, v

    model, data, op_dev, v_dev = ops(device)
    _, _, op_cpu, v_cpu = ops(CPU)
    params = {n: p.detach() for n, p in model.named_parameters()}
    names, shapes = list(params), [p.shape for p in params.values()]
    sizes = [p.numel() for p in params.values()]

    def loss_of_flat(flat):
        chunks = flat.split(sizes)
        ps = {n: c.reshape(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return loss_fn(torch.func.functional_call(model, ps, (data[0],)), data[1])

    flat = torch.cat([p.reshape(-1) for p in params.values()])
    grad = torch.func.grad(loss_of_flat)
    return (
        lambda: op_dev.matvec(v_dev),
        lambda: op_cpu.matvec(v_cpu),
        lambda: torch.func.jvp(grad, (flat,), (v_dev,))[1],
        f"MLP {'-'.join(map(str, widths))}, B={batch}, P={flat.numel()}",
    )


# ---------------------------------------------------------------------------------------------
# DP-SGD step cases (anchor: Opacus's fastest mode on the same device).


def _cnn() -> nn.Module:
    """The GroupNorm CNN of the privacy benchmarks (``benchmarks/privacy_models.py``)."""
    from privacy_models import build

    return build("cnn")[0]


def _dp_step_ours(model: nn.Module, x, y, device: torch.device) -> Callable[[], None]:
    from research_ext.privacy import DPSGD

    model = copy.deepcopy(model).to(device)
    xd, yd = x.to(device), y.to(device)
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=1.0,
        delta=1e-5,
        sample_rate=x.shape[0] / 60_000,
        dataset_size=60_000,
        noise_multiplier=1.0,
        generator=0,  # a generator on the model's device: the noise is drawn there
    )
    return lambda: dp.step((xd, yd))


def _dp_step_opacus(model: nn.Module, x, y, device: torch.device, mode: str):
    from opacus import PrivacyEngine

    model = copy.deepcopy(model).to(device)
    xd, yd = x.to(device), y.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xd, yd), batch_size=x.shape[0]
    )
    out = PrivacyEngine(accountant="rdp").make_private(
        module=model,
        optimizer=opt,
        data_loader=loader,
        criterion=nn.CrossEntropyLoss(),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        grad_sample_mode=mode,
    )
    pmodel, popt = out[0], out[1]
    criterion = out[2] if mode == "ghost" else nn.CrossEntropyLoss()

    def step():
        popt.zero_grad(set_to_none=True)
        criterion(pmodel(xd), yd).backward()
        popt.step()

    return step


OPACUS_MODES = ("hooks", "functorch", "ghost")


def _fastest_opacus(model, x, y, device: torch.device, sync) -> tuple[Callable[[], None], str]:
    """Opacus's fastest mode here (median of 3 calls each, after a warm-up)."""
    best, best_time, name = None, float("inf"), "none"
    for mode in OPACUS_MODES:
        try:
            step = _dp_step_opacus(model, x, y, device, mode)
            step()
        except Exception:  # a mode that does not support a layer
            continue
        times = []
        for _ in range(3):
            sync()
            t = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t)
        if statistics.median(times) < best_time:
            best, best_time, name = step, statistics.median(times), mode
    assert best is not None, "no Opacus mode ran"
    return best, f"Opacus {name}"


def _dp_step(kind: str):
    def build(device: torch.device, small: bool):
        g = torch.Generator().manual_seed(4)
        if kind == "mlp":
            model = _mlp((784, 128, 10) if small else (784, 512, 512, 10))
            batch = 32 if small else 256
        else:
            model = _cnn()
            batch = 16 if small else 128
        x, y = (
            torch.randn(batch, 1, 28, 28, generator=g),
            torch.randint(0, 10, (batch,), generator=g),
        )
        ours_dev = _dp_step_ours(model, x, y, device)
        ours_cpu = _dp_step_ours(model, x, y, CPU)
        try:
            import opacus  # noqa: F401
        except ImportError:
            anchor = None
        else:
            anchor = _fastest_opacus(model, x, y, device, _sync(device))
        return ours_dev, ours_cpu, anchor, f"{kind.upper()}, B={batch}"

    return build


CASES = {
    "dct": Case("DCT-II", "scipy", _dct),
    "fftconvolve": Case("fftconvolve", "scipy", _fftconvolve),
    "welch": Case("welch", "scipy", _welch),
    "jacobian": Case("jacobian", "torch.func", _jacobian),
    "hessian": Case("hessian", "torch.func", _hessian),
    "curvature": Case("Hessian matvec", "torch.func", _curvature),
    "dp_mlp": Case("DP-SGD step", "Opacus", _dp_step("mlp")),
    "dp_cnn": Case("DP-SGD step", "Opacus", _dp_step("cnn")),
}


def _interleaved_medians(fns: dict[str, Callable[[], Any]], rounds: int, sync) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[key].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def run_case(key: str, device: torch.device, rounds: int, small: bool) -> dict[str, Any]:
    case = CASES[key]
    sync = _sync(device)
    built = case.build(device, small)
    ours_dev, ours_cpu, anchor, size = built
    anchor_name = case.anchor_name
    if isinstance(anchor, tuple):  # (callable, the anchor's own name)
        anchor, anchor_name = anchor
    fns = {"device": ours_dev}
    if device.type != "cpu":
        fns["cpu"] = ours_cpu
    if anchor is not None:
        fns["anchor"] = anchor
    agree, first = None, None
    for name, fn in fns.items():  # warm-up (kernels, caches, plans)
        out = fn()
        sync()
        if name == "device":
            first = out
        elif name == "anchor" and first is not None and out is not None:
            agree = _rel_err(first, out)
    med = _interleaved_medians(fns, rounds, sync)
    cpu = med.get("cpu", med["device"])
    return {
        "case": f"{case.name} ({size})",
        "anchor": anchor_name if anchor is not None else f"{anchor_name} (not installed)",
        "ms": {k: round(v * 1e3, 3) for k, v in med.items()},
        "cpu_over_device": round(cpu / med["device"], 2),
        "device_over_anchor": round(med["device"] / med["anchor"], 2) if anchor else None,
        "agreement": agree,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--small", action="store_true", help="shrink every size ~16x")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default: torch's, all cores)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=300.0, help="start no new case after this many seconds"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    keys = [k.strip() for k in args.cases.split(",") if k.strip()]
    unknown = sorted(set(keys) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASES)}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"gpu_check on {device} ({name}), torch {torch.__version__}, {args.rounds} rounds, "
        f"{torch.get_num_threads()} CPU threads{', small sizes' if args.small else ''}"
    )
    print("ratios: cpu/device > 1 means the device is faster; device/anchor < 1 means ours is")
    start, failures = time.perf_counter(), 0
    for key in keys:
        if time.perf_counter() - start > args.budget_s:
            print(f"-- {key}: not run (over the {args.budget_s:.0f} s budget)")
            continue
        try:
            row = run_case(key, device, args.rounds, args.small)
        except Exception as err:  # report and go on: one broken case must not hide the others
            failures += 1
            print(f"-- {key}: FAILED {type(err).__name__}: {str(err)[:200]}")
            continue
        ms = row["ms"]
        cpu = f"cpu {ms['cpu']:.3f} ms, " if "cpu" in ms else ""
        anchor = f"{row['anchor']} {ms['anchor']:.3f} ms" if "anchor" in ms else row["anchor"]
        agree = (
            "" if row["agreement"] is None else f", max rel. diff to anchor {row['agreement']:.1e}"
        )
        print(f"-- {row['case']}: device {ms['device']:.3f} ms, {cpu}{anchor}")
        ratios = f"   cpu/device = {row['cpu_over_device']}"
        if row["device_over_anchor"] is not None:
            ratios += f", device/anchor = {row['device_over_anchor']}"
        print(ratios + agree)
        print(json.dumps({"device": str(device), **row}))
    print(
        f"gpu_check: {len(keys) - failures} of {len(keys)} cases ran in {time.perf_counter() - start:.0f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
