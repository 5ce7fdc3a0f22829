r"""Linear, convolution and attention layers: ghost norms, materialized norms, book-keeping.

A layer computing :math:`o_{t} = W a_{t} + b` (Linear over a sequence; a convolution after
im2col; attention's projections) has per-sample weight gradient :math:`G_i = \sum_t g_{it}
a_{it}^\top` with :math:`g = \partial L / \partial o`. Its squared norm is either materialized
(cost ~ T d p, memory ~ d p per example) or the ghost norm :math:`\sum_{t,s} \langle a_{it},
a_{is}\rangle \langle g_{it}, g_{is}\rangle` (cost ~ T^2 (d + p)); the cost model takes the
cheaper. The clipped sum is one more contraction, :math:`\sum_i c_i G_i = \sum_{i,t} c_i g_{it}
a_{it}^\top` (book-keeping, Bu et al. 2023), so ghost layers never store per-sample gradients.
Blocks are laid out ``a: (B, groups, T, d)``, ``g: (B, groups, T, p)`` (views, no copies).
"""

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from research_ext.privacy._layers import LayerRule, weighted_sum
from research_ext.privacy._per_sample import conv_weight_per_sample

__all__ = ["AttentionRule", "ConvRule", "LinearRule", "attention_supported", "unfold"]


def _use_ghost(mode: str, t: int, d: int, p: int) -> bool:
    if mode == "ghost" or t == 1:
        return mode != "materialized"
    if mode == "materialized":
        return False
    return t * (d + p) < d * p


def block_norms(
    a: torch.Tensor, g: torch.Tensor, mode: str, weight: bool, bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample squared norms of one block, and its materialized gradient (or None)."""
    t, d, p = a.shape[2], a.shape[3], g.shape[3]
    if t == 1 and (not weight or _use_ghost(mode, t, d, p)):
        # One position: the bias gradient is g itself and the weight's norm is |a|^2 |g|^2,
        # so |g|^2 (per group) serves both.
        g_sq = g.pow(2).sum(-1)  # (B, groups, 1)
        if not weight:
            return g_sq.sum((1, 2)), None
        a_sq = a.pow(2).sum(-1)
        return ((a_sq + 1.0 if bias else a_sq) * g_sq).sum((1, 2)), None
    norms = a.new_zeros(a.shape[0])
    if bias:
        norms = norms + g.sum(2).pow(2).sum((1, 2))
    if not weight:
        return norms, None
    if _use_ghost(mode, t, d, p):
        aa = a @ a.mT
        gg = g @ g.mT
        return norms + (aa * gg).sum((1, 2, 3)).clamp_min(0), None
    grad = g.mT @ a  # (B, groups, p, d)
    return norms + grad.pow(2).sum((1, 2, 3)), grad


def block_clipped(
    a: torch.Tensor | None,
    g: torch.Tensor,
    grad: torch.Tensor | None,
    c: torch.Tensor,
    weight: bool,
    bias: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(sum_i c_i G_i of shape (groups, p, d), sum_i c_i db_i of shape (groups, p))``."""
    c = c.to(g.dtype)
    w = b = None
    if weight:
        if grad is not None:
            w = weighted_sum(c, grad)
        else:
            assert a is not None  # kept whenever the gradient is not materialized
            bsz, groups, t, p = g.shape
            d = a.shape[3]
            # The factors scale whichever of the two sides is smaller (fewer elements to copy).
            ac, gc = (a * c.view(-1, 1, 1, 1), g) if d < p else (a, g * c.view(-1, 1, 1, 1))
            w = gc.transpose(0, 1).reshape(groups, bsz * t, p).mT @ ac.transpose(0, 1).reshape(
                groups, bsz * t, d
            )
    if bias:
        b = weighted_sum(c, g.sum(2) if g.shape[2] > 1 else g.squeeze(2))
    return w, b


class _BlockRule(LayerRule):
    """A layer made of one weight/bias block per forward call (Linear, convolutions)."""

    planned = "ghost or materialized (cost model, chosen at the first step)"

    def block(
        self, call: tuple[Any, Any, Any], batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sq_norms(self, calls: list[tuple[Any, Any, Any]], batch_size: int) -> torch.Tensor:
        blocks = [self.block(call, batch_size) for call in calls]
        a = torch.cat([x for x, _ in blocks], dim=2) if len(blocks) > 1 else blocks[0][0]
        g = torch.cat([y for _, y in blocks], dim=2) if len(blocks) > 1 else blocks[0][1]
        weight, bias = "weight" in self.names, "bias" in self.names
        norms, grad = block_norms(a, g, self.mode, weight, bias)
        self.note(grad)
        # A materialized gradient makes the (im2col) activations unnecessary: free them now.
        self._cache.update(a=None if grad is not None else a, g=g, grad=grad)
        return norms

    def clipped_sum(self, factors: torch.Tensor) -> dict[str, torch.Tensor]:
        a, g, grad = self._cache.pop("a"), self._cache.pop("g"), self._cache.pop("grad")
        w, b = block_clipped(a, g, grad, factors, "weight" in self.names, "bias" in self.names)
        out = {}
        if w is not None:
            out[self.names["weight"]] = w.reshape(self.module.weight.shape)
        if b is not None:
            out[self.names["bias"]] = b.reshape(-1)
        return out


class LinearRule(_BlockRule):
    """``nn.Linear`` on inputs of shape (batch, ..., d)."""

    def block(
        self, call: tuple[Any, Any, Any], batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        args, _, grads = call
        a, g = args[0], grads[0]
        return (
            a.reshape(batch_size, 1, -1, a.shape[-1]),
            g.reshape(batch_size, 1, -1, g.shape[-1]),
        )


class ConvRule(_BlockRule):
    """``nn.Conv1d/2d/3d`` (zero padding, any stride, dilation and groups) through im2col."""

    def sq_norms(self, calls: list[tuple[Any, Any, Any]], batch_size: int) -> torch.Tensor:
        if len(calls) == 1:
            norms = _conv_sq_norms_chunked(self, calls[0], batch_size)
            if norms is not None:
                return norms
        return super().sq_norms(calls, batch_size)

    def block(
        self, call: tuple[Any, Any, Any], batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        args, _, grads = call
        m = self.module
        cols = unfold(args[0], m)  # (B, C_in * K, L)
        groups, length = m.groups, cols.shape[-1]
        a = cols.view(batch_size, groups, -1, length).mT
        g = grads[0].reshape(batch_size, groups, -1, length).mT
        return a, g


def conv_pads(conv: Any, nd: int) -> list[tuple[int, int]]:
    padding = conv.padding
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "same":  # torch puts the odd extra pad on the right
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in padding]


def _conv_sq_norms_chunked(
    rule: "ConvRule", call: tuple[Any, Any, Any], batch_size: int
) -> torch.Tensor | None:
    """Materialized per-sample conv gradients (im2col by chunks, or one grouped convolution).

    On CPU with 8 or more input channels per group, ``conv_weight_per_sample``; otherwise
    im2col a chunk of the batch at a time and a batched matmul.

    Returns None when the cost model prefers the ghost norm (which needs the whole im2col).
    """
    args, _, grads = call
    m = rule.module
    x, go = args[0], grads[0]
    groups = m.groups
    length = go[0, 0].numel()
    d = m.in_channels // groups * math.prod(m.kernel_size)
    p = m.out_channels // groups
    if "weight" not in rule.names or _use_ghost(rule.mode, length, d, p):
        return None
    if x.device.type == "cpu" and m.in_channels // groups >= _GROUPED_MIN_CHANNELS:
        # torch's convolution kernel with the batch folded into the groups: no im2col copy.
        grad = conv_weight_per_sample(x, go, m)
    else:
        # Bound the im2col temporary to _CHUNK_ELEMENTS (a few large chunks: fast and lean).
        chunk = max(1, min(batch_size, _CHUNK_ELEMENTS // max(1, groups * d * length)))
        pieces = []
        for start in range(0, batch_size, chunk):
            stop = min(batch_size, start + chunk)
            a, g = rule.block(((x[start:stop],), {}, (go[start:stop],)), stop - start)
            # The smaller of d and p as the product's rows: BLAS is faster that way round.
            pieces.append((a.mT @ g).mT if d < p else g.mT @ a)
        grad = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
    # Per-sample bias gradients, once: (B, groups, 1, p), summed again by the clipped sum.
    g = go.reshape(batch_size, groups, p, length).sum(3).unsqueeze(2)
    norms = grad.pow(2).sum((1, 2, 3))
    if "bias" in rule.names:
        norms = norms + g.pow(2).sum((1, 2, 3))
    rule._cache.update(a=None, g=g, grad=grad)
    rule.note(grad)
    return norms


#: Largest im2col temporary (elements) of a materialized convolution.
_CHUNK_ELEMENTS = 1 << 20
#: Input channels per group from which a materialized CPU convolution takes its per-sample
#: gradients from one grouped convolution (below it, im2col and a batched matmul are faster).
_GROUPED_MIN_CHANNELS = 8


def unfold(x: torch.Tensor, conv: Any) -> torch.Tensor:
    """im2col for Conv1d/2d/3d: ``(B, C_in * prod(kernel), L)`` in the weight's layout.

    A strided view of the padded input (no gather kernel), copied once by ``reshape``.
    """
    nd = x.ndim - 2
    flat: list[int] = []
    for left, right in reversed(conv_pads(conv, nd)):
        flat += [left, right]
    x = F.pad(x, flat) if any(flat) else x.contiguous()
    kernel, stride, dilation = tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.dilation)
    spatial = [
        (x.shape[2 + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(nd)
    ]
    steps = x.stride()[2:]
    view = x.as_strided(
        (x.shape[0], x.shape[1], *kernel, *spatial),
        (
            x.stride(0),
            x.stride(1),
            *(dilation[i] * steps[i] for i in range(nd)),
            *(stride[i] * steps[i] for i in range(nd)),
        ),
    )
    return view.reshape(x.shape[0], x.shape[1] * math.prod(kernel), math.prod(spatial))


def attention_supported(m: nn.Module) -> bool:
    """MultiheadAttention configurations the attention rule re-implements exactly."""
    return (
        isinstance(m, nn.MultiheadAttention)
        and type(m).forward is nn.MultiheadAttention.forward  # a subclass may change it
        and m._qkv_same_embed_dim
        and m.bias_k is None
        and not m.add_zero_attn
        and m.in_proj_weight is not None
    )


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -math.inf)
    return mask.to(dtype)


class AttentionRule(LayerRule):
    """``nn.MultiheadAttention`` run as explicit projections, each a Linear-like block.

    During a step the module's ``forward`` is replaced by :meth:`forward`, which computes the
    same function from the same parameters with visible projection outputs; the in-projection
    (rows of ``in_proj_weight``) and ``out_proj`` are then ordinary blocks.
    """

    patches_forward = True
    planned = _BlockRule.planned

    def forward(
        self,
        records: list[Any],
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """MultiheadAttention's forward with the projections recorded (batch-first internally)."""
        m = self.module
        same = query is key and key is value
        if not m.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        e, h = m.embed_dim, m.num_heads
        w, bias = m.in_proj_weight, m.in_proj_bias
        if same:
            qkv = F.linear(query, w, bias)
            records.append(((query,), {"rows": (0, 3 * e)}, (qkv,)))
            q, k, v = qkv.chunk(3, dim=-1)
        else:
            outs = []
            for j, x in enumerate((query, key, value)):
                rows = slice(j * e, (j + 1) * e)
                y = F.linear(x, w[rows], None if bias is None else bias[rows])
                records.append(((x,), {"rows": (j * e, (j + 1) * e)}, (y,)))
                outs.append(y)
            q, k, v = outs
        b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
        q, k, v = (t.reshape(b, -1, h, e // h).transpose(1, 2) for t in (q, k, v))
        mask = _additive(attn_mask, q.dtype)
        if mask is not None and mask.dim() == 3:
            mask = mask.view(b, h, tq, tk)
        pad = _additive(key_padding_mask, q.dtype)
        if pad is not None:
            pad = pad.view(b, 1, 1, tk)
            mask = pad if mask is None else mask + pad
        dropout = m.dropout if m.training else 0.0
        causal = bool(is_causal and mask is None)
        weights = None
        if need_weights:
            scores = q @ k.mT / math.sqrt(e // h)
            if causal:
                mask = torch.full((tq, tk), -math.inf, dtype=q.dtype, device=q.device).triu(1)
            if mask is not None:
                scores = scores + mask
            attn = F.dropout(scores.softmax(-1), dropout, training=m.training)
            ctx = attn @ v
            weights = attn.mean(1) if average_attn_weights else attn
        else:
            ctx = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal
            )
        ctx = ctx.transpose(1, 2).reshape(b, tq, e)
        out = F.linear(ctx, m.out_proj.weight, m.out_proj.bias)
        records.append(((ctx,), {"rows": None}, (out,)))
        # torch returns a time-major buffer (a transposed view when batch_first); the layout
        # decides which elements a later dropout's mask covers, so it must match under a seed.
        time_major = out.transpose(0, 1).contiguous()
        return (time_major.transpose(0, 1) if m.batch_first else time_major), weights

    def sq_norms(self, calls: list[tuple[Any, Any, Any]], batch_size: int) -> torch.Tensor:
        blocks: dict[Any, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for args, kwargs, grads in calls:
            a, g = args[0], grads[0]
            blocks.setdefault(kwargs["rows"], []).append(
                (
                    a.reshape(batch_size, 1, -1, a.shape[-1]),
                    g.reshape(batch_size, 1, -1, g.shape[-1]),
                )
            )
        norms = None
        self._cache["blocks"] = []
        for rows, pairs in blocks.items():
            if len(pairs) == 1:  # one call: the captured views, not copies
                a, g = pairs[0]
            else:
                a = torch.cat([x for x, _ in pairs], dim=2)
                g = torch.cat([y for _, y in pairs], dim=2)
            prefix = "out_proj." if rows is None else "in_proj_"
            weight = f"{prefix}weight" in self.names
            bias = f"{prefix}bias" in self.names
            n, grad = block_norms(a, g, self.mode, weight, bias)
            self.note(grad)
            norms = n if norms is None else norms + n
            self._cache["blocks"].append((rows, prefix, a, g, grad, weight, bias))
        assert norms is not None
        return norms

    def clipped_sum(self, factors: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.module
        out: dict[str, torch.Tensor] = {}
        for rows, prefix, a, g, grad, weight, bias in self._cache.pop("blocks"):
            w, b = block_clipped(a, g, grad, factors, weight, bias)
            for kind, value in (("weight", w), ("bias", b)):
                if value is None:
                    continue
                name = self.names[f"{prefix}{kind}"]
                value = value.reshape(value.shape[1:])
                if rows is None:
                    out[name] = value
                    continue
                full = out.get(name)
                if full is None:
                    param = m.in_proj_weight if kind == "weight" else m.in_proj_bias
                    full = torch.zeros(param.shape, dtype=value.dtype, device=value.device)
                full[rows[0] : rows[1]] += value
                out[name] = full
        return out
