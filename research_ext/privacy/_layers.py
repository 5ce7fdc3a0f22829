r"""Per-layer rules: per-sample gradient norms and clipped sums from activations and output grads.

A layer is seen through what its forward hook captured: its inputs ``a`` and the gradient ``g``
of the summed loss with respect to its output. For Linear and convolutions (after im2col) the
per-sample weight gradient is :math:`G_i = \sum_t g_{it} a_{it}^\top`; its squared norm is
computed either by materializing :math:`G_i` (cost ~ T d p) or as the "ghost norm"
:math:`\sum_{t,s} \langle a_{it}, a_{is}\rangle \langle g_{it}, g_{is}\rangle` (cost ~ T^2 (d + p));
the clipped sum is then one more contraction, :math:`\sum_i c_i G_i = \sum_{i,t} c_i g_{it}
a_{it}^\top` ("book-keeping", Bu et al. 2023), so per-sample gradients are never stored.
"""

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from research_ext.privacy._per_sample import quiet_vmap

__all__ = ["LayerRule", "rule_for"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_RMS_NORM: tuple[type, ...] = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()


class LayerRule:
    """Norms and clipped sums of one layer from its captured calls.

    ``calls`` holds one ``(args, kwargs, grad_outputs)`` triple per forward call of the layer in
    the step (a layer called twice sums its two contributions).
    """

    def __init__(self, module: nn.Module, names: dict[str, str], mode: str) -> None:
        self.module: Any = module
        self.names, self.mode = names, mode  # names: local -> qualified
        self._cache: dict[str, Any] = {}

    def sq_norms(self, calls: list[tuple[Any, Any, Any]], batch_size: int) -> torch.Tensor:
        """Per-sample squared norm of the layer's gradient, shape ``(batch,)``."""
        raise NotImplementedError

    def clipped_sum(self, factors: torch.Tensor) -> dict[str, torch.Tensor]:
        """``sum_i factors_i * grad_i`` for every parameter of the layer, by qualified name."""
        raise NotImplementedError


class MaterializedRule(LayerRule):
    """Layers whose per-sample gradients are small (norm layers) or generic: store them."""

    def per_sample(self, call: tuple[Any, Any, Any], batch_size: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sq_norms(self, calls: list[tuple[Any, Any, Any]], batch_size: int) -> torch.Tensor:
        grads: dict[str, torch.Tensor] = {}
        for call in calls:
            for name, g in self.per_sample(call, batch_size).items():
                grads[name] = grads[name] + g if name in grads else g
        self._cache["grads"] = grads
        return sum(g.reshape(batch_size, -1).pow(2).sum(1) for g in grads.values())  # type: ignore[return-value]

    def clipped_sum(self, factors: torch.Tensor) -> dict[str, torch.Tensor]:
        grads = self._cache.pop("grads")
        return {
            self.names[n]: torch.einsum("b,b...->...", factors.to(g.dtype), g)
            for n, g in grads.items()
        }


class _NormRule(MaterializedRule):
    def per_sample(self, call: tuple[Any, Any, Any], batch_size: int) -> dict[str, torch.Tensor]:
        args, _, grads = call
        x, go = args[0], grads[0]
        m = self.module
        if isinstance(m, nn.GroupNorm):
            x_hat = F.group_norm(x, m.num_groups, None, None, m.eps)
            dims = tuple(range(2, x.ndim))
        else:
            shape = tuple(m.normalized_shape)  # type: ignore[arg-type]
            eps = m.eps
            if isinstance(m, nn.LayerNorm):
                x_hat = F.layer_norm(x, shape, None, None, eps)
            else:
                x_hat = F.rms_norm(x, shape, None, eps)
            dims = tuple(range(1, x.ndim - len(shape)))
        out: dict[str, torch.Tensor] = {}
        if getattr(m, "weight", None) is not None and "weight" in self.names:
            out["weight"] = (go * x_hat).sum(dims) if dims else go * x_hat
        if getattr(m, "bias", None) is not None and "bias" in self.names:
            out["bias"] = go.sum(dims) if dims else go
        return out


class GenericRule(MaterializedRule):
    """Any other layer: per-sample vector-Jacobian products under ``vmap``."""

    def per_sample(self, call: tuple[Any, Any, Any], batch_size: int) -> dict[str, torch.Tensor]:
        args, kwargs, grads = call
        params = {n: p.detach() for n, p in self.module.named_parameters() if n in self.names}
        module = self.module

        def batched(t: Any) -> bool:
            return isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] == batch_size

        arg_dims = tuple(0 if batched(a) else None for a in args)
        kw_keys = sorted(kwargs)
        kw_vals = tuple(kwargs[k] for k in kw_keys)
        kw_dims = tuple(0 if batched(v) else None for v in kw_vals)
        grad_dims = tuple(0 if g is not None else None for g in grads)

        def one(
            a: tuple[Any, ...], kv: tuple[Any, ...], go: tuple[Any, ...]
        ) -> dict[str, torch.Tensor]:
            a1 = tuple(t.unsqueeze(0) if d == 0 else t for t, d in zip(a, arg_dims, strict=True))
            kw = {
                k: (v.unsqueeze(0) if d == 0 else v)
                for k, v, d in zip(kw_keys, kv, kw_dims, strict=True)
            }

            def f(p: dict[str, torch.Tensor]) -> Any:
                out = torch.func.functional_call(module, p, a1, kw)
                return _tensor_outputs(out)

            outs, vjp_fn = torch.func.vjp(f, params)[:2]
            cot = tuple(
                torch.zeros_like(o) if g is None else g.unsqueeze(0)
                for o, g in zip(outs, go, strict=True)
            )
            return vjp_fn(cot)[0]

        batched_vjp = torch.func.vmap(
            one, in_dims=(arg_dims, kw_dims, grad_dims), randomness="different"
        )
        with quiet_vmap():
            result = batched_vjp(args, kw_vals, grads)
        return dict(result)


def _tensor_outputs(out: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    return tuple(o for o in out if isinstance(o, torch.Tensor))


class _AffineRule(LayerRule):
    """Linear, convolutions and embeddings: ghost norm or materialized, per the cost model."""

    def pairs(self, call: Any, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, g)`` of shapes (batch, T, groups, d) and (batch, T, groups, p)."""
        raise NotImplementedError

    def choose(self, t: int, d: int, p: int) -> bool:
        """True to use the ghost norm for a layer with sequence length t, fan-in d, fan-out p."""
        if self.mode == "ghost":
            return True
        if self.mode == "materialized":
            return False
        # Ghost norm costs ~T^2 (d + p) per example, materializing ~T d p (and d p memory).
        return t == 1 or t * (d + p) < d * p

    def sq_norms(self, calls: list[tuple[Any, Any, Any]], batch_size: int) -> torch.Tensor:
        pairs = [self.pairs(call, batch_size) for call in calls]
        a = torch.cat([pa for pa, _ in pairs], dim=1) if len(pairs) > 1 else pairs[0][0]
        g = torch.cat([pg for _, pg in pairs], dim=1) if len(pairs) > 1 else pairs[0][1]
        self._cache.update(a=a, g=g)
        b, t, _, d = a.shape
        p = g.shape[-1]
        norms = a.new_zeros(b)
        has_bias = "bias" in self.names
        if has_bias:
            norms = norms + g.sum(1).pow(2).sum((1, 2))
        if "weight" not in self.names:
            return norms
        if self.choose(t, d, p):
            norms = norms + self.weight_ghost_norm(a, g)
        else:
            grad = torch.einsum("btgo,btgi->bgoi", g, a)
            self._cache["grad"] = grad
            norms = norms + grad.reshape(b, -1).pow(2).sum(1)
        return norms

    def weight_ghost_norm(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if a.shape[1] == 1:
            return (a.pow(2).sum(3) * g.pow(2).sum(3)).sum((1, 2))
        aa = torch.einsum("btgi,bsgi->bgts", a, a)
        gg = torch.einsum("btgo,bsgo->bgts", g, g)
        return (aa * gg).sum((1, 2, 3)).clamp_min(0)

    def clipped_sum(self, factors: torch.Tensor) -> dict[str, torch.Tensor]:
        a, g = self._cache.pop("a"), self._cache.pop("g")
        grad = self._cache.pop("grad", None)
        c = factors.to(g.dtype)
        out: dict[str, torch.Tensor] = {}
        if "weight" in self.names:
            if grad is not None:
                w = torch.einsum("b,bgoi->goi", c, grad)
            else:
                w = torch.einsum("btgo,btgi->goi", g * c[:, None, None, None], a)
            out[self.names["weight"]] = self.to_weight(w)
        if "bias" in self.names:
            out[self.names["bias"]] = torch.einsum("b,bgo->go", c, g.sum(1)).reshape(-1)
        return out

    def to_weight(self, w: torch.Tensor) -> torch.Tensor:
        return w.reshape(self.module.weight.shape)


class LinearRule(_AffineRule):
    def pairs(self, call: Any, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        args, _, grads = call
        a, g = args[0], grads[0]
        return a.reshape(batch_size, -1, 1, a.shape[-1]), g.reshape(batch_size, -1, 1, g.shape[-1])


class ConvRule(_AffineRule):
    def pairs(self, call: Any, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        args, _, grads = call
        m = self.module
        x, go = args[0], grads[0]
        groups = m.groups
        cols = unfold(x, m)  # (B, L, C_in * prod(k))
        n = cols.shape[1]
        a = cols.reshape(batch_size, n, groups, -1)
        g = go.reshape(batch_size, groups, go.shape[1] // groups, -1).permute(0, 3, 1, 2)
        return a, g


class EmbeddingRule(LayerRule):
    """Embedding: ghost norm over equal indices, clipped sum by ``index_add``."""

    def sq_norms(self, calls: list[tuple[Any, Any, Any]], batch_size: int) -> torch.Tensor:
        m = self.module
        idx = torch.cat([c[0][0].reshape(batch_size, -1) for c in calls], dim=1)
        g = torch.cat([c[2][0].reshape(batch_size, -1, m.embedding_dim) for c in calls], dim=1)
        if m.padding_idx is not None:
            g = g * (idx != m.padding_idx).unsqueeze(-1).to(g.dtype)
        self._cache.update(idx=idx, g=g)
        if idx.shape[1] == 1:
            return g.pow(2).sum((1, 2))
        same = (idx.unsqueeze(2) == idx.unsqueeze(1)).to(g.dtype)
        gg = torch.einsum("btd,bsd->bts", g, g)
        return (same * gg).sum((1, 2)).clamp_min(0)

    def clipped_sum(self, factors: torch.Tensor) -> dict[str, torch.Tensor]:
        idx, g = self._cache.pop("idx"), self._cache.pop("g")
        w = self.module.weight
        scaled = (g * factors.to(g.dtype)[:, None, None]).reshape(-1, g.shape[-1])
        out = torch.zeros(w.shape, dtype=g.dtype, device=g.device)
        out.index_add_(0, idx.reshape(-1), scaled)
        return {self.names["weight"]: out}


def unfold(x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """im2col for Conv1d/2d/3d: ``(B, L, C_in * prod(kernel))`` in the weight's layout."""
    nd = x.ndim - 2
    kernel = tuple(conv.kernel_size)  # type: ignore[arg-type]
    stride = tuple(conv.stride)  # type: ignore[arg-type]
    dilation = tuple(conv.dilation)  # type: ignore[arg-type]
    padding = conv.padding
    if isinstance(padding, str):
        if padding == "valid":
            pads = [(0, 0)] * nd
        else:  # "same": torch puts the odd extra pad on the right
            totals = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
            pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(p, p) for p in padding]  # type: ignore[union-attr]
    flat_pad: list[int] = []
    for left, right in reversed(pads):
        flat_pad += [left, right]
    if any(flat_pad):
        x = F.pad(x, flat_pad)
    for i in range(nd):
        span = dilation[i] * (kernel[i] - 1) + 1
        x = x.unfold(2 + i, span, stride[i])
        if dilation[i] > 1:
            x = x[..., :: dilation[i]]
    # x: (B, C, L1..Lnd, k1..knd) -> (B, L1*..*Lnd, C*k1*..*knd)
    b, c = x.shape[:2]
    spatial = x.shape[2 : 2 + nd]
    perm = (0, *range(2, 2 + nd), 1, *range(2 + nd, 2 + 2 * nd))
    return x.permute(perm).reshape(b, math.prod(spatial), c * math.prod(kernel))


def rule_for(module: nn.Module, names: dict[str, str], mode: str) -> LayerRule:
    """The rule for ``module`` (``mode`` is "auto", "ghost" or "materialized" for affine layers)."""
    if type(module) is nn.Linear or (
        isinstance(module, nn.Linear) and not names.keys() - {"weight", "bias"}
    ):
        return LinearRule(module, names, mode)
    if isinstance(module, _CONV) and getattr(module, "padding_mode", "zeros") == "zeros":
        return ConvRule(module, names, mode)
    if (
        isinstance(module, nn.Embedding)
        and not module.scale_grad_by_freq
        and module.max_norm is None
    ):
        return EmbeddingRule(module, names, mode)
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, *_RMS_NORM)):
        return _NormRule(module, names, mode)
    return GenericRule(module, names, mode)


def describe(rules: Sequence[LayerRule]) -> list[str]:
    """One line per layer naming its rule (for debugging and the validator)."""
    return [f"{type(r.module).__name__}: {type(r).__name__}" for r in rules]
