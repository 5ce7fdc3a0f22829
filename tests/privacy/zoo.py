"""Small models for per-sample gradient tests, and the explicit per-example oracle."""

import warnings

import torch
from torch import nn


class SeqConv(nn.Module):
    """Embedding -> Conv1d -> LayerNorm -> Linear over a sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 8, padding_idx=0)
        self.conv = nn.Conv1d(8, 6, 3, padding=1)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.emb(x).transpose(1, 2)).transpose(1, 2)
        return self.head(torch.tanh(self.norm(h))).mean(1)


class TinyTransformer(nn.Module):
    """Token + expanded (non-contiguous) position embeddings, one encoder layer, linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(30, 8)
        self.pos = nn.Embedding(12, 8)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        return self.head(self.enc(self.tok(x) + self.pos(pos)).mean(1))


def make(name: str, dtype: torch.dtype, batch: int = 5, seed: int = 0):
    """(model, inputs, targets) for a zoo entry."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
        x = torch.randn(batch, 6, generator=g)
    elif name == "cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.GroupNorm(2, 4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, stride=2, groups=2, dilation=2),
            nn.Flatten(),
            nn.Linear(36, 3),
        )
        x = torch.randn(batch, 1, 10, 10, generator=g)
    elif name == "seqconv":
        model = SeqConv()
        x = torch.randint(0, 30, (batch, 7), generator=g)
    elif name == "transformer":
        model = TinyTransformer()
        x = torch.randint(0, 30, (batch, 6), generator=g)
    elif name == "attention":
        model = Attention()
        x = torch.randint(0, 30, (batch, 6), generator=g)
    elif name == "norms":
        model = nn.Sequential(
            nn.Linear(4, 6),  # on (batch, 5, 4): a sequence input
            nn.RMSNorm(6),
            nn.Flatten(),
            nn.Unflatten(1, (6, 5)),
            nn.GroupNorm(3, 6),
            nn.Flatten(),
            nn.Linear(30, 3),
        )
        x = torch.randn(batch, 5, 4, generator=g)
    elif name == "conv3d":
        model = nn.Sequential(
            nn.Conv3d(2, 3, (3, 3, 1), padding="same"), nn.Flatten(), nn.Linear(180, 3)
        )
        x = torch.randn(batch, 2, 4, 5, 3, generator=g)
    elif name == "generic":
        model = Generic()
        x = torch.randn(batch, 2, 4, 4, generator=g)
    elif name == "batchnorm_eval":
        # BatchNorm with running statistics (eval mode) treats examples independently.
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
        )
        model[1].running_mean.uniform_(-0.5, 0.5, generator=g)
        model[1].running_var.uniform_(0.5, 2.0, generator=g)
        model.eval()
        x = torch.randn(batch, 1, 6, 6, generator=g)
    elif name == "embedding_bag":
        model = Bags()
        x = torch.randint(0, 30, (batch, 6), generator=g)
    elif name == "dp_attention_bias_kv":
        model = OpacusAttention()
        x = torch.randint(0, 30, (batch, 6), generator=g)
    else:
        model, x = make_recurrent(name, batch, g)
    model = model.to(dtype)
    if x.is_floating_point():
        x = x.to(dtype)
    y = torch.randint(0, 3, (batch,), generator=g)
    return model, x, y


def loop_grads(
    model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-sample gradients by a batch-of-one loop with ordinary autograd."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    rows: dict[str, list[torch.Tensor]] = {n: [] for n in params}
    for i in range(x.shape[0]):
        with warnings.catch_warnings():
            # torch's own float32 LSTM kernel notes that oneDNN lacks projections.
            warnings.filterwarnings("ignore", message="LSTM with projections")
            out = model(x[i : i + 1])
        grads = torch.autograd.grad(loss_fn(out, y[i : i + 1]), list(params.values()))
        for n, g in zip(params, grads, strict=True):
            rows[n].append(g)
    return {n: torch.stack(v) for n, v in rows.items()}


class Attention(nn.Module):
    """Self-attention (time-first, key padding mask, weights returned) then masked cross-attention."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.self_attn = nn.MultiheadAttention(8, 2)
        self.cross = nn.MultiheadAttention(8, 2, batch_first=True, bias=False)
        self.memory = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        pad = x == 0
        pad[:, 0] = False
        t = h.transpose(0, 1)
        s, _ = self.self_attn(t, t, t, key_padding_mask=pad)
        s = s.transpose(0, 1)
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).triu(1)
        c, _ = self.cross(s, self.memory(h), self.memory(h), attn_mask=causal, need_weights=False)
        return self.head(c.mean(1))


class Recurrent(nn.Module):
    """A recurrent layer on embedded tokens; the head reads the outputs and the final state."""

    def __init__(self, rnn: nn.Module, time_first: bool = False, initial: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 4)
        self.rnn = rnn
        self.time_first = time_first
        dirs = 2 if rnn.bidirectional else 1
        out = (rnn.proj_size or rnn.hidden_size) if isinstance(rnn, nn.LSTM) else rnn.hidden_size
        self.init = nn.Linear(4, out) if initial else None
        self.head = nn.Linear(dirs * out + out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        hx = None
        if self.init is not None:
            layers = self.rnn.num_layers * (2 if self.rnn.bidirectional else 1)
            hx = torch.tanh(self.init(h[:, 0])).unsqueeze(0).expand(layers, -1, -1).contiguous()
        out, state = self.rnn(h.transpose(0, 1) if self.time_first else h, hx)
        if self.time_first:
            out = out.transpose(0, 1)
        last = state[0] if isinstance(state, tuple) else state
        return self.head(torch.cat([out.mean(1), last[-1]], dim=1))


class Packed(nn.Module):
    """A bidirectional LSTM over variable-length token sequences (0 pads the end)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 4, padding_idx=0)
        self.rnn = nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(10 + 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = (x != 0).sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.emb(x), lengths, batch_first=True, enforce_sorted=False
        )
        out, (h, _) = self.rnn(packed)
        padded, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        return self.head(torch.cat([padded.sum(1), h[-1]], dim=1))


class Cells(nn.Module):
    """LSTMCell unrolled over a sequence, then a GRUCell and a ReLU RNNCell step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTMCell(4, 6)
        self.gru = nn.GRUCell(6, 5)
        self.rnn = nn.RNNCell(5, 5, nonlinearity="relu", bias=False)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = None
        for t in range(x.shape[1]):
            state = self.lstm(x[:, t], state)
        assert state is not None
        return self.head(self.rnn(self.gru(state[0])))


def make_recurrent(name: str, batch: int, g: torch.Generator):
    """(model, inputs) for the recurrent zoo entries."""
    tokens = torch.randint(1, 30, (batch, 6), generator=g)
    if name == "lstm":
        rnn = nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True)
        return Recurrent(rnn), tokens
    if name == "gru_time_first":
        return Recurrent(nn.GRU(4, 5, bias=False), time_first=True), tokens
    if name == "rnn_relu_initial":
        rnn = nn.RNN(4, 5, num_layers=2, nonlinearity="relu", batch_first=True)
        return Recurrent(rnn, initial=True), tokens
    if name == "lstm_proj":
        rnn = nn.LSTM(4, 6, batch_first=True, bidirectional=True, proj_size=3)
        return Recurrent(rnn), tokens
    if name == "packed":
        lengths = torch.randint(1, 7, (batch,), generator=g)
        lengths[0] = 6
        return Packed(), tokens * (torch.arange(6)[None] < lengths[:, None])
    if name == "cells":
        return Cells(), torch.randn(batch, 4, 4, generator=g)
    if name == "opacus_dplstm":
        from opacus.layers import DPLSTM

        rnn = DPLSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True)
        return Recurrent(rnn), tokens
    if name == "opacus_dpgru_time_first":
        from opacus.layers import DPGRU

        return Recurrent(DPGRU(4, 5), time_first=True), tokens
    raise KeyError(name)


#: Entries whole-model vmap cannot split per example (packing needs concrete lengths).
VMAP_UNSUPPORTED = ("packed",)

RECURRENT_ZOO = ("lstm", "gru_time_first", "rnn_relu_initial", "lstm_proj", "packed", "cells")


class OpacusAttention(nn.Module):
    """Opacus's DPMultiheadAttention with add_bias_kv: its inner layers see time-first tensors."""

    def __init__(self) -> None:
        super().__init__()
        from opacus.layers import DPMultiheadAttention

        self.emb = nn.Embedding(30, 8)
        self.attn = DPMultiheadAttention(8, 2, add_bias_kv=True, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        return self.head(self.attn(h, h, h)[0].mean(1))


class Generic(nn.Module):
    """Layers without a dedicated rule (per-layer vmap) and a Linear called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)  # 4x4 -> 7x7
        self.circular = nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular")
        self.reflect = nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect")
        self.inorm = nn.InstanceNorm2d(2, affine=True)
        self.prelu = nn.PReLU(2)
        self.twice = nn.Linear(7, 7)
        self.bilinear = nn.Bilinear(14, 14, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.prelu(self.inorm(self.reflect(torch.tanh(self.circular(self.up(x))))))
        h = self.twice(torch.tanh(self.twice(h))).mean(2).flatten(1)  # (batch, 2 * 7)
        return self.bilinear(h, torch.tanh(h))


class Bags(nn.Module):
    """EmbeddingBag (mean over each row of indices), then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(30, 5, mode="mean")
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bag(x))


#: Entries whose layers only "auto" (falling back per layer, or to whole-model vmap for
#: Opacus's recurrent layers, which register each parameter twice) and "vmap" can handle.
HOOKS_UNSUPPORTED = ("dp_attention_bias_kv", "opacus_dplstm", "opacus_dpgru_time_first")

ZOO = (
    "mlp",
    "cnn",
    "seqconv",
    "transformer",
    "attention",
    "norms",
    "conv3d",
    "generic",
    "embedding_bag",
    "batchnorm_eval",
    *RECURRENT_ZOO,
    *HOOKS_UNSUPPORTED,
)
