"""Models, batches and step closures shared by the privacy benchmarks.

``bench_privacy_step.py`` (DPSGD.step vs Opacus) and ``bench_privacy_own_loop.py`` (DPOptimizer in
the user's loop vs the same) time the same four models on the same batches with the same
privacy settings; this module is their one definition:

- ``mlp``: MLP 784-512-512-10 at B=256;
- ``cnn``: a GroupNorm CNN on 1x28x28 at B=128;
- ``transformer``: 2-layer transformer encoder (d=128, seq 64, vocab 5000) at B=32;
- ``tied``: the same encoder over a vocabulary of 1000 predicting the next token through an
  output layer tied to the token embedding, at B=32;
- ``lstm``: embedding 5000x64, nn.LSTM 64->128 over 32 steps, linear head, at B=32 (Opacus
  runs its DPLSTM there).

``make_step(name, method)`` returns a closure running one optimizer step: ``"nonprivate"``,
``"ours"`` / ``"ours_<grad_sample_mode>"`` (``DPSGD.step``), ``"ours_loop"`` /
``"ours_loop_<grad_sample_mode>"`` (``DPOptimizer``: ``loss.backward(); opt.step()`` in the
user's loop) or ``"opacus_<grad_sample_mode>"``.
``time_methods`` runs them interleaved in one process and returns medians of wall and CPU
time, so the shared machine's noise cancels in the ratios.
"""

import copy
import os
import statistics
import time
import warnings

import torch
from torch import nn

THREADS = int(os.environ.get("BENCH_THREADS", "1"))
torch.set_num_threads(THREADS)
warnings.filterwarnings("ignore")

#: Dataset size (sample rate = B / N), noise multiplier and clipping norm of every private step.
N = 60_000
SIGMA, C = 1.0, 1.0

OPACUS_MODES = ("hooks", "functorch", "ew", "ghost")


class TinyTransformer(nn.Module):
    def __init__(self, vocab=5000, d=128, seq=64, layers=2, classes=10, tied=False):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True)
            for _ in range(layers)
        )
        self.tied = tied
        if tied:  # a language-model head sharing the token embedding (GPT-2, BERT)
            self.head = nn.Linear(d, vocab, bias=False)
            self.head.weight = self.tok.weight
        else:
            self.head = nn.Linear(d, classes)

    def forward(self, x):
        pos = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        h = self.tok(x) + self.pos(pos)
        for layer in self.layers:
            h = layer(h)
        return self.head(h[:, -1] if self.tied else h.mean(1))


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
    """``(model, inputs, targets, batch_size)`` for model ``name``, seeded."""
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
    elif name == "transformer":
        model = TinyTransformer()
        b = 32
        x = torch.randint(0, 5000, (b, 64))
    elif name == "tied":  # next-token prediction through a tied output layer, vocab 1000
        model = TinyTransformer(vocab=1000, tied=True)
        b = 32
        x = torch.randint(0, 1000, (b, 64))
        return model, x, torch.randint(0, 1000, (b,)), b
    else:
        raise ValueError(
            f"build: `name` must be mlp, cnn, transformer, tied or lstm, got name={name!r}"
        )
    y = torch.randint(0, 10, (b,))
    return model, x, y, b


def _dp_options(b, **extra):
    return dict(
        max_grad_norm=C,
        delta=1e-5,
        sample_rate=b / N,
        dataset_size=N,
        noise_multiplier=SIGMA,
        generator=torch.Generator().manual_seed(0),
        **extra,
    )


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
    if method.startswith("ours_loop"):
        from research_ext.privacy import DPOptimizer

        # The loss check runs on the first step only (the default): the warm-up's.
        mode = method.split("_", 2)[2] if method.count("_") == 2 else "auto"
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        dp_opt = DPOptimizer(model, opt, **_dp_options(b, grad_sample_mode=mode))

        def step():
            loss_fn(model(x), y).backward()
            dp_opt.step()
            dp_opt.zero_grad(set_to_none=True)

        return step
    if method.startswith("ours"):
        from research_ext.privacy import DPSGD

        mode = method.split("_", 1)[1] if "_" in method else "auto"
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        dp = DPSGD(model, opt, loss_fn=loss_fn, **_dp_options(b, grad_sample_mode=mode))
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


def time_methods(name, methods, rounds):
    """Median step times of each method on model ``name``, interleaved over ``rounds``.

    Two clocks are read around the same steps: wall time (``time.perf_counter``) and the
    process's CPU time (``time.process_time``). With one torch thread the CPU time is what a
    step costs whatever else the machine runs; on a loaded shared machine wall times also
    measure the scheduler.

    Returns ``(wall, cpu, errors)``: medians in seconds by method; a method that cannot be
    built or run (an Opacus mode that does not support a layer) is left out and its error
    reported in ``errors``.
    """
    steps, errors = {}, {}
    for m in methods:
        try:
            s = make_step(name, m)
            s()
            s()  # warm-up (and the user loop's loss check, on its first step)
            steps[m] = s
        except Exception as err:
            errors[m] = f"{type(err).__name__}: {str(err)[:80]}"
    wall = {m: [] for m in steps}
    cpu = {m: [] for m in steps}
    for _ in range(rounds):
        for m, s in steps.items():
            t, c = time.perf_counter(), time.process_time()
            s()
            cpu[m].append(time.process_time() - c)
            wall[m].append(time.perf_counter() - t)
    return (
        {m: statistics.median(v) for m, v in wall.items()},
        {m: statistics.median(v) for m, v in cpu.items()},
        errors,
    )


def best_opacus(medians):
    """``(fastest Opacus method, its median)``, or ``(None, None)`` if none ran."""
    opacus = {m: t for m, t in medians.items() if m.startswith("opacus")}
    if not opacus:
        return None, None
    best = min(opacus, key=opacus.get)
    return best, opacus[best]
