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
"""

from typing import Any

import torch
from torch import nn

from research_ext.privacy._layers import GenericRule, weighted_sum

__all__ = ["TiedMemberRule", "TiedRule", "tie_groups", "widen_for_ties"]


class TiedMemberRule(GenericRule):
    """A layer of a tie group: per-layer ``vmap`` on its own calls (summed by :class:`TiedRule`)."""

    planned = "vmap (per layer, tied)"

    def __init__(
        self, module: nn.Module, names: dict[str, str], mode: str, partners: list[str]
    ) -> None:
        super().__init__(module, names, mode)
        self.partners = partners

    def describe(self) -> str:
        """``"Type: vmap (per layer, tied with `other`)"``."""
        partners = ", ".join(f"`{p}`" for p in self.partners)
        return f"{type(self.module).__name__}: vmap (per layer, tied with {partners})"


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
        norms: dict[str, torch.Tensor] = {}
        for q, g in grads.items():
            sq = g.reshape(batch_size, -1).pow(2).sum(1)
            group = self.groups[q]
            norms[group] = norms[group] + sq if group in norms else sq
        return norms

    def group_clipped_sum(self, factors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``sum_i factors[group]_i * g_i`` for every shared and own parameter of the group."""
        grads = self._cache.pop("grads")
        return {q: weighted_sum(factors[self.groups[q]].to(g.dtype), g) for q, g in grads.items()}


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
        group: dict[str, TiedMemberRule] = {}
        for k in ks:
            name, module, names = units[k]
            partners = [n for n in names_in if n != name]
            group[name] = TiedMemberRule(module, names, mode, partners)
        members.update(group)
        rules.append(TiedRule(group, canonical, groups))
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
