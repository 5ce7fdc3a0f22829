"""``PrivacyEngine``: Opacus's entry point, so an Opacus 1.5/1.6 script runs by changing its import.

``make_private`` / ``make_private_with_epsilon`` take Opacus's arguments and return
``(module, optimizer, data_loader)`` (``(module, optimizer, criterion, data_loader)`` for
``grad_sample_mode="ghost"``, as Opacus does) for the usual loop: ``loss.backward();
optimizer.step(); optimizer.zero_grad()``. The optimizer is a :class:`DPOptimizer`; the module
is the user's own (hooked, not wrapped: ``type(model)`` and ``state_dict`` keys are unchanged);
the data loader is a ``torch.utils.data.DataLoader`` over the same dataset, ``collate_fn`` and
workers, whose batch sampler draws Poisson batches at ``q = 1 / len(data_loader)`` from the
run's checkpointed sampler generator (``len(data_loader)`` batches an epoch, as Opacus).

Mapped: ``grad_sample_mode`` "hooks" and "ew" (per-sample gradients from hooks) -> "auto" and
"materialized", "functorch" -> "vmap", "ghost" -> "ghost" (our own names are accepted too);
``secure_mode`` -> ``secure``; ``noise_generator`` -> ``generator``; ``clipping="adaptive"``'s
``target_unclipped_quantile``, ``clipbound_learning_rate`` and ``unclipped_num_std``.
Differences: the noisy sum is divided by qN (Opacus: ``int(qN)``); ``clipping="per_layer"``
clips each layer (module) with a float C (split as C / sqrt(K)) or a mapping layer -> C_k,
where Opacus clips each parameter tensor with a list of norms (refused, naming it);
``make_private`` needs no delta (``get_epsilon(delta)`` names it; 1e-5 is only the default of
``optimizer.epsilon()``). Arguments without an equivalent raise ``TypeError`` naming them.
"""

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, default_collate

from research_ext.core import tree_map
from research_ext.privacy._own_loop import DPOptimizer

__all__ = ["PrivacyEngine"]

#: Opacus's grad_sample_mode names -> ours (ours map to themselves).
GRAD_SAMPLE_MODES = {
    "hooks": "auto",
    "ew": "materialized",
    "functorch": "vmap",
    "ghost": "ghost",
    "auto": "auto",
    "materialized": "materialized",
    "vmap": "vmap",
}
_ADAPTIVE = {
    "target_unclipped_quantile": "adaptive_quantile",
    "clipbound_learning_rate": "adaptive_lr",
    "unclipped_num_std": "adaptive_count_noise",
}
_IGNORED = ("epsilon_tolerance",)  # our calibration is tighter (within 0.5 % of the minimum)


class _PoissonBatchSampler(Sampler[list[int]]):
    """Index batches with each example in independently with probability q."""

    def __init__(self, size: int, sample_rate: float, steps: int, generator: torch.Generator):
        self.size, self.sample_rate, self.steps, self.generator = (
            size,
            sample_rate,
            steps,
            generator,
        )

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            mask = torch.rand(self.size, generator=self.generator) < self.sample_rate
            yield mask.nonzero().reshape(-1).tolist()


class _EmptySafeCollate:
    """The loader's ``collate_fn``; an empty batch keeps one example's shapes with size 0."""

    def __init__(self, collate: Any, dataset: Any) -> None:
        self.collate, self.dataset = collate, dataset

    def __call__(self, samples: list[Any]) -> Any:
        if samples:
            return self.collate(samples)
        example = self.collate([self.dataset[0]])
        return tree_map(lambda t: t[:0] if isinstance(t, torch.Tensor) else t, example)


class PrivacyEngine:
    """Opacus's ``PrivacyEngine`` over :class:`DPOptimizer` (see the module docstring).

    Args:
        accountant: ``"prv"`` (default, as Opacus), ``"rdp"`` or ``"pld"``; Opacus's ``"gdp"``
            has no equivalent.
        secure_mode: draw noise from OS-seeded generators (``DPSGD(secure=True)``).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> _ = torch.manual_seed(0)
        >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
        >>> model = nn.Linear(4, 2)
        >>> engine = PrivacyEngine()
        >>> model, optimizer, loader = engine.make_private(
        ...     module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        ...     data_loader=DataLoader(data, batch_size=16), noise_multiplier=1.0,
        ...     max_grad_norm=1.0)
        >>> for x, y in loader:
        ...     optimizer.zero_grad()
        ...     nn.functional.cross_entropy(model(x), y).backward()
        ...     optimizer.step()
        >>> len(loader), engine.get_epsilon(1e-5) > 0
        (4, True)
    """

    def __init__(self, *, accountant: str = "prv", secure_mode: bool = False) -> None:
        if accountant not in ("prv", "rdp", "pld"):
            raise ValueError(
                f"PrivacyEngine: `accountant` must be one of 'prv', 'rdp', 'pld', got "
                f"accountant={accountant!r}"
                + ("; Opacus's 'gdp' has no equivalent here" if accountant == "gdp" else "")
            )
        self.accountant_name, self.secure_mode = accountant, bool(secure_mode)
        self.optimizer: DPOptimizer | None = None

    def make_private(
        self,
        *,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: DataLoader[Any],
        noise_multiplier: float,
        max_grad_norm: float | Mapping[str, float],
        criterion: Any = None,
        batch_first: bool = True,
        loss_reduction: str = "mean",
        poisson_sampling: bool = True,
        clipping: str = "flat",
        noise_generator: torch.Generator | None = None,
        grad_sample_mode: str = "hooks",
        wrap_model: bool = True,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """Make ``module``, ``optimizer`` and ``data_loader`` private (Opacus's signature).

        Returns:
            ``(module, optimizer, data_loader)``, or ``(module, optimizer, criterion,
            data_loader)`` for ``grad_sample_mode="ghost"`` (``criterion`` unchanged: a plain
            ``loss.backward()`` is all the hooks need).

        Raises:
            TypeError: for an Opacus argument without an equivalent (named in the message).
            ValueError: for values without an equivalent (``batch_first=False``, a list of
                per-parameter norms, an unknown ``grad_sample_mode``).
        """
        return self._make(
            module=module,
            optimizer=optimizer,
            data_loader=data_loader,
            criterion=criterion,
            max_grad_norm=max_grad_norm,
            batch_first=batch_first,
            loss_reduction=loss_reduction,
            poisson_sampling=poisson_sampling,
            clipping=clipping,
            noise_generator=noise_generator,
            grad_sample_mode=grad_sample_mode,
            kwargs=kwargs,
            noise={"noise_multiplier": noise_multiplier, "delta": 1e-5},
        )

    def make_private_with_epsilon(
        self,
        *,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: DataLoader[Any],
        target_epsilon: float,
        target_delta: float,
        epochs: int,
        max_grad_norm: float | Mapping[str, float],
        criterion: Any = None,
        batch_first: bool = True,
        loss_reduction: str = "mean",
        poisson_sampling: bool = True,
        clipping: str = "flat",
        noise_generator: torch.Generator | None = None,
        grad_sample_mode: str = "hooks",
        wrap_model: bool = True,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """As :meth:`make_private`, with sigma calibrated to spend ``target_epsilon``.

        The plan is ``epochs * len(data_loader)`` steps (Opacus's); steps past it raise
        ``PrivacyBudgetExceededError``.
        """
        return self._make(
            module=module,
            optimizer=optimizer,
            data_loader=data_loader,
            criterion=criterion,
            max_grad_norm=max_grad_norm,
            batch_first=batch_first,
            loss_reduction=loss_reduction,
            poisson_sampling=poisson_sampling,
            clipping=clipping,
            noise_generator=noise_generator,
            grad_sample_mode=grad_sample_mode,
            kwargs=kwargs,
            noise={"target_epsilon": target_epsilon, "delta": target_delta, "epochs": epochs},
        )

    def get_epsilon(self, delta: float) -> float:
        """Epsilon spent so far at ``delta`` (0 before any step)."""
        return 0.0 if self.optimizer is None else self.optimizer.epsilon(delta)

    @property
    def noise_multiplier(self) -> float | None:
        """The noise multiplier in use (calibrated by ``make_private_with_epsilon``)."""
        return None if self.optimizer is None else self.optimizer.noise_multiplier

    def _make(
        self,
        *,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: DataLoader[Any],
        criterion: Any,
        max_grad_norm: Any,
        batch_first: bool,
        loss_reduction: str,
        poisson_sampling: bool,
        clipping: str,
        noise_generator: torch.Generator | None,
        grad_sample_mode: str,
        kwargs: dict[str, Any],
        noise: dict[str, Any],
    ) -> tuple[Any, ...]:
        fn = "PrivacyEngine.make_private"
        if self.optimizer is not None:
            raise RuntimeError(f"{fn}: this engine already made a model private; use a new one")
        extra = _extra_kwargs(fn, kwargs, clipping)
        if not batch_first:
            raise ValueError(
                f"{fn}: `batch_first` must be True (per-sample gradients need batch-first "
                f"inputs), got batch_first=False"
            )
        if isinstance(max_grad_norm, Sequence):
            raise ValueError(
                f"{fn}: `max_grad_norm` must be a float or a mapping layer -> norm, got a list: "
                f"Opacus's per-parameter norms have no equivalent; clipping='per_layer' clips "
                f"each layer (module) here"
            )
        if grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(
                f"{fn}: `grad_sample_mode` must be one of {sorted(GRAD_SAMPLE_MODES)}, got "
                f"grad_sample_mode={grad_sample_mode!r}"
            )
        owned = {id(p) for p in module.parameters()}
        if any(id(p) not in owned for g in optimizer.param_groups for p in g["params"]):
            raise ValueError(f"{fn}: `optimizer` must optimize the parameters of `module`")
        steps = len(data_loader)
        dataset = data_loader.dataset
        size = len(dataset)  # type: ignore[arg-type]
        private = DPOptimizer(
            module,
            optimizer,
            loss_reduction=loss_reduction,
            max_grad_norm=max_grad_norm,
            sample_rate=1.0 / steps,
            dataset_size=size,
            accountant=self.accountant_name,
            clipping=clipping,
            grad_sample_mode=GRAD_SAMPLE_MODES[grad_sample_mode],
            generator=noise_generator,
            secure=self.secure_mode,
            **noise,
            **extra,
        )
        self.optimizer = private
        loader = data_loader
        if poisson_sampling:
            loader = DataLoader(
                dataset,
                batch_sampler=_PoissonBatchSampler(
                    size, 1.0 / steps, steps, private.dp.sampler_generator
                ),
                collate_fn=_EmptySafeCollate(data_loader.collate_fn or default_collate, dataset),
                num_workers=data_loader.num_workers,
                pin_memory=data_loader.pin_memory,
                worker_init_fn=data_loader.worker_init_fn,
            )
        if GRAD_SAMPLE_MODES[grad_sample_mode] == "ghost" and grad_sample_mode == "ghost":
            return module, private, criterion, loader
        return module, private, loader


def _extra_kwargs(fn: str, kwargs: dict[str, Any], clipping: str) -> dict[str, Any]:
    """Map Opacus's keyword extras; refuse those without an equivalent, by name."""
    out: dict[str, Any] = {}
    unknown = []
    for key, value in kwargs.items():
        if key in _IGNORED:
            continue
        if key in _ADAPTIVE and clipping == "adaptive":
            out[_ADAPTIVE[key]] = value
        else:
            unknown.append(key)
    if unknown:
        raise TypeError(
            f"{fn}: Opacus argument(s) {sorted(unknown)} have no equivalent in "
            f"research_ext.privacy.PrivacyEngine"
            + (
                " (adaptive clipping takes target_unclipped_quantile, "
                "clipbound_learning_rate and unclipped_num_std)"
                if clipping == "adaptive"
                else ""
            )
        )
    return out
