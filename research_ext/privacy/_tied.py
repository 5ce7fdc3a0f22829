r"""Parameters shared by several layers (tied weights) under the hook engine.

A parameter used by two layers, such as an output layer tied to the input embedding (GPT-2,
BERT), has as per-example gradient the sum of the two layers' contributions,
:math:`g_i = g_i^{(1)} + g_i^{(2)}`, and its norm has the cross term
:math:`2\langle g_i^{(1)}, g_i^{(2)}\rangle`, which neither layer's own rule can see. The layers
that share parameters (directly or through a chain of ties) form one tie group: each member runs
the per-layer ``vmap`` rule on its own captured calls, the members' per-sample gradients are
added parameter by parameter (by identity), and the norms and clipped sums are taken from those
sums. Every other layer keeps its own rule, so a tied language model costs per-layer work for
its tied layers instead of a whole-model ``vmap`` of every layer.

The common case, one table shared by embeddings and linear output layers (``out.weight =
emb.weight``), has a ghost norm that materializes nothing of the table's size
(:class:`EmbeddingTieRule`). Per example, an embedding's gradient of the table W is
:math:`\sum_t e_{x_t} \gamma_t^\top` (indices :math:`x_t`, output gradients :math:`\gamma_t`), a
linear layer's :math:`\sum_s g_s a_s^\top` (output gradients :math:`g_s`, inputs :math:`a_s`), so
with all such terms of the group

.. math::

    \|\nabla_W\|^2 = \sum_{t,t'} [x_t = x_{t'}] \langle\gamma_t, \gamma_{t'}\rangle
    + \sum_{s,s'} \langle g_s, g_{s'}\rangle \langle a_s, a_{s'}\rangle
    + 2 \sum_{t,s} g_s[x_t] \langle\gamma_t, a_s\rangle,

and the clipped sum is an ``index_add`` of the scaled :math:`\gamma_t` plus one matrix product.
"""

from typing import Any

import torch
from torch import nn

from research_ext.privacy._affine import LinearRule
from research_ext.privacy._layers import (
    EmbeddingRule,
    GenericRule,
    norms_by_group,
    sums_by_group,
    weighted_sum,
)

__all__ = ["EmbeddingTieRule", "TiedMemberRule", "TiedRule", "tie_groups", "widen_for_ties"]


class TiedMemberRule(GenericRule):
    """A layer of a tie group: per-layer ``vmap`` on its own calls (summed by :class:`TiedRule`)."""

    planned = "vmap (per layer, tied)"

    def __init__(
        self,
        module: nn.Module,
        names: dict[str, str],
        mode: str,
        partners: list[str],
        method: str = "vmap (per layer",
    ) -> None:
        super().__init__(module, names, mode)
        self.partners, self.method = partners, method

    def describe(self) -> str:
        """``"Type: vmap (per layer, tied with `other`)"`` (or ``ghost (tied with ...)``)."""
        partners = ", ".join(f"`{p}`" for p in self.partners)
        method = (
            "+".join(sorted(self.used)) if self.used and self.method == "ghost" else self.method
        )
        head = method + ", " if method.endswith("(per layer") else method + " ("
        return f"{type(self.module).__name__}: {head}tied with {partners})"


class TiedRule:
    """Norms and clipped sums of one tie group, by layer group, from its members' calls.

    Args:
        members: the group's layers, ``{layer name: rule}``.
        canonical: ``id(parameter) -> qualified name`` (the model's first name for it).
        groups: qualified parameter name -> its layer group (per-layer clipping).
    """

    def __init__(
        self, members: dict[str, TiedMemberRule], canonical: dict[int, str], groups: dict[str, str]
    ) -> None:
        self.members, self.canonical, self.groups = members, canonical, groups
        self._cache: dict[str, Any] = {}

    def group_sq_norms(
        self, calls: dict[str, list[tuple[Any, Any, Any]]], batch_size: int
    ) -> dict[str, torch.Tensor]:
        """Per-sample squared norms ``(batch,)`` per layer group of the group's parameters.

        ``calls[layer]`` holds that member's ``(args, kwargs, output gradients)`` triples.
        """
        grads: dict[str, torch.Tensor] = {}  # qualified name -> (batch, *param.shape)
        for name, triples in calls.items():
            rule = self.members[name]
            local = dict(rule.module.named_parameters(remove_duplicate=False))
            for call in triples:
                for n, g in rule.per_sample(call, batch_size).items():
                    q = self.canonical[id(local[n])]
                    grads[q] = grads[q] + g if q in grads else g
        self._cache["grads"] = grads
        return norms_by_group(grads, self.groups)

    def group_clipped_sum(self, factors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``sum_i factors[group]_i * g_i`` for every shared and own parameter of the group."""
        return sums_by_group(self._cache.pop("grads"), self.groups, factors)


class EmbeddingTieRule(TiedRule):
    r"""One table shared by ``nn.Embedding`` and ``nn.Linear`` layers: ghost norms, no vmap.

    See the module docstring for the norm. The linear layers' terms cost :math:`S^2 (V + d)` per
    example for S output positions; where that exceeds :math:`S V d`, their per-sample gradient
    :math:`G = \sum_s g_s a_s^\top` (``(batch, V, d)``) is materialized instead, and the cross
    term with the embeddings reads its rows: :math:`\sum_t \langle\gamma_t, G[x_t]\rangle`. A
    linear member's own bias keeps its per-sample gradient :math:`\sum_s g_s` (``(batch, out)``).
    """

    def group_sq_norms(
        self, calls: dict[str, list[tuple[Any, Any, Any]]], batch_size: int
    ) -> dict[str, torch.Tensor]:
        """Per-sample squared norms ``(batch,)`` per layer group (see :class:`TiedRule`)."""
        b = batch_size
        idx, gam, outs, ins = [], [], [], []
        biases: dict[str, torch.Tensor] = {}
        for name, triples in calls.items():
            m: Any = self.members[name].module
            for args, _, grads in triples:
                x, g = args[0], grads[0]
                if g is None:
                    continue
                if isinstance(m, nn.Embedding):
                    i, gm = x.reshape(b, -1), g.reshape(b, -1, m.embedding_dim)
                    if m.padding_idx is not None:
                        gm = gm * (i != m.padding_idx).unsqueeze(-1).to(gm.dtype)
                    idx.append(i)
                    gam.append(gm)
                    continue
                go = g.reshape(b, -1, m.out_features)
                outs.append(go)
                ins.append(x.reshape(b, -1, m.in_features))
                if m.bias is not None and "bias" in self.members[name].names:
                    q = self.canonical[id(m.bias)]
                    biases[q] = biases[q] + go.sum(1) if q in biases else go.sum(1)
        x_t = torch.cat(idx, 1) if idx else None
        gam_t = torch.cat(gam, 1) if gam else None
        g_s = torch.cat(outs, 1) if outs else None
        a_s = torch.cat(ins, 1) if ins else None
        ref = gam_t if gam_t is not None else g_s
        assert ref is not None  # a tie group has at least two calls that reached the loss
        sq = ref.new_zeros(b)
        if x_t is not None and gam_t is not None:
            same = (x_t.unsqueeze(2) == x_t.unsqueeze(1)).to(gam_t.dtype)
            sq = sq + (same * (gam_t @ gam_t.mT)).sum((1, 2))
        full = None  # the linear layers' per-sample gradient of the table, where materialized
        if g_s is not None and a_s is not None:
            (v, d), s_out = self._table().shape, g_s.shape[1]
            if s_out * (v + d) > v * d:  # the ghost terms would cost more than the gradient
                full = g_s.mT @ a_s  # (B, V, d)
                sq = sq + full.pow(2).sum((1, 2))
                if x_t is not None and gam_t is not None:
                    rows = torch.gather(full, 1, x_t.unsqueeze(-1).expand(-1, -1, d))
                    sq = sq + 2 * (rows * gam_t).sum((1, 2))
            else:
                sq = sq + ((g_s @ g_s.mT) * (a_s @ a_s.mT)).sum((1, 2))
                if x_t is not None and gam_t is not None:
                    picked = torch.gather(g_s, 2, x_t.unsqueeze(1).expand(-1, s_out, -1))
                    sq = sq + 2 * (picked.mT * (gam_t @ a_s.mT)).sum((1, 2))
            for rule in self.members.values():
                if isinstance(rule.module, nn.Linear):
                    rule.used = {"ghost" if full is None else "materialized"}
        weight = self.canonical[id(self._table())]
        self._cache.update(x=x_t, gam=gam_t, g=g_s, a=a_s, full=full, biases=biases, weight=weight)
        norms = {self.groups[weight]: sq.clamp_min(0)}
        for q, gb in biases.items():
            group = self.groups[q]
            extra = gb.pow(2).sum(1)
            norms[group] = norms[group] + extra if group in norms else extra
        return norms

    def group_clipped_sum(self, factors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The table's and the linear biases' clipped sums (see :class:`TiedRule`)."""
        c = self._cache
        table = self._table()
        weight = c.pop("weight")
        f = factors[self.groups[weight]]
        ref = c["gam"] if c["gam"] is not None else c["g"]
        out = torch.zeros(table.shape, dtype=ref.dtype, device=ref.device)
        if c["gam"] is not None:
            scaled = c["gam"] * f.to(ref.dtype)[:, None, None]
            out.index_add_(0, c["x"].reshape(-1), scaled.reshape(-1, table.shape[1]))
        if c["full"] is not None:
            out += weighted_sum(f.to(ref.dtype), c["full"])
        elif c["g"] is not None:
            scaled = c["g"] * f.to(ref.dtype)[:, None, None]
            out += scaled.reshape(-1, table.shape[0]).mT @ c["a"].reshape(-1, table.shape[1])
        sums = {weight: out}
        for q, gb in c["biases"].items():
            sums[q] = weighted_sum(factors[self.groups[q]].to(gb.dtype), gb)
        for key in ("x", "gam", "g", "a", "full", "biases"):
            c.pop(key)
        return sums

    def _table(self) -> torch.Tensor:
        return next(iter(self.members.values())).module.weight

    @staticmethod
    def applies(modules: list[nn.Module]) -> bool:
        """Plain Embedding and Linear layers whose one shared parameter is every weight.

        Plain: their own rules apply (a subclass with its own ``forward``, or an embedding with
        ``max_norm`` or ``scale_grad_by_freq``, takes the per-layer vmap path instead).
        """
        from research_ext.privacy._engines import rule_for  # the engine imports this module

        plain = [m for m in modules if isinstance(m, nn.Embedding | nn.Linear)]
        if len(plain) != len(modules) or not any(isinstance(m, nn.Embedding) for m in modules):
            return False
        table = modules[0].weight
        simple = all(
            isinstance(rule_for(m, {"weight": ""}, "auto"), EmbeddingRule | LinearRule)
            for m in modules
        )
        own_bias = all(getattr(m, "bias", None) is not table for m in modules)
        biases = [id(m.bias) for m in modules if getattr(m, "bias", None) is not None]
        return (
            simple
            and own_bias
            and len(set(biases)) == len(biases)
            and all(m.weight is table for m in modules)
        )


def tie_groups(
    model: nn.Module, units: list[tuple[str, nn.Module, dict[str, str]]], mode: str
) -> tuple[dict[str, TiedMemberRule], list[TiedRule]]:
    """The layers that share parameters with another layer, grouped (connected components).

    Args:
        model: the model the units come from.
        units: ``(layer name, module, {local name: qualified name})`` of every layer.
        mode: the engine's ``grad_sample_mode``.

    Returns:
        ``({layer name: member rule}, [one TiedRule per group])``; empty when no layer shares
        a parameter with another one.
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    owners: dict[int, list[int]] = {}  # id(parameter) -> indices of the units using it
    for k, (_, _, names) in enumerate(units):
        for q in set(names.values()):
            owners.setdefault(id(params[q]), []).append(k)
    parent = list(range(len(units)))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for ks in owners.values():
        for k in ks[1:]:
            parent[root(k)] = root(ks[0])
    components: dict[int, list[int]] = {}
    for k in range(len(units)):
        components.setdefault(root(k), []).append(k)
    canonical = {id(p): q for q, p in model.named_parameters()}
    groups = {q: name for name, _, names in units for q in names.values()}
    members: dict[str, TiedMemberRule] = {}
    rules: list[TiedRule] = []
    for ks in components.values():
        if len(ks) < 2:
            continue
        names_in = [units[k][0] for k in ks]
        ghost = EmbeddingTieRule.applies([units[k][1] for k in ks])
        group: dict[str, TiedMemberRule] = {}
        for k in ks:
            name, module, names = units[k]
            partners = [n for n in names_in if n != name]
            method = "ghost" if ghost else "vmap (per layer"
            group[name] = TiedMemberRule(module, names, mode, partners, method)
        members.update(group)
        rules.append((EmbeddingTieRule if ghost else TiedRule)(group, canonical, groups))
    return members, rules


def widen_for_ties(parent: str, layers: list[str], tie_of: dict[str, TiedRule]) -> str:
    """The module a per-layer fallback merges into: ``parent``, widened to hold whole tie groups.

    A fallback replaces the layers under ``parent`` by one per-layer ``vmap`` unit; a tie group
    with a layer there must move into that unit whole (its shared parameter's per-sample
    gradient needs every layer that uses it), so ``parent`` becomes the common ancestor of
    itself and those groups' layers, until no group is split.

    Example:
        >>> widen_for_ties("blocks.0", ["blocks.0.attn", "head"], {})
        'blocks.0'
    """
    while True:
        prefix = f"{parent}." if parent else ""
        inside = [k for k in layers if not parent or k == parent or k.startswith(prefix)]
        tied = {m for k in inside if k in tie_of for m in tie_of[k].members}
        wider = _common_ancestor([parent, *tied])
        if wider == parent:
            return parent
        parent = wider


def _common_ancestor(names: list[str]) -> str:
    """The deepest module name that is, or is above, every one of ``names`` ("" is the model)."""
    parts = [n.split(".") if n else [] for n in names]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)
