r"""DP-SGD in the researcher's own training loop: ``loss.backward()`` then ``optimizer.step()``.

Shape of the API, and why: a wrapped optimizer, :class:`DPOptimizer`. PyTorch training loops
already end every step with ``loss.backward(); optimizer.step(); optimizer.zero_grad()``, and
everything around them (learning-rate schedulers, gradient accumulation, callbacks, checkpoint
code) talks to the optimizer; Opacus made the same choice, so scripts written for it need no
new idiom. Replacing the optimizer is therefore the one change a script needs; the model stays
the user's module (hooks are added to it, its class and ``forward`` are untouched), so
``model(**batch)`` returning its own loss, auxiliary outputs and a scheduler all keep working.
A separate ``dp.backward(loss)`` would be one more call to forget, and a wrapped model would
change ``type(model)`` and ``state_dict`` keys.

How a step works: a forward pre-hook on the model installs the engine's layer hooks for the
duration of the user's forward (those of :class:`DPSGD`'s ``"auto"``, ``"ghost"`` and
``"materialized"`` modes), and tensor hooks on every captured layer output record the output
gradients during the user's own ``loss.backward()``: book-keeping needs that one backward.
The parameters of layers whose rules need only inputs and output gradients (Linear,
convolutions, embeddings, norms, attention) leave the graph for the duration of the forward
(``requires_grad`` off, outputs of first layers aliased to need a gradient), so that backward
costs what :meth:`DPSGD.step`'s does: no batch parameter gradient, which DP-SGD never uses
(``p.grad`` is left untouched by it, except on a step whose loss is checked, see below).
Per-sample norms and clipped sums of a micro-batch are computed when its backward has finished
(at ``optimizer.step()`` or at the next forward), so several forward/backward pairs before one
``step()`` are one logical step over their union (gradient accumulation). The norms of a layer
called once with one output (while a single forward is pending) are taken inside the backward,
as its output gradient arrives (its captured tensors checked for in-place changes then), so
that gradient and the layer's captured inputs are released once torch has used them, as in a
non-private step, instead of being held until ``step()``. The captured outputs themselves are
released when the forward returns, once their hooks are registered (only shapes are kept):
otherwise a norm layer's output, which torch frees after the next activation, would be held
through the backward. ``step()`` then runs the very code :meth:`DPSGD.step` ends with (noise
once, ``optimizer.step()``, the adaptive clip update, accounting), so both paths are one
implementation.

The loss must be a sum or a mean of per-example losses, declared by ``loss_reduction``
(``"mean"``, torch's default, or ``"sum"``); for ``"mean"``, the per-sample norms and clip
factors computed from the output gradients are scaled by the micro-batch size (on vectors of
one value per example, not on the gradients themselves). A second pass, invisible to the user,
is made where one-backward book-keeping cannot give per-example gradients: whole-model ``vmap``
(``grad_sample_mode="vmap"``, or ``"auto"`` on a model with a parameter used twice inside one
layer, or where no layer or module can split the step per example) and ``"auto"``'s per-layer
fallback re-run the forward on the inputs the model received, with the random state of the user's forward (same dropout masks),
differentiating :math:`\sum_k \langle y_k, \partial L / \partial y_k\rangle` over the model's
outputs :math:`y_k`, whose gradients the user's backward produced. That needs every path
from the parameters to the loss to go through the model's outputs, which is what
"per-example decomposable" requires anyway.

Checked: on the first logical step (``check_loss="first"``, or every step with ``"always"``),
the batch gradient the user's backward left in ``p.grad`` must equal the sum of the captured
per-example gradients; a term whose gradient bypasses the layers (a parameter regulariser such
as ``lam * w.pow(2).sum()``) is refused with :class:`NonDecomposableLossError`. Not detectable
this way, since the captured gradients come from the same backward: batch-level terms computed
from the outputs (e.g. a contrastive loss over the batch), and a ``loss_reduction`` that does
not match the loss (per-example gradients off by the batch size). Both are the user's
responsibility, as in Opacus.

A layer whose rule fails inside the user's forward (attention or recurrent layers called in a
way the rule's re-implementation does not cover, e.g. attention on unbatched sequences) runs
its own forward there, so the user's forward completes; at ``step()`` ``"auto"`` then falls
back as :meth:`DPSGD.step` does (the layer merged into its parent) through the second pass
above, and other modes raise, naming the layer.

Not supported on this path: activation checkpointing inside the model (recomputed outputs are
not the captured ones).
"""

import math
import os
import sys
import typing
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from research_ext.core import check_one_of, tree_leaves
from research_ext.errors import ResearchExtError
from research_ext.privacy._capture import Records
from research_ext.privacy._checkpoint import read_checkpoint, write_checkpoint
from research_ext.privacy._dpsgd import DPSGD, DPSGDOptions, check_options
from research_ext.privacy._engines import (
    HookEngine,
    LayerFailureError,
    VmapEngine,
    WholeModelFallbackError,
)
from research_ext.privacy._replay import (
    OutputGradLoss,
    PendingForward,
    bound_inputs,
    rng_state,
    set_rng_state,
)
from research_ext.privacy._sampling import PoissonLoader
from research_ext.privacy._validate import fingerprint

if sys.version_info >= (3, 11):
    from typing import Unpack
elif typing.TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DPOptimizer", "NonDecomposableLossError"]

#: DistributedDPSGD's own keywords, taken with ``distributed=True``.
_DISTRIBUTED = ("process_group", "noise_rank")


class DPOptimizerOptions(DPSGDOptions, total=False):
    """:class:`DPSGDOptions` and, with ``distributed=True``, :class:`DistributedDPSGD`'s own."""

    process_group: Any
    noise_rank: int


LOSS_REDUCTIONS = ("mean", "sum")
CHECK_LOSS = ("first", "always", "never")


class NonDecomposableLossError(ResearchExtError, ValueError):
    """The loss's batch gradient is not the sum of per-example gradients through the layers."""


def _batch_sum(
    engine: HookEngine | VmapEngine, sq: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Unclipped sum of the per-sample gradients of the engine's last run, leaving it intact."""
    if isinstance(engine, VmapEngine):
        return {n: g.sum(0) for n, g in engine._grads.items()}
    active = list(engine._active)
    caches = [dict(rule._cache) for _, rule in active]
    out = engine.clipped_sum({k: torch.ones_like(v) for k, v in sq.items()})
    for (_, rule), cache in zip(active, caches, strict=True):
        rule._cache = cache
    engine._active = active
    return out


class DPOptimizer(torch.optim.Optimizer):
    r"""An optimizer whose ``step()`` is a DP-SGD step on the user's own ``loss.backward()``.

    Wraps ``optimizer`` and hooks ``model``; the training loop stays the user's::

        for batch in opt.loader(dataset):
            loss = loss_fn(model(x), y)       # or model(**batch) returning the loss
            loss.backward()                   # hooks record what per-sample norms need
            opt.step()                        # clip, noise once, optimizer step, accounting
            opt.zero_grad()

    Several ``loss.backward()`` calls (micro-batches) before one ``step()`` form one logical
    step. The update equals :meth:`DPSGD.step` on the same batch under the same seed, in every
    ``grad_sample_mode`` and clipping mode (see the module docstring for how the engine
    works and what it checks). ``state_dict`` / ``save`` / ``load`` are those of the
    underlying :class:`DPSGD` (model, optimizer, accountant, RNG states: exact resume).

    Args:
        model: the model the loop calls (its ``forward`` may return the loss).
        optimizer: any ``torch.optim`` optimizer over the model's parameters.
        loss_reduction: ``"mean"`` (default) if the loss given to ``backward`` is the mean of
            the micro-batch's per-example losses, ``"sum"`` if it is their sum.
        check_loss: compare the user's batch gradient with the sum of per-example gradients on
            the ``"first"`` logical step (default), on ``"always"``, or ``"never"``.
        distributed: one process of a data-parallel run (``torch.distributed`` initialized):
            the step is :class:`DistributedDPSGD`'s (this rank's clipped sum, noise drawn on
            ``noise_rank`` only, all-reduce, the global rate accounted). Do not wrap the
            model in ``DistributedDataParallel``: the noisy sums are what is all-reduced.
        **dpsgd: every keyword of :class:`DPSGD` except ``loss_fn`` (:class:`DPSGDOptions`:
            ``max_grad_norm``, ``delta``, ``sample_rate``, ``dataset_size``,
            ``noise_multiplier`` or ``target_epsilon``, ``clipping``, ``grad_sample_mode``,
            ``generator``, ...); with ``distributed``, also :class:`DistributedDPSGD`'s
            ``process_group`` and ``noise_rank``.

    Raises:
        NonDecomposableLossError: from ``step()``, when the check finds a loss term whose
            gradient bypasses the layers.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> X, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> model = nn.Linear(4, 2)
        >>> opt = DPOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.5),
        ...                   max_grad_norm=1.0, delta=1e-5, sample_rate=0.25,
        ...                   dataset_size=64, noise_multiplier=1.0)
        >>> for xb, yb in opt.loader((X, y)):
        ...     nn.functional.cross_entropy(model(xb), yb).backward()
        ...     opt.step()
        ...     opt.zero_grad()
        >>> opt.steps
        4
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        loss_reduction: str = "mean",
        check_loss: str = "first",
        distributed: bool = False,
        **dpsgd: "Unpack[DPOptimizerOptions]",
    ) -> None:
        # The wrapped optimizer owns parameters and state (as in Opacus): no super().__init__.
        fn = "DPOptimizer"
        if "loss_fn" in dpsgd:
            raise TypeError(
                f"{fn}: `loss_fn` must not be given: the loop computes the loss and calls "
                f"loss.backward(); declare its reduction with loss_reduction='mean' or 'sum'"
            )
        self.loss_reduction = check_one_of(fn, "loss_reduction", loss_reduction, LOSS_REDUCTIONS)
        self.check_loss = check_one_of(fn, "check_loss", check_loss, CHECK_LOSS)
        check_options(fn, dpsgd, extra=_DISTRIBUTED if distributed else ())
        self.original_optimizer = optimizer
        self._owner: Any
        if distributed:
            from research_ext.privacy._distributed import DistributedDPSGD

            self._owner = DistributedDPSGD(model, optimizer, loss_fn=OutputGradLoss(), **dpsgd)
            self.dp = self._owner.dpsgd
        else:
            options = cast(DPSGDOptions, dpsgd)  # checked above: no distributed keyword
            self.dp = self._owner = DPSGD(model, optimizer, loss_fn=OutputGradLoss(), **options)
        self.model = model
        self._pending: list[PendingForward] = []
        self._open: tuple[PendingForward, Any] | None = None
        self._replaying = False
        self._checked = False
        self._new_step()
        self._handles = [
            model.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
            model.register_forward_hook(self._post_hook, with_kwargs=True, always_call=True),
        ]
        self.dp._fingerprint = fingerprint(model)  # our own hooks are not a change

    # -- the optimizer interface --------------------------------------------------------------

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups (schedulers change its learning rate)."""
        return self.original_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.original_optimizer.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        """The wrapped optimizer's state."""
        return self.original_optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        """The wrapped optimizer's defaults."""
        return self.original_optimizer.defaults

    def __repr__(self) -> str:
        return f"DPOptimizer({self.original_optimizer!r})"

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the parameters' gradients (the wrapped optimizer's ``zero_grad``)."""
        self.original_optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> Any:
        """One logical DP-SGD step over the micro-batches backpropagated since the last one.

        Returns:
            The closure's loss when a ``closure`` (forward and backward) is given, else None.

        Raises:
            PrivacyBudgetExceededError: as :meth:`DPSGD.step` (nothing is changed then).
            NonDecomposableLossError: when the loss check fails (nothing is changed then).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.dp._check_budget("DPOptimizer.step")
        self._flush(all_done=True)
        checked = self._micro > 0 and self._check_now()
        if checked:
            self._verify()
        total, unclipped = self._total, self._unclipped
        self._new_step()
        self.dp._finish(total, unclipped)
        self._checked = self._checked or checked
        return loss

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Not supported: DP-SGD's parameter set is fixed when it is built."""
        raise NotImplementedError(
            "DPOptimizer.add_param_group: parameters cannot be added to a private optimizer; "
            "build a new one"
        )

    def state_dict(self) -> dict[str, Any]:
        """:meth:`DPSGD.state_dict` (model, optimizer, accountant, RNG states); per rank."""
        return self._owner.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (see :meth:`DPSGD.load_state_dict`)."""
        self._pending, self._open = [], None
        self._new_step()
        self._owner.load_state_dict(state_dict)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state_dict` atomically with a content hash (see :meth:`DPSGD.save`)."""
        write_checkpoint(self.state_dict(), path)

    def load(self, path: str | os.PathLike[str]) -> None:
        """:meth:`DPSGD.load`."""
        self._pending, self._open = [], None
        self._new_step()
        self._owner.load_state_dict(read_checkpoint("DPOptimizer.load", path))

    # -- DP-SGD's views -----------------------------------------------------------------------

    def loader(
        self, dataset: Any, *, max_physical_batch_size: int | None = None, steps: int | None = None
    ) -> PoissonLoader:
        """Poisson batches at this run's rate, checkpointed (this rank's shard if distributed)."""
        return self._owner.loader(
            dataset, max_physical_batch_size=max_physical_batch_size, steps=steps
        )

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far (see :meth:`DPSGD.epsilon`)."""
        return float(self._owner.epsilon(delta))

    @property
    def steps(self) -> int:
        """Logical steps taken so far."""
        return self.dp.steps

    @property
    def plan(self) -> dict[str, str]:
        """How each layer's per-sample gradients are computed (see :attr:`DPSGD.plan`)."""
        return self.dp.plan

    @property
    def noise_multiplier(self) -> float:
        """The noise multiplier sigma (given or calibrated)."""
        return float(self._owner.noise_multiplier)

    @property
    def max_grad_norm(self) -> float:
        """The current clipping norm."""
        return self.dp.max_grad_norm

    @property
    def expected_batch_size(self) -> float:
        """qN, what the noisy clipped sum is divided by."""
        return self.dp.expected_batch_size

    def detach(self) -> None:
        """Remove this optimizer's hooks from the model (the model trains non-privately then)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- hooks ---------------------------------------------------------------------------------

    def _new_step(self) -> None:
        self._total: dict[str, torch.Tensor] = {}
        self._unclipped: torch.Tensor | None = None
        self._batch_total: dict[str, torch.Tensor] = {}
        self._micro = 0

    def _check_now(self) -> bool:
        return self.check_loss == "always" or (self.check_loss == "first" and not self._checked)

    def _pre_hook(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if self._replaying or not torch.is_grad_enabled():
            return
        self._flush(all_done=False)
        if self._micro == 0 and not self._pending:
            self.dp._check_model()  # may rebuild the engine; nothing is captured yet
        engine = self.dp.engine
        records: dict[str, Records] = {}
        # Unless this step compares the user's batch gradient with ours, the user's backward
        # computes no parameter gradient: the rules build the clipped sum from what they capture.
        undo = (
            engine.capture(records, detach_parameters=not self._check_now(), keep_going=True)
            if isinstance(engine, HookEngine)
            else None
        )
        pending = PendingForward(args, kwargs, records, rng_state(module))
        self._open = (pending, undo)

    def _post_hook(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if self._open is None or self._replaying:
            return
        pending, undo = self._open
        self._open = None
        if undo is not None:
            undo()
        if output is None:
            return  # the forward raised
        pending.args, pending.kwargs = args, kwargs
        # The output gradients are stored as they come (those of a mean loss are the
        # per-example ones over the batch size: _process scales norms and clip factors).
        for name, calls in pending.records.items():
            for i, (_, _, outs) in enumerate(calls):
                slot: list[torch.Tensor | None] = [None] * len(outs)
                pending.by_call[(name, i)] = slot
                # A layer called once with one output is complete when that gradient arrives.
                single = name if len(calls) == 1 and len(outs) == 1 else None
                for j, out in enumerate(outs):
                    if out.requires_grad:
                        out.register_hook(self._store(pending, slot, j, single))
            calls.release_outputs()  # only their gradients are needed from here on
        leaves = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
        pending.root = [None] * len(leaves)
        for k, t in enumerate(leaves):
            if t.requires_grad:
                t.register_hook(self._store(pending, pending.root, k))
        self._pending.append(pending)

    def _store(
        self,
        pending: PendingForward,
        slot: list[torch.Tensor | None],
        j: int,
        single: str | None = None,
    ) -> Any:
        def hook(grad: torch.Tensor) -> None:
            slot[j] = grad
            pending.arrived()
            engine = self.dp.engine
            # The layer's norms now, inside the backward, so its output gradient is released
            # as soon as torch's backward has used it, as in a non-private step. Only while
            # this forward is the only one pending: the rules hold one micro-batch at a time.
            if (
                single is not None
                and isinstance(engine, HookEngine)
                and len(self._pending) == 1
                and self._pending[0] is pending
            ):
                calls = pending.records[single]
                # Checked now (the forward is over; later changes cannot reach these norms).
                sq = (
                    None
                    if calls.modified()
                    else engine.early_norms(single, calls[0], grad, pending.batch_size)
                )
                if sq is not None:
                    pending.early[single] = sq
                    slot[j] = None
                    pending.records[single] = Records()  # its captured tensors are released too

        return hook

    # -- per-sample work -----------------------------------------------------------------------

    def _flush(self, all_done: bool) -> None:
        """Clip the micro-batches whose backward has finished; drop forwards never reached."""
        keep = []
        for pending in self._pending:
            if pending.done:
                self._process(pending)
            elif not all_done:
                keep.append(pending)
        self._pending = keep

    def _process(self, pending: PendingForward) -> None:
        if pending.batch_size == 0:
            return  # an empty Poisson batch adds nothing (its mean loss is NaN)
        engine = self.dp.engine
        scale = float(pending.batch_size) if self.loss_reduction == "mean" else 1.0
        sq = None
        if isinstance(engine, HookEngine):
            try:
                engine.check_unmodified(pending.records)
                sq = engine.norms(
                    pending.records, pending.by_call, pending.batch_size, pending.early
                )
                grad_scale = scale  # from the gradients of the loss, not of the sum
            except LayerFailureError:
                sq = None  # the engine's own run falls back (auto) or names the layer
        if sq is None:
            sq = self._replay(pending)
            engine = self.dp.engine  # whole-model vmap if "auto" had to end there
            grad_scale = 1.0
        pending.records, pending.by_call, pending.early = {}, {}, {}
        if self._check_now():
            with torch.no_grad():  # compared with p.grad only: no graph to keep
                batch_sums = _batch_sum(engine, sq)
            for name, s in batch_sums.items():
                s = s * (grad_scale / scale) if grad_scale != scale else s
                self._batch_total[name] = (
                    self._batch_total[name] + s if name in self._batch_total else s
                )
        self._unclipped = self.dp._clip_into(sq, self._total, self._unclipped, grad_scale)
        self._micro += 1

    def _replay(self, pending: PendingForward) -> dict[str, torch.Tensor]:
        """The engine's own forward and backward on the captured inputs (see module docstring).

        Where ``"auto"``'s per-layer fallback reaches the model itself and fails there too, the
        run switches to whole-model vmap (as :meth:`DPSGD.step` does) and replays again.
        """
        grads = [g for g in pending.root if g is not None]
        indices = [k for k, g in enumerate(pending.root) if g is not None]
        scale = float(pending.batch_size) if self.loss_reduction == "mean" else 1.0
        inputs = bound_inputs(self.model, pending.args, pending.kwargs)
        now = rng_state(self.model)
        self._replaying = True
        try:
            while True:
                engine = self.dp.engine
                whole = isinstance(engine, VmapEngine)
                targets = (grads, indices, scale, 1.0 if whole else scale)
                set_rng_state(pending.rng)
                try:
                    return engine.run((inputs, targets))
                except WholeModelFallbackError:
                    self.dp._to_whole_model()
        finally:
            self._replaying = False
            set_rng_state(now)

    @torch.no_grad()
    def _verify(self) -> None:
        diffs: dict[str, float] = {}
        size = 0.0
        for name, p in self.dp.params.items():
            user, ours = p.grad, self._batch_total.get(name)
            if user is None and ours is None:
                continue
            u = torch.zeros_like(p) if user is None else user
            o = torch.zeros_like(p) if ours is None else ours.to(p.dtype)
            diffs[name] = float((u - o).norm())
            size = max(size, float(u.norm()), float(o.norm()))
        # Relative to the largest parameter gradient: a parameter whose gradient is zero in
        # exact arithmetic (a bias before a normalisation) differs only by rounding.
        where = max(diffs, key=lambda k: diffs[k], default="")
        worst = diffs.get(where, 0.0) / max(size, 1e-30)
        dtype = next(iter(self.dp.params.values())).dtype if self.dp.params else torch.float64
        tol = 1e-6 if dtype == torch.float64 else 1e-3
        if worst > tol or math.isnan(worst):
            raise NonDecomposableLossError(
                f"DPOptimizer.step: the batch gradient of the loss is not the sum of the "
                f"per-example gradients through the model's layers (parameter `{where}`, "
                f"difference {worst:.3g} relative to the largest gradient); a loss term whose "
                f"gradient bypasses the layers (e.g. a parameter regulariser: use the "
                f"optimizer's weight_decay) cannot be privatised per example; or gradients "
                f"were left from an earlier step (call zero_grad() after step())"
            )
