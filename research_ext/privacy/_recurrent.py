r"""Recurrent layers (``nn.RNN``, ``nn.GRU``, ``nn.LSTM`` and their cells) as Linear-like blocks.

A recurrent layer applies, per layer and direction, an input projection
:math:`W_{ih} x_t + b_{ih}` and a hidden projection :math:`W_{hh} h_{t-1} + b_{hh}` at every
step (and, for an LSTM with ``proj_size``, :math:`W_{hr} h'_t`). Each projection is a block of
the kind ``_affine.py`` handles: the per-sample gradient of :math:`W_{hh}` is
:math:`\sum_t g_{it} h_{i,t-1}^\top` with :math:`g` the gradient at the projection's output.
During a step the layer's ``forward`` is replaced by :func:`recurrent_forward`, which computes
the same function from the same parameters, unrolled in time with every projection visible, so
ghost norms, materialized norms and book-keeping clipped sums apply unchanged. Every layout
torch accepts is covered: ``batch_first`` either way, several layers, bidirectional, inter-layer
dropout (drawn once, in the forward that also gives the gradients), ``proj_size``, ``bias=False``,
unbatched inputs, initial states, and ``PackedSequence`` inputs (steps past a sequence's length
leave its state unchanged, as torch's kernels do).

The unrolled forward is plain tensor code, so ``torch.func.vmap`` runs it too; the whole-model
``vmap`` engine uses it for recurrent layers (torch's fused kernels have no batching rule).
"""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from research_ext.errors import UnsupportedModuleError
from research_ext.privacy._affine import block_clipped, block_norms
from research_ext.privacy._layers import LayerRule

__all__ = [
    "RECURRENT",
    "RecurrentRule",
    "is_torch_recurrent",
    "recurrent_forward",
    "unrolled_recurrent",
]

RECURRENT: tuple[type, ...] = (nn.RNNBase, nn.RNNCellBase)

Recorder = Callable[[tuple[str, str], torch.Tensor, torch.Tensor], None] | None


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.RNNBase):
        return str(module.mode)
    if isinstance(module, nn.LSTMCell):
        return "LSTM"
    if isinstance(module, nn.GRUCell):
        return "GRU"
    return "RNN_RELU" if getattr(module, "nonlinearity", "tanh") == "relu" else "RNN_TANH"


def _cell(
    kind: str, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step of the recurrence from the two projections (torch's gate order and formulas)."""
    if kind == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, -1)
        assert c is not None  # an LSTM always carries a cell state
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if kind == "GRU":
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * h, None
    return (torch.relu if kind == "RNN_RELU" else torch.tanh)(gi + gh), None


def _projection(
    module: nn.Module, record: Recorder, block: str, suffix: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> W x + b`` for one projection, recording each call; parameters looked up once."""
    name = f"{block}_{suffix}" if suffix else block
    weight = getattr(module, f"weight_{name}")
    bias = getattr(module, f"bias_{name}", None) if block != "hr" else None
    key = (block, suffix)

    def apply(x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, weight, bias)
        if record is not None:
            record(key, x, out)
        return out

    return apply


def _reverse(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each sequence of ``(batch, time, ...)`` within its own length."""
    if lengths is None:
        return x.flip(1)
    t = torch.arange(x.shape[1], device=x.device)
    lens = lengths.to(x.device)[:, None]
    idx = torch.where(t[None] < lens, lens - 1 - t[None], t[None])
    return x.gather(1, idx.view(*idx.shape, *[1] * (x.ndim - 2)).expand_as(x))


def recurrent_forward(
    module: nn.Module, record: Recorder, input: Any, hx: Any = None
) -> tuple[Any, Any]:
    """``module.forward`` of an ``nn.RNN/GRU/LSTM`` unrolled in time, each projection recorded."""
    if isinstance(module, nn.RNNCellBase):
        return _cell_forward(module, record, input, hx)
    m: Any = module
    kind, layers, dirs = _kind(m), m.num_layers, 2 if m.bidirectional else 1
    hidden, proj = m.hidden_size, m.proj_size or m.hidden_size
    lengths = mask = None
    unbatched = False
    if isinstance(input, PackedSequence):
        x, lengths = pad_packed_sequence(input, batch_first=True)
        mask = torch.arange(x.shape[1])[None] < lengths[:, None]
        mask = mask.to(x.device)
    else:
        unbatched = input.dim() == 2
        x = input.unsqueeze(0 if m.batch_first else 1) if unbatched else input
        x = x if m.batch_first else x.transpose(0, 1)
    batch, steps = x.shape[0], x.shape[1]
    if hx is None:
        h0 = x.new_zeros(layers * dirs, batch, proj)
        c0 = x.new_zeros(layers * dirs, batch, hidden) if kind == "LSTM" else None
    else:
        h0, c0 = hx if kind == "LSTM" else (hx, None)
        if unbatched:
            h0, c0 = h0.unsqueeze(1), None if c0 is None else c0.unsqueeze(1)
    layer_in, h_n, c_n = x, [], []
    for layer in range(layers):
        outs = []
        for d in range(dirs):
            suffix = f"l{layer}" + ("_reverse" if d else "")
            seq = _reverse(layer_in, lengths) if d else layer_in
            gi = _projection(m, record, "ih", suffix)(seq)
            hidden_proj = _projection(m, record, "hh", suffix)
            out_proj = _projection(m, record, "hr", suffix) if m.proj_size else None
            h = h0[layer * dirs + d]
            c = None if c0 is None else c0[layer * dirs + d]
            hs = []
            for t in range(steps):
                h_new, c_new = _cell(kind, gi[:, t], hidden_proj(h), h, c)
                if out_proj is not None:
                    h_new = out_proj(h_new)
                if mask is not None:
                    valid = mask[:, t, None]
                    h_new = torch.where(valid, h_new, h)
                    c_new = None if c is None else torch.where(valid, c_new, c)  # type: ignore[arg-type]
                h, c = h_new, c_new
                hs.append(h)
            out = torch.stack(hs, 1)
            outs.append(_reverse(out, lengths) if d else out)
            h_n.append(h)
            c_n.append(c)
        layer_in = torch.cat(outs, -1) if dirs == 2 else outs[0]
        if m.dropout and m.training and layer < layers - 1:
            # On torch's time-major layout, so the mask matches its kernel's under a seed.
            time_major = layer_in.transpose(0, 1).contiguous()
            layer_in = F.dropout(time_major, m.dropout, training=True).transpose(0, 1)
    h_out = torch.stack(h_n)
    c_out = torch.stack(c_n) if kind == "LSTM" else None  # type: ignore[arg-type]
    output: Any
    if isinstance(input, PackedSequence):
        assert lengths is not None
        order = input.sorted_indices
        # Lengths stay on the CPU (as packing requires); the order indexes both.
        padded, lens = (
            (layer_in, lengths) if order is None else (layer_in[order], lengths[order.cpu()])
        )
        data = pack_padded_sequence(padded, lens, batch_first=True).data
        output = PackedSequence(
            data, input.batch_sizes, input.sorted_indices, input.unsorted_indices
        )
    else:
        output = layer_in if m.batch_first else layer_in.transpose(0, 1)
        if unbatched:
            output = output.squeeze(0 if m.batch_first else 1)
            h_out = h_out.squeeze(1)
            c_out = None if c_out is None else c_out.squeeze(1)
    return output, ((h_out, c_out) if kind == "LSTM" else h_out)


def _cell_forward(module: nn.Module, record: Recorder, input: torch.Tensor, hx: Any) -> Any:
    kind = _kind(module)
    m: Any = module
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    if hx is None:
        h = x.new_zeros(x.shape[0], m.hidden_size)
        c = h if kind == "LSTM" else None
    else:
        h, c = hx if kind == "LSTM" else (hx, None)
        if unbatched:
            h, c = h.unsqueeze(0), None if c is None else c.unsqueeze(0)
    gi = _projection(m, record, "ih", "")(x)
    gh = _projection(m, record, "hh", "")(h)
    h, c = _cell(kind, gi, gh, h, c)
    if unbatched:
        h, c = h.squeeze(0), None if c is None else c.squeeze(0)
    return (h, c) if kind == "LSTM" else h


def _refuse_packed(module: nn.Module, input: Any, hx: Any = None) -> tuple[Any, Any]:
    if isinstance(input, PackedSequence):
        raise UnsupportedModuleError(
            f"per_sample_grads: a {type(module).__name__} got a PackedSequence, which whole-model "
            f"vmap cannot split per example; use grad_sample_mode='auto', 'ghost' or "
            f"'materialized' (the hook engine supports packed sequences)"
        )
    return recurrent_forward(module, None, input, hx)


_TORCH_RECURRENT = (nn.RNN, nn.GRU, nn.LSTM, nn.RNNCell, nn.GRUCell, nn.LSTMCell)
_ORIGINAL_FORWARDS = {cls: cls.forward for cls in _TORCH_RECURRENT}
_DEPTH = [0]


def is_torch_recurrent(module: nn.Module) -> bool:
    """A recurrent layer running torch's own ``forward`` (a subclass may override it)."""
    return type(module).forward in _ORIGINAL_FORWARDS.values()


def _unrolled(self: nn.Module, input: Any, hx: Any = None) -> tuple[Any, Any]:
    return _refuse_packed(self, input, hx)


@contextlib.contextmanager
def unrolled_recurrent(model: nn.Module) -> Iterator[None]:
    """Run torch's recurrent layers by :func:`recurrent_forward` (vmap-compatible).

    The classes' ``forward`` is swapped while the context is open, so a subclass whose own
    ``forward`` calls ``super().forward`` is covered too (not thread-safe, like any patch).
    """
    if not any(isinstance(m, RECURRENT) for m in model.modules()):
        yield
        return
    if _DEPTH[0] == 0:
        for cls in _TORCH_RECURRENT:
            cls.forward = _unrolled  # type: ignore[method-assign]
    _DEPTH[0] += 1
    try:
        yield
    finally:
        _DEPTH[0] -= 1
        if _DEPTH[0] == 0:
            for cls, forward in _ORIGINAL_FORWARDS.items():
                cls.forward = forward  # type: ignore[method-assign]


class RecurrentRule(LayerRule):
    """``nn.RNN/GRU/LSTM`` and cells: one Linear-like block per projection, layer and direction."""

    patches_forward = True
    planned = "ghost or materialized (cost model, chosen at the first step)"

    def forward(self, records: list[Any], input: Any, hx: Any = None) -> Any:
        """The layer's forward with its projections recorded (see :func:`recurrent_forward`)."""

        def record(key: tuple[str, str], a: torch.Tensor, out: torch.Tensor) -> None:
            records.append(((a,), {"key": key}, (out,)))

        return recurrent_forward(self.module, record, input, hx)

    def sq_norms(self, calls: list[tuple[Any, Any, Any]], batch_size: int) -> torch.Tensor:
        blocks: dict[tuple[str, str], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for args, kwargs, grads in calls:
            a, g = args[0], grads[0]
            blocks.setdefault(kwargs["key"], []).append(
                (
                    a.reshape(batch_size, 1, -1, a.shape[-1]),
                    g.reshape(batch_size, 1, -1, g.shape[-1]),
                )
            )
        norms = torch.zeros(batch_size, dtype=calls[0][2][0].dtype, device=calls[0][2][0].device)
        cached = []
        for (block, suffix), pairs in blocks.items():
            a = torch.cat([x for x, _ in pairs], dim=2)
            g = torch.cat([y for _, y in pairs], dim=2)
            w_name = f"weight_{block}_{suffix}" if suffix else f"weight_{block}"
            b_name = f"bias_{block}_{suffix}" if suffix else f"bias_{block}"
            weight, bias = w_name in self.names, b_name in self.names
            n, grad = block_norms(a, g, self.mode, weight, bias)
            self.note(grad)
            norms = norms + n
            cached.append((w_name, b_name, None if grad is not None else a, g, grad, weight, bias))
        self._cache["blocks"] = cached
        return norms

    def clipped_sum(self, factors: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for w_name, b_name, a, g, grad, weight, bias in self._cache.pop("blocks"):
            w, b = block_clipped(a, g, grad, factors, weight, bias)
            if w is not None:
                out[self.names[w_name]] = w.reshape(w.shape[1:])
            if b is not None:
                out[self.names[b_name]] = b.reshape(-1)
        return out
