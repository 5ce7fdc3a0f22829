r"""Clipped-gradient engines: per-sample squared norms per layer, then clipped sums.

Both engines expose one protocol: ``run(batch)`` returns the per-sample squared gradient norm of
every layer group, ``(batch,)`` each, and ``clipped_sum(factors)`` then returns
:math:`\sum_i c_{i,k} g_{i,k}` for every parameter, with ``factors`` the per-sample clip factors
of each group k. Clipping modes only choose the factors, so every mode runs on every engine.
"""

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from research_ext.core import module_params
from research_ext.errors import UnsupportedModuleError
from research_ext.privacy._affine import AttentionRule, ConvRule, LinearRule, attention_supported
from research_ext.privacy._capture import Records, needs_tap, tap_attention_inputs, tap_tensor
from research_ext.privacy._layers import (
    MASKS,
    NORM_STATISTICS,
    EmbeddingRule,
    GenericRule,
    LayerRule,
    MergedRule,
    NormRule,
    norms_by_group,
    sums_by_group,
)
from research_ext.privacy._per_sample import LossFn, per_sample_grads, summed_loss, unpack_batch
from research_ext.privacy._recurrent import RecurrentRule, is_torch_recurrent
from research_ext.privacy._tied import TiedMemberRule, TiedRule, tie_groups, widen_for_ties

__all__ = [
    "ENGINES",
    "HookEngine",
    "VmapEngine",
    "WholeModelFallbackError",
    "layer_groups",
    "make_engine",
]

#: grad_sample_mode values: "auto" (hooks, per-layer cost model; layers that share parameters
#: as tie groups; whole-model vmap when a parameter is used twice in one layer or by none, or
#: when no module can split a step), "ghost" (hooks, ghost norms wherever defined),
#: "materialized" (hooks, per-layer per-sample gradients), "vmap" (whole-model torch.func
#: per-sample gradients).
ENGINES = ("auto", "ghost", "materialized", "vmap")


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


def _is(module: nn.Module, classes: tuple[type, ...]) -> bool:
    """An instance of one of ``classes`` that runs that class's own ``forward``."""
    own = type(module).forward
    return any(isinstance(module, c) and own is getattr(c, "forward", None) for c in classes)


def rule_for(module: nn.Module, names: dict[str, str], mode: str) -> LayerRule:
    """The per-layer rule for ``module``; ``mode`` is "auto", "ghost" or "materialized".

    A dedicated rule re-implements torch's forward of its layer, so a subclass that overrides
    ``forward`` (e.g. a scaled or low-rank Linear) gets the generic per-layer vmap rule.
    """
    if _is(module, (nn.Linear,)) and not names.keys() - {"weight", "bias"}:
        return LinearRule(module, names, mode)
    if _is(module, _CONV) and module.padding_mode == "zeros":
        return ConvRule(module, names, mode)
    if _is(module, (nn.Embedding,)) and not module.scale_grad_by_freq and module.max_norm is None:
        return EmbeddingRule(module, names, mode)
    if _is(module, _NORMS):
        return NormRule(module, names, mode)
    if attention_supported(module):
        return AttentionRule(module, names, mode)
    if is_torch_recurrent(module):
        return RecurrentRule(module, names, mode)
    return GenericRule(module, names, mode)


def _units(model: nn.Module) -> list[tuple[str, nn.Module, dict[str, str]]]:
    """Layers owning trainable parameters: (qualified name, module, {local name: qualified})."""
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    units: list[tuple[str, nn.Module, dict[str, str]]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        direct = [n for n, p in module.named_parameters(recurse=False) if id(p) in trainable]
        if direct:
            # A module with its own parameters is one unit with everything below it
            # (e.g. MultiheadAttention, whose out_proj is used without being called).
            names = {
                n: f"{prefix}{n}"
                for n, p in module.named_parameters(remove_duplicate=False)
                if id(p) in trainable
            }
            units.append((prefix.rstrip("."), module, names))
            return
        for child_name, child in module.named_children():
            visit(f"{prefix}{child_name}.", child)

    visit("", model)
    return units


def layer_groups(model: nn.Module) -> dict[str, str]:
    """Parameter name -> its layer group (the module that owns it), as used for per-layer clipping.

    Example:
        >>> layer_groups(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)))
        {'0.weight': '0', '0.bias': '0', '1.weight': '1', '1.bias': '1'}
    """
    return {q: name for name, _, names in _units(model) for q in names.values()}


def _shared_parameters(model: nn.Module) -> tuple[bool, bool]:
    """``(a parameter is used by two layers, one is used twice in one layer or by none)``.

    Ties between layers run through the hook engine (``_tied.py``); the second kind needs
    whole-model vmap.
    """
    seen: set[int] = set()
    across = within = False
    params = dict(model.named_parameters(remove_duplicate=False))
    for _, _, names in _units(model):
        ids = [id(params[q]) for q in names.values()]
        within = within or len(set(ids)) != len(ids)
        across = across or not seen.isdisjoint(ids)
        seen.update(ids)
    return across, within or len(seen) != len(module_params(model))


class VmapEngine:
    """Materialized per-sample gradients of the whole model with ``torch.func``."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.groups = layer_groups(model)
        self._grads: dict[str, torch.Tensor] = {}

    def plan(self) -> dict[str, str]:
        """``{layer: "Type: vmap (whole model)"}``."""
        return {
            name or "<root>": f"{type(module).__name__}: vmap (whole model)"
            for name, module, _ in _units(self.model)
        }

    def run(self, batch: Any) -> dict[str, torch.Tensor]:
        """Per-sample squared norms per layer group, ``(batch,)`` each."""
        self._grads = per_sample_grads(self.model, self.loss_fn, batch)
        return norms_by_group(self._grads, self.groups)

    def clipped_sum(self, factors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sum over the batch of the per-sample gradients scaled by their group's factor."""
        grads, self._grads = self._grads, {}
        return sums_by_group(grads, self.groups, factors)


def _guarded_forward(
    name: str, rule: Any, records: Records, tap: bool, keep_going: bool, *args: Any, **kwargs: Any
) -> Any:
    """A rule's replacement forward; what it cannot compute is a failure of that layer.

    With ``keep_going`` (a forward that cannot be run again: the user's own), the failure is
    noted in ``records`` and the layer's own forward gives the output instead.
    """
    given = (args, kwargs)
    if tap:
        args, kwargs = tap_attention_inputs(args, kwargs)
    try:
        return rule.forward(records, *args, **kwargs)
    except LayerFailureError:
        raise
    except Exception as err:
        kind = type(rule.module).__name__
        message = f"DPSGD: layer `{name}` ({kind}) failed in its per-sample rule's forward: {err}"
        if not keep_going:
            raise LayerFailureError(name, message) from err
        records.failure = message
        return type(rule.module).forward(rule.module, *given[0], **given[1])


#: Rules that need only a layer's inputs and output gradients: their parameters can leave the
#: user's graph (generic, merged and recurrent rules keep theirs: a recurrent layer's first
#: hidden projection, for one, has no input that needs a gradient).
_DETACHABLE = (LinearRule, ConvRule, EmbeddingRule, NormRule, AttentionRule)


def _zeros_like(out: torch.Tensor, grads: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
    """Zeros for an output that got no gradient, on the device of its call's other gradients.

    ``out`` may be a shape-only stand-in (:meth:`Records.release_outputs`).
    """
    device = next(g.device for g in grads if g is not None)
    return torch.zeros(out.shape, dtype=out.dtype, device=device)


def _detachable(rule: LayerRule) -> bool:
    """A ``_DETACHABLE`` rule, or a layer of a tied table (its ghost norm needs no vmap)."""
    return isinstance(rule, _DETACHABLE) or (
        isinstance(rule, TiedMemberRule) and rule.method == "ghost"
    )


class LayerFailureError(Exception):
    """A layer's rule could not handle its calls (the message names the layer)."""

    def __init__(self, layer: str, message: str) -> None:
        super().__init__(message)
        self.layer = layer


class WholeModelFallbackError(Exception):
    """``"auto"`` found no layer or module to run per layer: the step needs whole-model vmap."""


class HookEngine:
    """One forward and one backward; per-layer rules from captured activations and output grads."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, mode: str = "auto") -> None:
        self.model, self.loss_fn, self.mode = model, loss_fn, mode
        units = _units(model)
        self.rules: dict[str, LayerRule] = {
            name: rule_for(module, names, "auto" if mode == "auto" else mode)
            for name, module, names in units
        }
        members, ties = tie_groups(model, units, mode)
        self.rules.update(members)
        self._tie_of = {name: tie for tie in ties for name in tie.members}
        self.groups = layer_groups(model)
        self._active: list[tuple[str, LayerRule | TiedRule]] = []
        self._detachable: list[nn.Parameter] = []
        self._detachable_for: dict[str, LayerRule] | None = None

    def plan(self) -> dict[str, str]:
        """``{layer: "Type: method"}``: how each layer's per-sample gradients are computed."""
        return {name or "<root>": rule.describe() for name, rule in self.rules.items()}

    def run(self, batch: Any) -> dict[str, torch.Tensor]:
        """Per-sample squared norms per layer group, ``(batch,)`` each.

        In ``"auto"`` mode a layer whose rule cannot handle its calls (tensors that are not
        batch-first, ops its per-layer re-run cannot trace) is merged into its parent module,
        run as one per-layer ``vmap`` unit, and the step is recomputed; the plan then keeps
        the merged unit. Other modes raise ``UnsupportedModuleError`` naming the layer.
        """
        # A retry after a fallback redraws the forward's randomness from where this step began,
        # so the step's dropout masks do not depend on whether the plan was already settled.
        devices = {p.device for p in self.model.parameters() if p.device.type == "cuda"}
        states = (torch.get_rng_state(), [(d, torch.cuda.get_rng_state(d)) for d in devices])
        while True:
            try:
                return self._run(batch)
            except LayerFailureError as failure:
                torch.set_rng_state(states[0])
                for device, state in states[1]:
                    torch.cuda.set_rng_state(state, device)
                if self.mode != "auto":
                    raise UnsupportedModuleError(
                        f"{failure}; grad_sample_mode='auto' falls back per layer (see "
                        f"DPSGD.plan), grad_sample_mode='vmap' runs the whole model per example"
                    ) from failure.__cause__
                self._fall_back(failure.layer, str(failure))

    def _fall_back(self, layer: str, why: str) -> None:
        if layer == "":  # even the model as one per-layer unit failed
            raise WholeModelFallbackError(why)
        parent = layer.rsplit(".", 1)[0] if "." in layer else ""
        parent = widen_for_ties(parent, list(self.rules), self._tie_of)
        module = self.model.get_submodule(parent)
        trainable = {id(p) for p in self.model.parameters() if p.requires_grad}
        prefix = f"{parent}." if parent else ""
        names = {
            n: f"{prefix}{n}"
            for n, p in module.named_parameters(remove_duplicate=False)
            if id(p) in trainable
        }
        groups = {n: self.groups[q] for n, q in names.items()}
        kept = {
            k: r
            for k, r in self.rules.items()
            if not (parent == "" or k == parent or k.startswith(prefix))
        }
        short = why.split(": ", 1)[-1].split(";")[0]
        kept[parent] = MergedRule(module, names, "auto", groups, f"`{layer}` {short}")
        self.rules = kept
        self._tie_of = {k: t for k, t in self._tie_of.items() if k in kept}

    def _run(self, batch: Any) -> dict[str, torch.Tensor]:
        args, kwargs, targets, batch_size = unpack_batch("DPSGD.step", batch, self.model)
        records: dict[str, Records] = {}
        undo = self.capture(records)
        try:
            with torch.enable_grad():
                outputs = self.model(*args, **kwargs)
                loss = summed_loss(self.loss_fn, outputs, targets, batch_size)
        finally:
            undo()
        self.check_unmodified(records)
        flat = [
            (name, i, j, out)
            for name, calls in records.items()
            for i, (_, _, outs) in enumerate(calls)
            for j, out in enumerate(outs)
        ]
        wanted = [out for *_, out in flat if out.requires_grad]
        grads = iter(torch.autograd.grad(loss, wanted, allow_unused=True) if wanted else ())
        by_call: dict[tuple[str, int], list[torch.Tensor | None]] = {}
        for name, i, _, out in flat:
            g = next(grads) if out.requires_grad else None
            by_call.setdefault((name, i), []).append(g)
        return self.norms(records, by_call, batch_size)

    def capture(
        self, records: dict[str, Records], detach_parameters: bool = False, keep_going: bool = False
    ) -> Callable[[], None]:
        """Install the layers' hooks (and patched forwards) that fill ``records`` in a forward.

        Returns the function that removes them. ``DPSGD.step`` wraps its own forward with it;
        the user-loop ``DPOptimizer`` wraps the user's forward.

        With ``detach_parameters``, the parameters of the layers whose rules need only their
        inputs and output gradients (Linear, convolutions, embeddings, norms, attention) are
        taken out of the forward's graph until ``undo``: a backward through that forward then
        computes the gradients the rules need and no parameter gradient (``p.grad`` stays as
        it was). A layer output that then needs no gradient (its input needs none, e.g. the
        first layer) is replaced by an alias that does, so its output gradient still arrives;
        attention layers get such aliases of their query, key and value instead.

        With ``keep_going`` (the user's forward, which cannot be run again), a layer whose
        rule fails in its forward runs its own forward and the failure is kept in its records
        (:meth:`check_unmodified` raises it later).
        """
        for rule in self.rules.values():
            rule.used.clear()
        handles = []
        patched = []
        frozen = (
            [p for p in self._detachable_parameters() if p.requires_grad]
            if detach_parameters
            else []
        )
        for name, rule in self.rules.items():
            tap = detach_parameters and _detachable(rule)
            if getattr(rule, "patches_forward", False):
                # Run attention and recurrent layers as explicit projections (Linear-like blocks).
                rule.module.forward = functools.partial(
                    _guarded_forward,
                    name,
                    rule,
                    records.setdefault(name, Records()),
                    tap,
                    keep_going,
                )
                patched.append(rule.module)
                continue
            if isinstance(rule, GenericRule) and not _detachable(rule):
                # Keep the forward's dropout masks for the per-example re-run.
                rule.module.forward = functools.partial(rule.recording_forward, rule.module.forward)
                patched.append(rule.module)
                if name:  # nothing runs outside the model's own forward
                    handles += rule.watch_sub_layers()
            handles.append(
                rule.module.register_forward_hook(
                    # First among the forward hooks: the layer's own output, before any user
                    # hook replaces it.
                    self._hook(name, records, tap),
                    with_kwargs=True,
                    prepend=True,
                )
            )
        for p in frozen:
            p.requires_grad_(False)

        def undo() -> None:
            for p in frozen:
                p.requires_grad_(True)
            for h in handles:
                h.remove()
            for module in patched:
                del module.forward

        return undo

    def _detachable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the layers whose rules work without parameter gradients."""
        if self._detachable_for is not self.rules:  # built anew after a fallback
            named = dict(self.model.named_parameters(remove_duplicate=False))
            self._detachable = [
                named[q]
                for rule in self.rules.values()
                if _detachable(rule)
                for q in rule.names.values()
            ]
            self._detachable_for = self.rules
        return self._detachable

    def check_unmodified(self, records: dict[str, Records]) -> None:
        """Raise a layer failure if its rule's forward failed or a captured tensor changed.

        Failed: see :meth:`capture`'s ``keep_going``. Changed: a captured input or output was
        modified in place after the layer ran.
        """
        for name, calls in records.items():
            if calls.failure is not None:
                raise LayerFailureError(name, calls.failure)
            if calls.modified():
                kind = type(self.rules[name].module).__name__
                raise LayerFailureError(
                    name,
                    f"DPSGD: layer `{name}` ({kind}) had its input or output modified in place "
                    f"after it ran (e.g. `ReLU(inplace=True)`, `x.relu_()`, `x += ...`); its "
                    f"per-sample gradients need the values it saw: make that operation out of "
                    f"place",
                )

    def early_norms(
        self, name: str, call: tuple[Any, Any, Any], grad: torch.Tensor, batch_size: int
    ) -> torch.Tensor | None:
        """Norms of a layer called once with one output, as soon as its output gradient arrives.

        Computed inside the backward, so the output gradient can be released right away (the
        batch parameter gradient it would feed is never computed). None where the layer's rule
        is not one of the one-block rules, or where it fails: :meth:`norms` then runs (and
        reports) it as usual.
        """
        rule = self.rules.get(name)
        if not isinstance(rule, _DETACHABLE) or isinstance(rule, AttentionRule):
            return None
        args, kwargs, _ = call
        triples = [(args, kwargs, (grad,))]
        try:
            self._check_batch_first(name, triples, batch_size)
            return rule.sq_norms(triples, batch_size)
        except (UnsupportedModuleError, RuntimeError):
            return None

    def norms(
        self,
        records: dict[str, Records],
        by_call: dict[tuple[str, int], list[torch.Tensor | None]],
        batch_size: int,
        early: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample squared norms per group from captured calls and their output gradients.

        ``by_call[(layer, i)]`` holds the gradients of the summed loss with respect to the
        outputs of the layer's i-th call (``None`` where an output did not reach the loss);
        ``early`` the norms :meth:`early_norms` already gave (their rules hold the rest).
        """
        norms: dict[str, torch.Tensor] = {}
        self._active = []
        tied: dict[TiedRule, dict[str, list[Any]]] = {}
        for name, calls in records.items():
            rule = self.rules[name]
            if early is not None and name in early:
                norms[name] = early[name]
                self._active.append((name, rule))
                continue
            # Calls none of whose outputs reached the loss are dropped; in the others, an output
            # without a gradient gets zeros shaped like that call's own output.
            kept = [
                (a, kw, outs, tuple(by_call[(name, i)])) for i, (a, kw, outs) in enumerate(calls)
            ]
            kept = [c for c in kept if any(g is not None for g in c[3])]
            if not kept:
                continue
            if isinstance(rule, GenericRule):
                if rule.escaped is not None:
                    prefix = f"{name}." if name else ""
                    raise LayerFailureError(
                        name,
                        f"DPSGD: layer `{prefix}{rule.escaped}` was called outside the forward "
                        f"of `{name}`, which runs it per example",
                    )
                triples = [(a, kw, gs) for a, kw, _, gs in kept]
            else:
                triples = [
                    (
                        a,
                        kw,
                        tuple(
                            _zeros_like(o, gs) if g is None else g
                            for g, o in zip(gs, outs, strict=True)
                        ),
                    )
                    for a, kw, outs, gs in kept
                ]
            try:
                self._check_batch_first(name, triples, batch_size)
                if name in self._tie_of:  # summed with the other layers of its group below
                    tied.setdefault(self._tie_of[name], {})[name] = triples
                    continue
                if isinstance(rule, MergedRule):
                    norms.update(rule.group_sq_norms(triples, batch_size))
                else:
                    norms[name] = rule.sq_norms(triples, batch_size)
            except (UnsupportedModuleError, RuntimeError) as err:
                kind = type(rule.module).__name__
                message = (
                    str(err)
                    if isinstance(err, UnsupportedModuleError)
                    else (f"DPSGD: layer `{name}` ({kind}) failed in its per-sample rule: {err}")
                )
                raise LayerFailureError(name, message) from err
            self._active.append((name, rule))
        for tie, calls_by_layer in tied.items():
            try:
                norms.update(tie.group_sq_norms(calls_by_layer, batch_size))
            except RuntimeError as err:
                name = next(iter(calls_by_layer))
                raise LayerFailureError(
                    name, f"DPSGD: tied layers {sorted(calls_by_layer)} failed in their rule: {err}"
                ) from err
            self._active.append(("", tie))
        return norms

    def _check_batch_first(self, name: str, calls: list[Any], batch_size: int) -> None:
        for args, _, grads in calls:
            for t in (*args[:1], *grads[:1]):
                if isinstance(t, torch.Tensor) and (t.ndim == 0 or t.shape[0] != batch_size):
                    raise UnsupportedModuleError(
                        f"DPSGD: layer `{name}` ({type(self.rules[name].module).__name__}) got a "
                        f"tensor of shape {tuple(t.shape)} whose first dim is not the batch size "
                        f"{batch_size}; per-sample gradients need batch-first layers "
                        f"(e.g. batch_first=True)"
                    )

    def _hook(
        self, name: str, records: dict[str, Records], tap: bool = False
    ) -> Callable[..., Any]:
        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> Any:
            replaced = None
            if tap and isinstance(output, torch.Tensor) and needs_tap(output):
                output = replaced = tap_tensor(output)
            outs = (
                (output,)
                if isinstance(output, torch.Tensor)
                else tuple(o for o in output if isinstance(o, torch.Tensor))
            )
            rule = self.rules[name]
            if isinstance(rule, GenericRule) and rule.pending is not None:
                kwargs, rule.pending = {**kwargs, MASKS: rule.pending}, None
            if isinstance(rule, NormRule) and isinstance(output, torch.Tensor):
                statistics = rule.saved_statistics(output)
                if statistics is not None:  # reused, not recomputed, by the rule
                    kwargs = {**kwargs, NORM_STATISTICS: statistics}
            records.setdefault(name, Records()).append((args, kwargs, outs))
            return replaced

        return hook

    def clipped_sum(self, factors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sum over the batch of the per-sample gradients scaled by their group's factor."""
        out: dict[str, torch.Tensor] = {}
        for name, rule in self._active:
            if isinstance(rule, MergedRule | TiedRule):
                out.update(rule.group_clipped_sum(factors))
            else:
                out.update(rule.clipped_sum(factors[name]))
        self._active = []
        return out


def make_engine(model: nn.Module, loss_fn: LossFn, mode: str) -> VmapEngine | HookEngine:
    """The engine for ``grad_sample_mode`` (see ``ENGINES``)."""
    across, other = _shared_parameters(model)
    if mode == "vmap" or (mode == "auto" and other):
        return VmapEngine(model, loss_fn)
    if other or (across and mode != "auto"):
        what = "shares parameters between layers" if across else "shares or leaves parameters"
        raise UnsupportedModuleError(
            f"DPSGD: grad_sample_mode={mode!r} needs every parameter owned by exactly one layer; "
            f"this model {what}; use grad_sample_mode='auto' (it groups layers that share "
            f"parameters) or grad_sample_mode='vmap'"
        )
    return HookEngine(model, loss_fn, mode)
