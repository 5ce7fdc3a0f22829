"""research_ext.complex on every available device against scipy and CPU float64 references.

Each scipy mirror in ``complex.fft`` and ``complex.signal`` runs on inputs created on the
``device`` fixture's device; the result must stay there and match scipy on the same float64
data. Where the function is differentiable, the gradient of a fixed random projection of its
output on the device must match the same gradient computed on the CPU in float64.

Each layer in ``complex.nn`` runs forward and backward on the device in complex64 against the
same module (its state copied) on the CPU in complex128. On a CPU-only machine this checks the
single- against the double-precision path; with CUDA present, the device path as well.
"""

import copy
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
import scipy.fft as sfft
import scipy.signal as ss
import torch

import research_ext.complex as rxc
from tests.complex.test_layer_contract import LAYERS
from tests.devices.common import assert_matches, assert_on, randn

F, S, NN = rxc.fft, rxc.signal, rxc.nn

SOS = ss.butter(6, 0.15, output="sos")
BA = ss.butter(3, 0.3)
FIR = ([1.0, 2.0, 3.0], [1.0])


class Case(NamedTuple):
    """Ours (tensors in), scipy (arrays in), the inputs' shapes, and whether to check gradients."""

    ours: Callable[..., Any]
    scipy: Callable[..., Any]
    shapes: tuple[tuple[int, ...], ...]
    grad: bool = True
    dtype: torch.dtype = torch.float64


def _r2r_cases() -> dict[str, Case]:
    cases = {}
    for name in ("dct", "idct", "dst", "idst"):
        for kind in (1, 2, 3, 4):
            for norm in (None, "ortho"):
                ours = getattr(F, name)
                ref = getattr(sfft, name)
                cases[f"{name}:{kind}_{norm}"] = Case(
                    lambda x, o=ours, k=kind, nm=norm: o(x, type=k, norm=nm, dim=0),
                    lambda x, r=ref, k=kind, nm=norm: r(x, type=k, norm=nm, axis=0),
                    ((17, 3),),
                )
            nd = name + "n"
            ours_n, ref_n = getattr(F, nd), getattr(sfft, nd)
            cases[f"{nd}:{kind}"] = Case(
                lambda x, o=ours_n, k=kind: o(x, type=k, dim=(0, 2), norm="ortho"),
                lambda x, r=ref_n, k=kind: r(x, type=k, axes=(0, 2), norm="ortho"),
                ((6, 3, 5),),
            )
    cases["dct:2_n_complex"] = Case(
        lambda x: F.dct(x, n=12), lambda x: sfft.dct(x, n=12), ((3, 9),), dtype=torch.complex128
    )
    # 2^16 entries and more without autograd take the neighbour-pair kernel (any device).
    for kind in (2, 3):
        cases[f"dct:{kind}_pairs"] = Case(
            lambda x, k=kind: F.dct(x, type=k, norm="ortho"),
            lambda x, k=kind: sfft.dct(x, type=k, norm="ortho"),
            ((64, 1024),),
        )
        cases[f"idct:{kind}_pairs"] = Case(
            lambda x, k=kind: F.idct(x, type=k),
            lambda x, k=kind: sfft.idct(x, type=k),
            ((64, 1024),),
        )
    cases["dctn:2_s"] = Case(
        lambda x: F.dctn(x, s=(8, 7)), lambda x: sfft.dctn(x, s=(8, 7)), ((2, 6, 9),)
    )
    return cases


def _signal_cases() -> dict[str, Case]:
    cases = {}
    for name in ("convolve", "correlate"):
        ours, ref = getattr(S, name), getattr(ss, name)
        for method in ("direct", "fft", "oa", "auto"):
            for mode in ("full", "same", "valid"):
                cases[f"{name}:{method}_{mode}"] = Case(
                    lambda a, b, f=ours, me=method, mo=mode: f(a, b, mo, me),
                    lambda a, b, f=ref, mo=mode: f(a, b, mo, "direct"),
                    ((60,), (9,)),
                )
        cases[f"{name}:2d"] = Case(
            lambda a, b, f=ours: f(a, b),
            lambda a, b, f=ref: f(a, b),
            ((13, 9), (4, 5)),
        )
    for name in ("fftconvolve", "oaconvolve"):
        ours, ref = getattr(S, name), getattr(ss, name)
        for mode in ("full", "same", "valid"):
            cases[f"{name}:{mode}"] = Case(
                lambda a, b, f=ours, mo=mode: f(a, b, mo, dim=-1),
                lambda a, b, f=ref, mo=mode: f(a, b, mo, axes=-1),
                ((3, 1, 200), (1, 2, 31)),
            )
    cases["fftconvolve:complex"] = Case(
        S.fftconvolve, ss.fftconvolve, ((50,), (7,)), dtype=torch.complex128
    )
    cases["czt"] = Case(
        lambda x: S.czt(x, 20, 0.99 * np.exp(-0.3j), 1.1 * np.exp(0.2j)),
        lambda x: ss.czt(x, 20, 0.99 * np.exp(-0.3j), 1.1 * np.exp(0.2j)),
        ((2, 32),),
    )
    cases["zoom_fft"] = Case(
        lambda x: S.zoom_fft(x, [0.1, 0.4], 25, fs=2.0),
        lambda x: ss.zoom_fft(x, [0.1, 0.4], 25, fs=2.0),
        ((2, 40),),
    )
    cases["hilbert"] = Case(lambda x: S.hilbert(x, N=40), lambda x: ss.hilbert(x, N=40), ((3, 33),))
    cases["hilbert2"] = Case(S.hilbert2, ss.hilbert2, ((9, 12),))
    cases["envelope"] = Case(
        lambda x: S.envelope(x, (2, 30), n_out=70),
        lambda x: ss.envelope(x, (2, 30), n_out=70),
        ((2, 100),),
    )
    cases["lfilter"] = Case(lambda x: S.lfilter(*BA, x), lambda x: ss.lfilter(*BA, x), ((2, 300),))
    cases["lfilter:fir"] = Case(
        lambda x: S.lfilter(*FIR, x, dim=0), lambda x: ss.lfilter(*FIR, x, axis=0), ((50, 2),)
    )
    cases["lfilter:zi"] = Case(
        lambda x, zi: S.lfilter(*BA, x, zi=zi),
        lambda x, zi: ss.lfilter(*BA, x, zi=zi),
        ((2, 80), (2, 3)),
    )
    cases["lfilter:complex"] = Case(
        lambda x: S.lfilter(*BA, x), lambda x: ss.lfilter(*BA, x), ((80,),), dtype=torch.complex128
    )
    cases["sosfilt"] = Case(lambda x: S.sosfilt(SOS, x), lambda x: ss.sosfilt(SOS, x), ((2, 300),))
    cases["sosfilt:zi"] = Case(
        lambda x, zi: S.sosfilt(SOS, x, zi=zi),
        lambda x, zi: ss.sosfilt(SOS, x, zi=zi),
        ((2, 80), (3, 2, 2)),
    )
    cases["sosfiltfilt"] = Case(
        lambda x: S.sosfiltfilt(SOS, x), lambda x: ss.sosfiltfilt(SOS, x), ((2, 200),)
    )
    for padtype in ("odd", "even", "constant", None):
        cases[f"filtfilt:{padtype}"] = Case(
            lambda x, p=padtype: S.filtfilt(*BA, x, padtype=p),
            lambda x, p=padtype: ss.filtfilt(*BA, x, padtype=p),
            ((2, 200),),
        )
    cases["resample"] = Case(lambda x: S.resample(x, 45), lambda x: ss.resample(x, 45), ((60, 2),))
    cases["resample:window"] = Case(
        lambda x: S.resample(x, 25, dim=-1, window="hann"),
        lambda x: ss.resample(x, 25, axis=-1, window="hann"),
        ((2, 40),),
    )
    # A window callable written for numpy, as scipy.signal.resample accepts (it passes numpy).
    cases["resample:numpy_window"] = Case(
        lambda x: S.resample(x, 25, dim=-1, window=lambda f: np.exp(-4.0 * np.asarray(f) ** 2)),
        lambda x: ss.resample(x, 25, axis=-1, window=lambda f: np.exp(-4.0 * np.asarray(f) ** 2)),
        ((2, 40),),
    )
    cases["resample_poly"] = Case(
        lambda x: S.resample_poly(x, 3, 2, dim=-1),
        lambda x: ss.resample_poly(x, 3, 2, axis=-1),
        ((2, 90),),
    )
    spectral = {
        "periodogram": (S.periodogram, ss.periodogram, {"window": "hann"}),
        "welch": (S.welch, ss.welch, {"nperseg": 64}),
        "welch:median": (S.welch, ss.welch, {"nperseg": 64, "average": "median"}),
        "spectrogram": (S.spectrogram, ss.spectrogram, {"nperseg": 64}),
        "spectrogram:complex": (S.spectrogram, ss.spectrogram, {"nperseg": 32, "mode": "complex"}),
        "spectrogram:phase": (S.spectrogram, ss.spectrogram, {"nperseg": 32, "mode": "phase"}),
        "spectrogram:magnitude": (
            S.spectrogram,
            ss.spectrogram,
            {"nperseg": 32, "mode": "magnitude"},
        ),
        "stft": (S.stft, ss.stft, {"nperseg": 64}),
    }
    for name, (ours, ref, kw) in spectral.items():
        cases[name] = Case(
            lambda x, o=ours, k=kw: o(x, fs=10.0, **k),
            lambda x, r=ref, k=kw: r(x, fs=10.0, **k),
            ((2, 500),),
        )
    # A detrend callable written for numpy (scipy's own), as scipy.signal accepts.
    cases["welch:numpy_detrend"] = Case(
        lambda x: S.welch(x, nperseg=64, detrend=lambda seg: ss.detrend(seg, type="linear")),
        lambda x: ss.welch(x, nperseg=64, detrend=lambda seg: ss.detrend(seg, type="linear")),
        ((2, 500),),
        grad=False,
    )
    # An odd number of segments (15) takes the median, an even one (above) the mean of the middle two.
    cases["welch:median_odd"] = Case(
        lambda x: S.welch(x, fs=10.0, nperseg=64, average="median"),
        lambda x: ss.welch(x, fs=10.0, nperseg=64, average="median"),
        ((2, 512),),
    )
    for name in ("csd", "coherence"):
        ours, ref = getattr(S, name), getattr(ss, name)
        cases[name] = Case(
            lambda x, y, o=ours: o(x, y, fs=10.0, nperseg=64),
            lambda x, y, r=ref: r(x, y, fs=10.0, nperseg=64),
            ((2, 500), (2, 500)),
        )
    cases["istft"] = Case(
        lambda z: S.istft(z, nperseg=16),
        lambda z: ss.istft(z, nperseg=16),
        ((9, 12),),
        dtype=torch.complex128,
    )
    return cases


CASES = {**_r2r_cases(), **_signal_cases()}

# The functions below have no tensor input: their inputs' device is asked for (``device=``) or
# taken from the filter coefficients when those are tensors (checked by their own tests below).
NO_TENSOR_INPUT = {"correlation_lags", "get_window", "lfilter_zi", "lfiltic", "sosfilt_zi"}
# torch.fft's own functions, re-exported unchanged, and next_fast_len (pure Python, no tensor).
NOT_OURS = {name for name in F.__all__ if getattr(F, name).__module__.startswith("torch")}
NOT_OURS |= {"next_fast_len"}


def test_every_public_function_has_a_device_case():
    covered = {case.split(":")[0] for case in CASES}
    assert covered == {*F.__all__, *S.__all__} - NOT_OURS - NO_TENSOR_INPUT


def _inputs(case: Case) -> list[torch.Tensor]:
    return [randn(shape, case.dtype, seed=i) for i, shape in enumerate(case.shapes)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_scipy_on_device(name, device):
    case = CASES[name]
    xs = _inputs(case)
    result = case.ours(*[x.to(device) for x in xs])
    assert_on(result, device)
    assert_matches(result, case.scipy(*[x.numpy() for x in xs]))


def _projection_loss(result: Any, seed: int = 100) -> torch.Tensor:
    """A fixed random linear functional of every differentiable output (real and imaginary)."""
    outputs = result if isinstance(result, tuple) else (result,)
    total = torch.zeros((), dtype=torch.float64, device=outputs[0].device)
    for i, out in enumerate(outputs):
        if not out.requires_grad:
            continue
        flat = torch.view_as_real(out) if out.is_complex() else out
        weight = randn(tuple(flat.shape), torch.float64, seed + i).to(flat.device, flat.dtype)
        total = total + (flat * weight).sum()
    return total


def _gradients(case: Case, xs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    leaves = [x.to(device).requires_grad_(True) for x in xs]
    loss = _projection_loss(case.ours(*leaves))
    return [g.cpu() for g in torch.autograd.grad(loss, leaves, allow_unused=True)]


@pytest.mark.parametrize("name", sorted(name for name, case in CASES.items() if case.grad))
def test_gradient_on_device_matches_cpu_float64(name, device):
    case = CASES[name]
    xs = _inputs(case)
    got = _gradients(case, xs, device)
    want = _gradients(case, xs, torch.device("cpu"))
    assert all(torch.isfinite(g).all() for g in want)
    assert_matches(got, want)


def test_functions_without_tensor_input_honour_the_device(device):
    assert_matches(
        S.correlation_lags(50, 9, "same", device=device), ss.correlation_lags(50, 9, "same")
    )
    assert_on(S.correlation_lags(50, 9, device=device), device)
    for window in ("hann", ("kaiser", 5.0), "blackman", ("tukey", 0.3)):
        w = S.get_window(window, 33, device=device)
        assert_on(w, device)
        assert_matches(w, ss.get_window(window, 33))
    b, a = (torch.as_tensor(c, device=device) for c in BA)
    sos = torch.as_tensor(SOS, device=device)
    for ours, ref in (
        (S.lfilter_zi(b, a), ss.lfilter_zi(*BA)),
        (S.sosfilt_zi(sos), ss.sosfilt_zi(SOS)),
        (S.lfiltic(b, a, torch.ones(3, device=device)), ss.lfiltic(*BA, np.ones(3))),
    ):
        assert_on(ours, device)
        assert_matches(ours, ref)


def test_filters_take_tensor_coefficients_on_the_device(device):
    x = randn((2, 120))
    b, a = (torch.as_tensor(c, device=device) for c in BA)
    sos = torch.as_tensor(SOS, device=device)
    for result, ref in (
        (S.lfilter(b, a, x.to(device)), ss.lfilter(*BA, x.numpy())),
        (S.filtfilt(b, a, x.to(device)), ss.filtfilt(*BA, x.numpy())),
        (S.sosfilt(sos, x.to(device)), ss.sosfilt(SOS, x.numpy())),
        (S.sosfiltfilt(sos, x.to(device)), ss.sosfiltfilt(SOS, x.numpy())),
    ):
        assert_on(result, device)
        assert_matches(result, ref)


# ---------------------------------------------------------------------------------------------
# Layers: complex64 on the device against complex128 on the CPU.


def _layer_names() -> list[str]:
    return sorted(
        name
        for name in NN.__all__
        if inspect.isclass(getattr(NN, name)) and issubclass(getattr(NN, name), torch.nn.Module)
    )


def test_every_layer_has_a_device_case():
    assert sorted(LAYERS) == _layer_names()


def _run_layer(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = x.detach().requires_grad_(True)
    out = layer(x)
    weight = randn(tuple(out.shape), torch.complex128, seed=7).to(out.device, out.dtype)
    loss = (out * weight).real.sum() + out.abs().pow(2).sum()
    params = [p for _, p in sorted(layer.named_parameters())]
    grads = torch.autograd.grad(loss, [x, *params])
    return out, list(grads)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_on_device_matches_cpu_complex128(name, device):
    factory, shape, _ = LAYERS[name]
    torch.manual_seed(0)
    layer = factory(torch.complex64).to(device)
    reference = factory(torch.complex128)
    reference.load_state_dict(copy.deepcopy(layer.state_dict()))  # copy_ casts to complex128
    if "Dropout" in name:  # random masks differ by device; the eval path is deterministic
        layer.eval()
        reference.eval()
    x = randn(shape, torch.complex64, seed=3)
    out, grads = _run_layer(layer, x.to(device))
    ref_out, ref_grads = _run_layer(reference, x.to(torch.complex128))
    assert out.dtype == torch.complex64
    assert_on([out, grads, list(layer.state_dict().values())], device)
    assert_matches(out, ref_out, torch.complex64)
    assert_matches(grads, ref_grads, torch.complex64)
    # Buffers updated in the forward pass (batch-norm running statistics) agree as well.
    assert_matches(layer.state_dict(), reference.state_dict(), torch.complex64)


def test_layer_functions_on_device(device):
    q, k, v = (randn((2, 3, 5, 4), torch.complex128, seed=s) for s in range(3))
    mask = torch.tensor([[True, False, True, True, False]]).expand(5, 5)
    for mode in ("magnitude", "real", "split"):
        soft = NN.complex_softmax(q.to(device), dim=-1, mode=mode)
        assert_on(soft, device)
        assert_matches(soft, NN.complex_softmax(q, dim=-1, mode=mode))
        masks = (None,) if mode == "magnitude" else (None, mask)
        for m in masks:
            got = NN.complex_scaled_dot_product_attention(
                q.to(device),
                k.to(device),
                v.to(device),
                mode=mode,
                attn_mask=None if m is None else m.to(device),
            )
            assert_on(got, device)
            want = NN.complex_scaled_dot_product_attention(q, k, v, mode=mode, attn_mask=m)
            assert_matches(got, want)


@pytest.mark.parametrize("name", sorted(NN.init.__all__))
def test_initialisers_fill_on_device(name, device):
    tensor = torch.empty(6, 4, dtype=torch.complex64, device=device)
    out = getattr(NN.init, name)(tensor)
    assert out is tensor and out.device.type == device.type and out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all() and out.abs().sum() > 0
