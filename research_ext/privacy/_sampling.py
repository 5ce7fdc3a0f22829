"""Poisson sampling: each example joins each logical batch independently with probability q."""

import typing
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset, default_collate

from research_ext.core import check_int, check_probability, make_generator, tree_map

__all__ = ["PoissonLoader", "poisson_loader", "steps_per_epoch"]

#: ``(inputs, targets)``, or a dict of named tensors for mapping datasets.
Batch = Any


def steps_per_epoch(sample_rate: float) -> int:
    """Logical steps in one expected pass over the data: round(1 / q), at least 1."""
    return max(1, round(1 / sample_rate))


@typing.final
class PoissonLoader:
    """Iterable of logical batches drawn by Poisson sampling (see :func:`poisson_loader`)."""

    def __init__(
        self,
        dataset: Dataset[Any] | tuple[torch.Tensor, ...] | Mapping[str, torch.Tensor],
        sample_rate: float,
        *,
        max_physical_batch_size: int | None = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
    ) -> None:
        fn = "poisson_loader"
        self.sample_rate = float(check_probability(fn, "sample_rate", sample_rate))
        if max_physical_batch_size is not None:
            check_int(fn, "max_physical_batch_size", max_physical_batch_size, minimum=1)
        self.columns: dict[str, torch.Tensor] | None = None
        if isinstance(dataset, Mapping):
            self.columns = dict(dataset)
            sizes = {k: len(v) for k, v in self.columns.items()}
            if len(set(sizes.values())) != 1:
                raise ValueError(
                    f"{fn}: a mapping `dataset` must hold tensors of one length, got lengths "
                    f"{sizes}"
                )
            dataset = TensorDataset(*self.columns.values())
        elif isinstance(dataset, tuple):
            dataset = TensorDataset(*dataset)
        self.dataset = dataset
        self.size = len(dataset)  # type: ignore[arg-type]
        check_int(fn, "len(dataset)", self.size, minimum=1)
        self.max_physical_batch_size = max_physical_batch_size
        self.generator = make_generator(generator)
        self.steps = (
            steps_per_epoch(self.sample_rate)
            if steps is None
            else check_int(fn, "steps", steps, minimum=1)
        )

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch | list[Batch]]:
        for _ in range(self.steps):
            yield self.draw()

    def draw(self) -> Batch | list[Batch]:
        """Draw one logical batch (a list of physical micro-batches if a maximum is set)."""
        mask = (
            torch.rand(self.size, generator=self.generator, device=self.generator.device)
            < self.sample_rate
        )
        indices = mask.nonzero().reshape(-1).cpu()
        if self.max_physical_batch_size is None:
            return self._collate(indices)
        chunks = torch.split(indices, self.max_physical_batch_size) or (indices,)
        return [self._collate(chunk) for chunk in chunks]

    def _collate(self, indices: torch.Tensor) -> Batch:
        if self.columns is not None:
            return {k: v[indices] for k, v in self.columns.items()}
        if isinstance(self.dataset, TensorDataset):
            collated: Any = tuple(t[indices] for t in self.dataset.tensors)
        elif len(indices) == 0:
            # An empty batch keeps the examples' shapes and dtypes, with batch size 0.
            example = default_collate([self.dataset[0]])
            collated = tree_map(lambda t: t[:0], example)
        else:
            collated = default_collate([self.dataset[int(i)] for i in indices])
        if isinstance(collated, Mapping):  # a dataset of dicts gives dict batches
            return dict(collated)
        tensors = tuple(collated)
        if len(tensors) != 2:
            return tuple(tensors[:-1]), tensors[-1]
        return tensors[0], tensors[1]

    def state_dict(self) -> dict[str, Any]:
        """The sampler's RNG state."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the RNG state saved by :meth:`state_dict`."""
        self.generator.set_state(state["generator"])


def poisson_loader(
    dataset: Dataset[Any] | tuple[torch.Tensor, ...] | Mapping[str, torch.Tensor],
    sample_rate: float,
    *,
    max_physical_batch_size: int | None = None,
    generator: torch.Generator | None = None,
    steps: int | None = None,
) -> PoissonLoader:
    r"""Logical batches where every example is included independently with probability q.

    Each logical batch has a Binomial(N, q) size, possibly 0 (an empty batch keeps the
    examples' trailing shapes), which is what the privacy analysis of DP-SGD assumes; its
    expected size q N is what :class:`DPSGD` divides by. A batch is drawn from ``generator`` when
    the iterator reaches it, so restoring the generator's state resumes the sequence exactly.
    With ``max_physical_batch_size`` each logical batch comes as a list of micro-batches of at
    most that size, to bound memory; :meth:`DPSGD.step` takes the list and still adds noise once.

    Args:
        dataset: a ``Dataset`` returning ``(input, target)`` pairs or dicts of named tensors (a
            ``TensorDataset`` is indexed in one call), a tuple of tensors ``(X, y)`` sharing
            their first dim N, or a mapping of named tensors sharing their first dim N (batches
            are then dicts, for :meth:`DPSGD.step`'s mapping batches).
        sample_rate: q in (0, 1].
        max_physical_batch_size: split each logical batch into micro-batches of at most this size.
        generator: the ``torch.Generator`` to sample with (default: OS-seeded).
        steps: logical batches per pass (default: round(1 / q), one expected epoch).

    Returns:
        A :class:`PoissonLoader`: iterate for ``(inputs, targets)`` pairs or dicts (or lists);
        ``len`` gives ``steps``; ``state_dict`` / ``load_state_dict`` carry the RNG state.

    Raises:
        ValueError, TypeError: if ``sample_rate`` is outside (0, 1] or a size is not a positive int.

    Example:
        >>> X, y = torch.randn(1000, 3), torch.zeros(1000)
        >>> loader = poisson_loader((X, y), 0.1, generator=torch.Generator().manual_seed(0))
        >>> len(loader), [int(xb.shape[0]) for xb, _ in loader][:3]
        (10, [100, 102, 105])

    References:
        Abadi et al., "Deep Learning with Differential Privacy", 2016 (sampling for the moments
        accountant); Mironov et al., "Rényi Differential Privacy of the Sampled Gaussian
        Mechanism", 2019.
    """
    return PoissonLoader(
        dataset,
        sample_rate,
        max_physical_batch_size=max_physical_batch_size,
        generator=generator,
        steps=steps,
    )
