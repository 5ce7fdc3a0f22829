r"""DP-SGD across processes with ``torch.distributed``: one mechanism, many ranks.

Data-parallel private training must be the *same* Gaussian mechanism as one process, or the
accountant's epsilon is wrong. :class:`DistributedDPSGD` makes it so:

* **Sampling.** Each rank holds a disjoint shard of the dataset (rank r of W gets examples
  r, r + W, r + 2W, ...) and Poisson-samples it at the global rate q. Every example then joins a
  logical batch with probability exactly q, whichever rank holds it: the union over ranks *is*
  Poisson sampling of the whole dataset at rate q, the rate the accountant sees. (Sampling the
  whole dataset on every rank at rate q would include each example with probability
  :math:`1 - (1-q)^W \approx Wq`, the over-count Opacus issue #444 describes.)
* **Clipping.** Each rank clips its own examples' per-sample gradients (any engine and clipping
  mode of :class:`DPSGD` except ``"adaptive"``, whose threshold update needs a global count).
* **Noise, drawn once.** Only rank ``noise_rank`` adds :math:`\mathcal N(0, \sigma^2 C^2 I)` to its
  clipped sum; the others add none. The sums are all-reduced, so every rank applies
  :math:`\frac{1}{qN}\big(\sum_{i \in B} \mathrm{clip}_C(g_i) + \mathcal N(0, \sigma^2 C^2 I)\big)`,
  exactly the single-process update with :math:`B` the union of the ranks' batches and N the
  global dataset size. Drawing the noise on one rank (rather than :math:`\mathcal N(0,
  \sigma^2 C^2 / W)` on each) keeps runs bit-comparable with one process and needs one
  generator; it trusts that rank with the noise, as the single-process mechanism trusts its
  process. With ``secure=True`` that rank draws from OS entropy.
* **Sensitivity.** Neighbouring datasets differ in one example, held by one rank; the all-reduced
  sum is the sum over the union of the ranks' batches, so it moves by that example's clipped
  gradient, of norm at most C (:math:`\sqrt{\sum_k C_k^2}` per layer): the sensitivity of the
  single-process mechanism, against noise of std :math:`\sigma C` drawn once, so the noise
  multiplier accounted is sigma.

Every rank must call :meth:`DistributedDPSGD.step` the same number of times (the loader from
:meth:`DistributedDPSGD.loader` yields the same number of logical batches everywhere).
"""

import sys
import typing
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from research_ext.core import (
    check_int,
    check_probability,
    format_message,
    make_generator,
)
from research_ext.privacy._dpsgd import DPSGD, DPSGDOptions, check_options, resolve_noise
from research_ext.privacy._per_sample import LossFn
from research_ext.privacy._sampling import PoissonLoader, poisson_loader
from research_ext.privacy.accounting import epsilon as _epsilon

if sys.version_info >= (3, 11):
    from typing import Unpack
elif typing.TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DistributedDPSGD"]

_FN = "DistributedDPSGD"


class _AllReduceOptimizer:
    """Sums every parameter's ``.grad`` over the process group, then steps the real optimizer."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], group: Any
    ) -> None:
        self.optimizer, self.params, self.group = optimizer, params, group

    def step(self) -> None:
        import torch.distributed as dist

        grads = [p.grad for p in self.params if p.grad is not None]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        for same in by_dtype.values():  # one collective per dtype, not one per parameter
            flat = torch.cat([g.reshape(-1) for g in same])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
            offset = 0
            for g in same:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(dict(state))


@typing.final
class DistributedDPSGD:
    r"""DP-SGD over the ranks of a ``torch.distributed`` process group (gloo on CPU, nccl on GPU).

    Each rank builds one on its replica of the model (parameters are broadcast from the group's
    rank 0 at construction) and steps on batches from :meth:`loader`. The update every rank
    applies is

    .. math:: \bar g = \frac{1}{qN}\Big(\sum_{r}\sum_{i\in B_r} \mathrm{clip}_C(g_i)
              + \mathcal N(0, \sigma^2 C^2 I)\Big),

    with :math:`B_r` rank r's Poisson sample of its shard at rate q and the noise drawn once, on
    ``noise_rank``; the module docstring explains why this is the single-process mechanism.
    :meth:`epsilon` accounts (sigma, q) per step with the global rate q.

    Args:
        model: this rank's replica (on this rank's device).
        optimizer: an optimizer over ``model``'s parameters.
        loss_fn: as for :class:`DPSGD`.
        process_group: the group to train over (default: the world).
        noise_rank: the rank (within the group) that draws the noise.
        **options: :class:`DPSGD`'s keywords (:class:`DPSGDOptions`), forwarded to this rank's
            :class:`DPSGD`, with these meanings here: ``sample_rate`` is the global Poisson
            rate q in (0, 1], each rank sampling its shard at q; ``dataset_size`` is N, the
            size of the *whole* dataset (all shards together); ``target_epsilon`` calibrates
            sigma identically on every rank (over ``epochs`` or ``steps``); ``clipping`` is
            ``"flat"`` or ``"per_layer"``; ``generator`` is the noise generator on
            ``noise_rank`` (other ranks seed their samplers from its initial seed and their
            rank; ``None``: OS-seeded); ``secure`` draws that rank's noise from OS entropy
            each step.

    Raises:
        RuntimeError: if ``torch.distributed`` is not initialized.
        ValueError, TypeError: as for :class:`DPSGD`, for ``clipping="adaptive"``, or a
            ``noise_rank`` outside the group.

    Example:
        >>> import tempfile, torch.distributed as dist
        >>> store = tempfile.NamedTemporaryFile(delete=False).name  # torchrun sets this up for you
        >>> dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
        >>> model = nn.Linear(4, 2)
        >>> dp = DistributedDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
        ...                       loss_fn=nn.CrossEntropyLoss(), max_grad_norm=1.0, delta=1e-5,
        ...                       sample_rate=0.25, dataset_size=64, noise_multiplier=1.0,
        ...                       generator=torch.Generator().manual_seed(0))
        >>> X, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> for batch in dp.loader((X, y)):
        ...     dp.step(batch)
        >>> dp.steps, dp.world_size
        (4, 1)
        >>> dist.destroy_process_group()

    References:
        Abadi et al., "Deep Learning with Differential Privacy", 2016. Opacus issue #444
        (sampling under distributed data parallelism).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        loss_fn: LossFn,
        process_group: Any = None,
        noise_rank: int = 0,
        **options: "Unpack[DPSGDOptions]",
    ) -> None:
        import torch.distributed as dist

        check_options(_FN, options)
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                f"{_FN}: torch.distributed is not initialized; call "
                "torch.distributed.init_process_group (e.g. under torchrun) first"
            )
        clipping = options.get("clipping", "flat")
        if clipping == "adaptive":
            raise ValueError(
                format_message(
                    _FN,
                    "clipping",
                    "'flat' or 'per_layer'",
                    clipping,
                    "adaptive clipping needs a global count",
                )
            )
        self.group = process_group
        self.rank = dist.get_rank(group=process_group)
        self.world_size = dist.get_world_size(group=process_group)
        self.noise_rank = check_int(
            _FN, "noise_rank", noise_rank, minimum=0, maximum=self.world_size - 1
        )
        self.accountant = options.get("accountant", "prv")
        self.noise_multiplier, planned_steps = self._resolve_noise(
            options.get("noise_multiplier"),
            options.get("target_epsilon"),
            options.get("epochs"),
            options.get("steps"),
            options["delta"],
            options["sample_rate"],
            self.accountant,
        )
        self._broadcast_model(model)
        params = [p for p in model.parameters() if p.requires_grad]
        base = make_generator(options.get("generator"))
        noisy = self.rank == self.noise_rank
        if noisy:
            local_generator = base
        else:  # no noise here; the generator only seeds this rank's sampler
            local_generator = make_generator(hash((base.initial_seed(), self.rank)) % 2**63)
        # This rank's mechanism: sigma already resolved (the plan is set below), noise here only.
        local: DPSGDOptions = {
            **options,
            "noise_multiplier": self.noise_multiplier if noisy else 0.0,
            "generator": local_generator,
            "secure": bool(options.get("secure", False)) and noisy,
        }
        # The calibration was resolved above, once for every rank; the plan is set below.
        local.pop("target_epsilon", None)
        local.pop("epochs", None)
        local.pop("steps", None)
        self.dpsgd = DPSGD(
            model,
            cast(torch.optim.Optimizer, _AllReduceOptimizer(optimizer, params, process_group)),
            loss_fn=loss_fn,
            **local,
        )
        self.model, self.sample_rate = model, self.dpsgd.sample_rate
        self.dataset_size = self.dpsgd.dataset_size
        self.delta = self.dpsgd.delta
        # Calibrated to a target: every rank refuses to step past the plan, as DPSGD does.
        self.dpsgd.planned_steps = planned_steps

    @staticmethod
    def _resolve_noise(
        noise_multiplier: float | None,
        target_epsilon: float | None,
        epochs: float | None,
        steps: int | None,
        delta: float,
        sample_rate: float,
        accountant: str,
    ) -> tuple[float, int | None]:
        # Checked here, before any collective call, so that every rank fails alike.
        check_probability(_FN, "delta", delta, allow_one=False)
        check_probability(_FN, "sample_rate", sample_rate)
        return resolve_noise(
            _FN, noise_multiplier, target_epsilon, epochs, steps, delta, sample_rate, accountant
        )

    def _broadcast_model(self, model: nn.Module) -> None:
        import torch.distributed as dist

        source = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=source, group=self.group)

    @property
    def steps(self) -> int:
        """Logical steps taken so far (the same on every rank)."""
        return self.dpsgd.steps

    def shard(
        self, dataset: Dataset[Any] | tuple[torch.Tensor, ...]
    ) -> Dataset[Any] | tuple[torch.Tensor, ...]:
        """This rank's disjoint part of the whole ``dataset``: examples rank, rank + W, ...

        Raises:
            ValueError: if ``len(dataset)`` is not the ``dataset_size`` given at construction.
        """
        size = len(dataset[0]) if isinstance(dataset, tuple) else len(dataset)  # type: ignore[arg-type]
        if size != self.dataset_size:
            raise ValueError(
                format_message(
                    f"{_FN}.shard",
                    "dataset",
                    f"the whole dataset of {self.dataset_size} examples",
                    f"<{size} examples>",
                )
            )
        if isinstance(dataset, tuple):
            return tuple(t[self.rank :: self.world_size] for t in dataset)
        return Subset(dataset, range(self.rank, size, self.world_size))

    def loader(
        self,
        dataset: Dataset[Any] | tuple[torch.Tensor, ...],
        *,
        max_physical_batch_size: int | None = None,
        steps: int | None = None,
    ) -> PoissonLoader:
        """Poisson batches at rate q from this rank's :meth:`shard` of the whole ``dataset``.

        The loader's RNG state is part of :meth:`state_dict`. Every rank's loader yields the
        same number of batches (``steps``, default ``round(1 / q)``).
        """
        shard = self.shard(dataset)
        loader = poisson_loader(
            shard,
            self.sample_rate,
            max_physical_batch_size=max_physical_batch_size,
            generator=self.dpsgd.sampler_generator,
            steps=steps if steps is not None else max(1, round(1 / self.sample_rate)),
        )
        return loader

    def step(self, batch: Any) -> None:
        """One logical step on this rank's batch; a collective call, made by every rank."""
        self.dpsgd.step(batch)

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far at ``delta`` (default: the run's), with the global rate q."""
        if self.steps == 0:
            return 0.0
        return _epsilon(
            self.noise_multiplier,
            self.sample_rate,
            self.steps,
            self.delta if delta is None else delta,
            accountant=self.accountant,
        )

    def state_dict(self) -> dict[str, Any]:
        """This rank's checkpoint (model, optimizer, its RNG states); save one per rank."""
        return {"rank": self.rank, "world_size": self.world_size, "dpsgd": self.dpsgd.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore this rank's :meth:`state_dict`.

        Raises:
            ValueError: if the checkpoint belongs to another rank or world size.
        """
        if (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            raise ValueError(
                format_message(
                    f"{_FN}.load_state_dict",
                    "state",
                    f"the checkpoint of rank {self.rank} of {self.world_size}",
                    f"<rank {state['rank']} of {state['world_size']}>",
                )
            )
        self.dpsgd.load_state_dict(state["dpsgd"])
