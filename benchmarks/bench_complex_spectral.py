"""research_ext.complex spectral ops vs scipy (workers=1) and torch-dct, single thread.

Each case runs ours and the anchor alternately in one process and reports the medians and the
ratio ours / anchor (lower is better), then one JSON line per case. `--quick` shrinks repeats.
"""

import json
import statistics
import sys
import time

import numpy as np
import scipy.fft as sf
import scipy.signal as ss
import torch

import research_ext.complex as rxc

torch.set_num_threads(1)
QUICK = "--quick" in sys.argv


def interleaved(fns: dict, repeats: int) -> dict:
    times = {name: [] for name in fns}
    for fn in fns.values():  # warm-up (caches, plans)
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def report(case: str, target: str, medians: dict, anchor: str) -> None:
    ours = medians["ours"]
    ratios = {name: ours / t for name, t in medians.items() if name != "ours"}
    shown = "  ".join(f"ours/{k}={v:.2f}" for k, v in ratios.items())
    print(f"{case:<44} ours={ours * 1e3:8.3f} ms  {shown}  (target {target} vs {anchor})")
    print(json.dumps({"case": case, "median_s": medians, "ratios": ratios, "target": target}))


def reps(n_elements: int) -> int:
    base = 5 if n_elements >= 1 << 18 else 25
    return max(3, base // 3) if QUICK else base


def _dct_fns(x: torch.Tensor, t: int) -> dict:
    import torch_dct

    xn = x.numpy()
    return {
        "ours": lambda: rxc.fft.dct(x, type=t),
        "scipy": lambda: sf.dct(xn, type=t, workers=1),
        "torch_dct": (lambda: torch_dct.dct(x)) if t == 2 else (lambda: torch_dct.idct(x)),
    }


def bench_dct() -> None:
    targets = {(256, 4096): "<=1.3x", (512, 512): "<=1.3x", (1 << 20,): "<=1.5x", (1024,): "<=2.5x"}
    for shape, target in targets.items():
        x = torch.randn(*shape, dtype=torch.float64)
        for t in (2, 3):
            medians = interleaved(_dct_fns(x, t), reps(x.numel()))
            report(f"dct type {t} {shape}", f"{target} scipy, <=0.5x torch-dct", medians, "scipy")
    x = torch.randn(512, 512, dtype=torch.float64)
    fns = {"ours": lambda: rxc.fft.dctn(x), "scipy": lambda: sf.dctn(x.numpy(), workers=1)}
    report("dctn type 2 (512, 512)", "<=2x", interleaved(fns, reps(x.numel())), "scipy")


def _conv_case(x: torch.Tensor, taps: int) -> None:
    h = torch.randn(taps, dtype=torch.float64)
    xn, hn = x.numpy(), h.numpy()
    fns = {
        "ours": lambda: rxc.signal.convolve(x, h),
        "scipy_fft": lambda: ss.fftconvolve(xn, hn),
        "scipy_oa": lambda: ss.oaconvolve(xn, hn),
    }
    med = interleaved(fns, reps(x.numel()))
    med["scipy_best"] = min(med["scipy_fft"], med["scipy_oa"])
    report(f"convolve auto 1e6 x {taps}", "<=1.2x best of scipy fft/oa", med, "scipy_best")
    fns = {
        "ours": lambda: rxc.signal.fftconvolve(x, h),
        "scipy_fft": lambda: ss.fftconvolve(xn, hn),
    }
    report(f"fftconvolve 1e6 x {taps}", "<=1.2x", interleaved(fns, reps(x.numel())), "scipy_fft")


def bench_convolve() -> None:
    x = torch.randn(1_000_000, dtype=torch.float64)
    for taps in (31, 1023, 65535):
        _conv_case(x, taps)


def bench_welch() -> None:
    n = 1_000_000
    for dtype, target in ((torch.float32, "<=0.5x"), (torch.float64, "<=1.0x")):
        x = torch.randn(n, dtype=dtype)
        xn = x.numpy()
        fns = {
            "ours": lambda x=x: rxc.signal.welch(x, nperseg=1024),
            "scipy": lambda xn=xn: ss.welch(xn, nperseg=1024),
        }
        report(f"welch 1e6 nperseg=1024 {dtype}", target, interleaved(fns, reps(n)), "scipy")
        fns = {
            "ours": lambda x=x: rxc.signal.spectrogram(x, nperseg=1024),
            "scipy": lambda xn=xn: ss.spectrogram(xn, nperseg=1024),
        }
        report(f"spectrogram 1e6 nperseg=1024 {dtype}", target, interleaved(fns, reps(n)), "scipy")


def bench_hilbert() -> None:
    for shape in [(1_000_000,), (64, 4096)]:
        x = torch.randn(*shape, dtype=torch.float64)
        xn = x.numpy()
        fns = {"ours": lambda x=x: rxc.signal.hilbert(x), "scipy": lambda xn=xn: ss.hilbert(xn)}
        report(f"hilbert {shape}", "<=0.9x", interleaved(fns, reps(x.numel())), "scipy")


def bench_passthrough() -> None:
    x = torch.randn(256, 4096, dtype=torch.float64)
    fns = {"ours": lambda: rxc.fft.rfft(x), "torch": lambda: torch.fft.rfft(x)}
    report("rfft pass-through (256, 4096)", "<=1.05x", interleaved(fns, reps(x.numel())), "torch")


if __name__ == "__main__":
    np.random.seed(0)
    torch.manual_seed(0)
    for bench in (bench_dct, bench_convolve, bench_welch, bench_hilbert, bench_passthrough):
        bench()
