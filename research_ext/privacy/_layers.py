"""Per-layer rules: per-sample gradient norms and clipped sums from what a forward hook captured.

Each rule sees, per forward call of its layer, the call's inputs and the gradient of the summed
loss with respect to its outputs. Norm layers and generic layers materialize their (small or
unknown) per-sample gradients; embeddings use the ghost norm over equal indices and an
``index_add`` book-keeping sum. Linear, convolution and attention rules live in ``_affine.py``.
"""

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from research_ext.privacy._dropout import DropoutRecorder, DropoutReplay
from research_ext.privacy._per_sample import quiet_vmap

__all__ = [
    "MASKS",
    "NORM_STATISTICS",
    "EmbeddingRule",
    "GenericRule",
    "LayerRule",
    "MaterializedRule",
    "MergedRule",
    "NormRule",
    "norms_by_group",
    "sums_by_group",
    "weighted_sum",
]

#: Key under which a generic layer's captured call carries the dropout masks of its forward.
MASKS = "__dropout_masks__"
#: Key under which a GroupNorm's captured call carries the statistics its forward saved.
NORM_STATISTICS = "__norm_statistics__"


def weighted_sum(factors: torch.Tensor, per_sample: torch.Tensor) -> torch.Tensor:
    """``sum_i factors[i] * per_sample[i]``: ``(B,)`` and ``(B, *shape)`` give ``shape``.

    One matrix-vector product (no per-call einsum parsing); ``factors`` is cast to the
    per-sample tensor's dtype by the caller.
    """
    flat = per_sample.reshape(per_sample.shape[0], -1)
    return torch.mv(flat.T, factors).view(per_sample.shape[1:])


def norms_by_group(
    grads: dict[str, torch.Tensor], groups: dict[str, str]
) -> dict[str, torch.Tensor]:
    """Per-sample squared norms per layer group, ``(B,)`` each, of materialized gradients.

    ``grads[name]`` is ``(B, *param.shape)``; ``groups[name]`` the layer group it counts in.
    """
    norms: dict[str, torch.Tensor] = {}
    for name, g in grads.items():
        sq = g.reshape(g.shape[0], -1).pow(2).sum(1)
        group = groups[name]
        norms[group] = norms[group] + sq if group in norms else sq
    return norms


def sums_by_group(
    grads: dict[str, torch.Tensor], groups: dict[str, str], factors: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``sum_i factors[groups[name]]_i * grads[name][i]`` for every name."""
    return {n: weighted_sum(factors[groups[n]].to(g.dtype), g) for n, g in grads.items()}


class LayerRule:
    """Norms and clipped sums of one layer from its captured calls.

    ``calls`` holds one ``(args, kwargs, grad_outputs)`` triple per forward call of the layer in
    the step (a layer called twice sums its two contributions).
    """

    #: How the rule computes norms before its first step (``describe``).
    planned = "materialized"

    def __init__(self, module: nn.Module, names: dict[str, str], mode: str) -> None:
        self.module: Any = module
        self.names, self.mode = names, mode  # names: local -> qualified
        self._cache: dict[str, Any] = {}
        self.used: set[str] = set()  # per-sample methods of the last step

    def note(self, grad: torch.Tensor | None) -> None:
        """Record whether a block's norm was a ghost norm (``grad is None``) or materialized."""
        self.used.add("ghost" if grad is None else "materialized")

    def describe(self) -> str:
        """``"Type: method"``, e.g. ``"Linear: ghost"``, for :attr:`DPSGD.plan`."""
        planned = self.planned
        if self.mode != "auto" and "cost model" in planned:
            planned = self.mode
        used = "+".join(sorted(self.used)) if self.used else planned
        return f"{type(self.module).__name__}: {used}"

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
        return {self.names[n]: weighted_sum(factors.to(g.dtype), g) for n, g in grads.items()}


class NormRule(MaterializedRule):
    """LayerNorm, GroupNorm, RMSNorm: per-sample gradients are only (batch, channels)."""

    @staticmethod
    def saved_statistics(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The per-group mean and 1/std a GroupNorm forward saved for its backward, if any."""
        node: Any = output.grad_fn
        if node is None or type(node).__name__ != "NativeGroupNormBackward0":
            return None
        return node._saved_result1, node._saved_result2

    def per_sample(self, call: tuple[Any, Any, Any], batch_size: int) -> dict[str, torch.Tensor]:
        args, kwargs, grads = call
        x, go = args[0], grads[0]
        m = self.module
        if isinstance(m, nn.GroupNorm):
            return self._group_norm(x, go, batch_size, kwargs.get(NORM_STATISTICS))
        else:
            shape = tuple(m.normalized_shape)
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

    def _group_norm(
        self,
        x: torch.Tensor,
        go: torch.Tensor,
        batch_size: int,
        statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        m = self.module
        channels, groups = x.shape[1], m.num_groups
        length = x[0, 0].numel()
        x = x.contiguous()
        weight = m.weight is not None and "weight" in self.names
        bias = m.bias is not None and "bias" in self.names
        if statistics is None:  # not saved by the forward (it recorded no graph): recompute
            _, mean, rstd = torch.native_group_norm(
                x, None, None, batch_size, channels, length, groups, m.eps
            )
        else:
            mean, rstd = statistics
        # torch's fused backward on the batch seen as one example of batch * channels channels
        # in batch * groups groups (the same statistics) sums over that one example only: its
        # weight and bias gradients are the per-sample ones, with no activation-sized temporary.
        rows = batch_size * channels
        _, dw, db = torch.ops.aten.native_group_norm_backward(
            go.reshape(1, rows, length).contiguous(),
            x.reshape(1, rows, length),
            mean.reshape(1, batch_size * groups),
            rstd.reshape(1, batch_size * groups),
            torch.ones(rows, dtype=x.dtype, device=x.device),
            1,
            rows,
            length,
            batch_size * groups,
            [False, weight, bias],
        )
        out: dict[str, torch.Tensor] = {}
        if weight:
            out["weight"] = dw.view(batch_size, channels)
        if bias:
            out["bias"] = db.view(batch_size, channels)
        return out


class GenericRule(MaterializedRule):
    """Any other layer: per-sample vector-Jacobian products under ``vmap``.

    The layer's forward runs under a :class:`DropoutRecorder` during the step, and the re-run
    replays its masks, so the per-sample gradients are those of the forward pass.
    """

    planned = "vmap (per layer)"

    def __init__(self, module: nn.Module, names: dict[str, str], mode: str) -> None:
        super().__init__(module, names, mode)
        self.pending: list[torch.Tensor] | None = None
        self._running = 0  # nesting depth of this layer's forward
        #: A sub-layer with parameters that ran outside this layer's forward in the step (its
        #: contribution cannot come from re-running this layer), or None.
        self.escaped: str | None = None

    def recording_forward(self, forward: Any, *args: Any, **kwargs: Any) -> Any:
        """``forward(*args, **kwargs)`` with its dropout masks kept in ``pending``."""
        recorder = DropoutRecorder()
        self._running += 1
        try:
            with recorder:
                out = forward(*args, **kwargs)
        finally:
            self._running -= 1
        self.pending = recorder.masks
        return out

    def watch_sub_layers(self) -> list[Any]:
        """Hooks noting (in :attr:`escaped`) a sub-layer with parameters called from outside.

        The per-example re-run replays this layer's own forward, so a sub-layer the model also
        calls directly would have that contribution missed. Returns the hook handles.
        """
        self.escaped = None
        handles = []
        for sub_name, sub in self.module.named_modules():
            if sub is self.module or not any(True for _ in sub.parameters(recurse=False)):
                continue

            def pre_hook(_: nn.Module, __: Any, name: str = sub_name) -> None:
                if not self._running and self.escaped is None:
                    self.escaped = name

            handles.append(sub.register_forward_pre_hook(pre_hook))
        return handles

    def per_sample(self, call: tuple[Any, Any, Any], batch_size: int) -> dict[str, torch.Tensor]:
        args, kwargs, grads = call
        kwargs = dict(kwargs)
        masks = kwargs.pop(MASKS, [])
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
            a: tuple[Any, ...], kv: tuple[Any, ...], go: tuple[Any, ...], index: torch.Tensor
        ) -> dict[str, torch.Tensor]:
            a1 = tuple(t.unsqueeze(0) if d == 0 else t for t, d in zip(a, arg_dims, strict=True))
            kw = {
                k: (v.unsqueeze(0) if d == 0 else v)
                for k, v, d in zip(kw_keys, kv, kw_dims, strict=True)
            }

            def f(p: dict[str, torch.Tensor]) -> Any:
                with DropoutReplay(masks, index, batch_size):
                    out = torch.func.functional_call(module, p, a1, kw)
                return _tensor_outputs(out)

            outs, vjp_fn = torch.func.vjp(f, params)[:2]
            cot = tuple(
                torch.zeros_like(o) if g is None else g.unsqueeze(0)
                for o, g in zip(outs, go, strict=True)
            )
            return vjp_fn(cot)[0]

        batched_vjp = torch.func.vmap(
            one, in_dims=(arg_dims, kw_dims, grad_dims, 0), randomness="different"
        )
        from research_ext.privacy._recurrent import unrolled_recurrent  # imports this module

        device = next(iter(params.values())).device
        with quiet_vmap(), unrolled_recurrent(module), _without_own_hooks(module):
            result = batched_vjp(args, kw_vals, grads, torch.arange(batch_size, device=device))
        return dict(result)


class MergedRule(GenericRule):
    """A module run as one per-layer ``vmap`` unit in place of layers below it that failed.

    Its per-sample gradients are split back into the original layer groups, so per-layer
    clipping sees the same groups as before the fallback.
    """

    def __init__(
        self, module: nn.Module, names: dict[str, str], mode: str, groups: dict[str, str], why: str
    ) -> None:
        super().__init__(module, names, mode)
        self.groups, self.why = groups, why  # groups: local name -> layer group

    def describe(self) -> str:
        """``"Type: vmap (per layer, fallback: why)"``."""
        return f"{type(self.module).__name__}: vmap (per layer, fallback: {self.why})"

    def group_sq_norms(
        self, calls: list[tuple[Any, Any, Any]], batch_size: int
    ) -> dict[str, torch.Tensor]:
        """Per-sample squared norms of each original layer group under this module."""
        super().sq_norms(calls, batch_size)
        return norms_by_group(self._cache["grads"], self.groups)

    def group_clipped_sum(self, factors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``sum_i factors[group]_i * grad_i`` for every parameter, by qualified name."""
        sums = sums_by_group(self._cache.pop("grads"), self.groups, factors)
        return {self.names[n]: s for n, s in sums.items()}


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


@contextlib.contextmanager
def _without_own_hooks(module: nn.Module) -> Iterator[None]:
    """Re-run ``module`` without its own hooks (its captured calls are inside them).

    Captured inputs already passed its pre-hooks; captured output gradients are taken before
    its forward hooks replace the output.
    """
    saved = {name: getattr(module, name) for name in _HOOK_DICTS}
    for name in _HOOK_DICTS:
        setattr(module, name, OrderedDict())
    try:
        yield
    finally:
        for name, hooks in saved.items():
            setattr(module, name, hooks)


def _tensor_outputs(out: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    return tuple(o for o in out if isinstance(o, torch.Tensor))


class EmbeddingRule(LayerRule):
    """Embedding: ghost norm over equal indices, clipped sum by ``index_add``."""

    planned = "ghost"

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
