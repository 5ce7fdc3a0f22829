"""Small models for per-sample gradient tests, and the explicit per-example oracle."""

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
    else:
        raise KeyError(name)
    model = model.to(dtype)
    if x.is_floating_point():
        x = x.to(dtype)
    y = torch.randint(0, 3, (batch,), generator=g)
    return model, x, y


ZOO = ("mlp", "cnn", "seqconv", "transformer", "attention", "norms", "conv3d")


def loop_grads(
    model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-sample gradients by a batch-of-one loop with ordinary autograd."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    rows: dict[str, list[torch.Tensor]] = {n: [] for n in params}
    for i in range(x.shape[0]):
        grads = torch.autograd.grad(
            loss_fn(model(x[i : i + 1]), y[i : i + 1]), list(params.values())
        )
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
