"""DP-SGD: clip per-sample gradients, add Gaussian noise once per logical step, account.

One home for DP-SGD's options: :class:`DPSGD` spells every keyword out (what users and IDEs
read), and :class:`DPSGDOptions`, a ``TypedDict`` of the same keywords, is what the classes
built on it take and forward as ``**options``: :class:`DistributedDPSGD`, :class:`DPOptimizer`
(and through it ``PrivacyEngine``). Why a ``TypedDict`` rather than a frozen dataclass: users
keep calling ``DPSGD(model, opt, loss_fn=..., max_grad_norm=..., ...)`` with no options object
to build, and ``**options: Unpack[DPSGDOptions]`` lets type checkers and IDEs check and complete
the forwarded keywords as if they were spelled out. A new option is added to :class:`DPSGD`'s
signature and to :class:`DPSGDOptions` (a test keeps the two equal); the wrappers forward it
unchanged. :func:`check_options` is the one runtime check of forwarded keywords.
``typing.Unpack`` is Python >= 3.11; on 3.10 the wrappers' annotation is a string that only
type checkers read (they take ``Unpack`` from ``typing_extensions``), so no new run-time
dependency is needed.
"""

import math
import os
import typing
from collections.abc import Mapping
from typing import Any, TypedDict

import torch
from torch import nn

from research_ext.core import (
    check_int,
    check_one_of,
    check_positive,
    check_probability,
    format_message,
    make_generator,
)
from research_ext.errors import (
    CheckpointMismatchError,
    PrivacyBudgetExceededError,
    UnsupportedModuleError,
)
from research_ext.privacy._checkpoint import read_checkpoint, write_checkpoint
from research_ext.privacy._clipping import (
    CLIPPINGS,
    COUNT_SENSITIVITY,
    centred_unclipped_count,
    clip_factors,
    layer_thresholds,
    sensitivity,
)
from research_ext.privacy._engines import (
    ENGINES,
    VmapEngine,
    WholeModelFallbackError,
    layer_groups,
    make_engine,
)
from research_ext.privacy._noise import add_gaussian_noise_, secure_generator
from research_ext.privacy._per_sample import LossFn, split_batch
from research_ext.privacy._sampling import PoissonLoader, poisson_loader, steps_per_epoch
from research_ext.privacy._validate import fingerprint, raise_if_invalid
from research_ext.privacy.accounting import PrivacyAccountant, noise_multiplier_for
from research_ext.privacy.accounting._epsilon import ACCOUNTANTS

__all__ = ["DPSGD", "DPSGDOptions", "check_options"]


class _RequiredOptions(TypedDict):
    max_grad_norm: float | Mapping[str, float]
    delta: float
    sample_rate: float
    dataset_size: int


class DPSGDOptions(_RequiredOptions, total=False):
    """:class:`DPSGD`'s keywords except ``loss_fn`` (see :class:`DPSGD` for their meaning)."""

    noise_multiplier: float | None
    target_epsilon: float | None
    epochs: float | None
    steps: int | None
    accountant: str
    clipping: str
    grad_sample_mode: str
    generator: torch.Generator | None
    secure: bool
    adaptive_quantile: float
    adaptive_lr: float
    adaptive_count_noise: float | None


def check_options(fn: str, options: Mapping[str, Any], extra: tuple[str, ...] = ()) -> None:
    """Raise ``TypeError`` for a keyword that is not a DP-SGD option (or in ``extra``).

    Also for a required option that is missing, so that a wrapper fails with its own name
    before it does any work (``torch.distributed`` collectives included).
    """
    known = DPSGDOptions.__required_keys__ | DPSGDOptions.__optional_keys__ | set(extra)
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"{fn}: got unexpected keyword argument(s) {unknown}; the options are "
            f"{sorted(known)} (see DPSGD)"
        )
    missing = sorted(DPSGDOptions.__required_keys__ - set(options))
    if missing:
        raise TypeError(f"{fn}: missing required keyword argument(s) {missing}")


def resolve_noise(
    fn: str,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    epochs: float | None,
    steps: int | None,
    delta: float,
    sample_rate: float,
    accountant: str,
) -> tuple[float, int | None]:
    """The noise multiplier given, or calibrated to ``target_epsilon``; and the planned steps."""
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError(
            f"{fn}: exactly one of `noise_multiplier` and `target_epsilon` must be given, got "
            f"noise_multiplier={noise_multiplier!r}, target_epsilon={target_epsilon!r}"
        )
    if noise_multiplier is not None:
        sigma = float(check_positive(fn, "noise_multiplier", noise_multiplier, allow_zero=True))
        return sigma, None
    target = float(check_positive(fn, "target_epsilon", target_epsilon))
    if (epochs is None) == (steps is None):
        raise ValueError(
            f"{fn}: with `target_epsilon`, exactly one of `epochs` and `steps` must be given, "
            f"got epochs={epochs!r}, steps={steps!r}"
        )
    if steps is None:
        check_positive(fn, "epochs", epochs)
        # The loader's epochs: round(1 / q) steps each, so the plan matches the training loop.
        steps = max(1, round(float(epochs) * steps_per_epoch(sample_rate)))  # type: ignore[arg-type]
    check_int(fn, "steps", steps, minimum=1)
    return noise_multiplier_for(target, delta, sample_rate, steps, accountant), steps


@typing.final
class DPSGD:
    r"""Differentially private SGD around any ``torch.optim`` optimizer.

    Each logical step on a Poisson-sampled batch B computes per-sample gradients, clips them
    (``clipping``), adds Gaussian noise once and hands the optimizer

    .. math:: \bar g = \frac{1}{qN}\Big(\sum_{i\in B} \mathrm{clip}_C(g_i)
              + \mathcal N(0, \sigma^2 C^2 I)\Big),

    dividing by the expected batch size qN the analysis assumes (not by |B|). The accountant
    records (sigma, q) per step; :meth:`epsilon` reports the spend.

    Clipped sums come from an engine chosen by ``grad_sample_mode``: ``"auto"`` (one forward and
    one backward with hooks; per layer, ghost norms or materialized per-sample gradients,
    whichever the cost model finds cheaper; norm layers materialized, other layers by per-layer
    ``vmap``; layers that share a parameter (tied weights) as one group: a ghost norm with the
    cross terms for a table shared by embeddings and linear layers, else per-layer ``vmap`` with
    their per-sample gradients added; whole-model ``vmap`` when a parameter is used twice inside
    one layer or by none, or when no module can split a step), ``"ghost"``, ``"materialized"``,
    or ``"vmap"`` (``torch.func`` over the whole model). All give the same clipped sum.

    Clipping modes: ``"flat"`` (one norm over all parameters), ``"per_layer"`` (a norm per layer
    with thresholds C/sqrt(K), or a mapping layer -> C_k; noise scales with sqrt(sum C_k^2)),
    ``"adaptive"`` (Andrew et al. 2021: C tracks the ``adaptive_quantile`` of per-sample norms by
    a geometric update driven by a noised count). Each step then releases two Gaussian queries:
    the clipped sum (sensitivity C, noise :math:`\sigma_g C`) and the centred count
    :math:`\sum_{i\in B}(1[\lVert g_i\rVert \le C] - 1/2)` (every example contributes
    :math:`\pm 1/2`, so sensitivity 1/2, noise :math:`\sigma_b`: multiplier :math:`2\sigma_b`).
    Gaussian mechanisms compose like one with :math:`\sigma^{-2} = \sigma_g^{-2} +
    (2\sigma_b)^{-2}`, so the gradient noise is raised to
    :math:`\sigma_g = (\sigma^{-2} - (2\sigma_b)^{-2})^{-1/2}` and the pair costs exactly what
    noise multiplier sigma costs, which is what is accounted.

    The keywords after ``loss_fn`` are :class:`DPSGDOptions`, which :class:`DistributedDPSGD`
    and :class:`DPOptimizer` take and forward unchanged.

    Args:
        model: the model (validated; BatchNorm and the like raise ``UnsupportedModuleError``).
        optimizer: any optimizer over the model's parameters; it sees ``p.grad`` = the noisy mean.
        loss_fn: ``loss_fn(outputs, targets)``: per-example losses ``(batch,)`` or a scalar mean
            over the batch (torch's default reduction; ``reduction="sum"`` is honoured). For a
            mapping batch, ``targets`` is the whole batch (targets inside it).
        max_grad_norm: C (> 0); for ``"per_layer"`` also a mapping layer -> C_k.
        delta: target delta in (0, 1).
        sample_rate: Poisson rate q in (0, 1].
        dataset_size: N, so that qN is the expected batch size.
        noise_multiplier: sigma (>= 0); exactly one of this and ``target_epsilon``.
        target_epsilon: calibrate sigma to spend this epsilon over ``epochs`` or ``steps``.
        epochs: training length in epochs of :meth:`loader` (round(1 / q) steps each), for
            calibration.
        steps: training length in steps, for calibration (instead of ``epochs``).
        accountant: ``"prv"`` (default), ``"rdp"`` or ``"pld"``.
        clipping: ``"flat"`` (default), ``"per_layer"`` or ``"adaptive"``.
        grad_sample_mode: ``"auto"`` (default), ``"ghost"``, ``"materialized"`` or ``"vmap"``.
        generator: ``torch.Generator`` for the noise (default: OS-seeded); the sampler of
            :meth:`loader` gets its own generator seeded from it.
        secure: draw each step's noise from a fresh generator seeded with 63 bits of OS
            randomness (``os.urandom``), so the noise cannot be replayed from a known seed. The
            per-step stream is still torch's PRNG, not a CSPRNG; exact resume is not possible.
        adaptive_quantile: target quantile of unclipped examples for ``"adaptive"`` (0.5).
        adaptive_lr: learning rate of the geometric clip-norm update (0.2).
        adaptive_count_noise: std of the noise on the centred count (default max(qN / 20,
            noise_multiplier); qN / 20 is Andrew et al.'s choice).

    Raises:
        ValueError, TypeError: for out-of-range arguments, both or neither of
            ``noise_multiplier`` / ``target_epsilon``, or an unreachable target.
        UnsupportedModuleError: for a model DP-SGD cannot train (see :func:`validate`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> X, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> model = nn.Linear(4, 2)
        >>> dp = DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.5),
        ...            loss_fn=nn.CrossEntropyLoss(), max_grad_norm=1.0, delta=1e-5,
        ...            sample_rate=0.25, dataset_size=64, noise_multiplier=1.0,
        ...            generator=torch.Generator().manual_seed(0))
        >>> for batch in dp.loader((X, y)):
        ...     dp.step(batch)
        >>> from research_ext.privacy import epsilon
        >>> dp.steps, dp.epsilon() == epsilon(1.0, 0.25, 4, 1e-5)
        (4, True)

    References:
        Abadi et al., "Deep Learning with Differential Privacy", 2016.
        Bu et al., "Differentially Private Optimization on Large Model at Small Cost"
        (book-keeping), 2023; Li et al., "Large Language Models Can Be Strong Differentially
        Private Learners" (ghost clipping), 2022.
        Andrew et al., "Differentially Private Learning with Adaptive Clipping", 2021.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        loss_fn: LossFn,
        max_grad_norm: float | Mapping[str, float],
        delta: float,
        sample_rate: float,
        dataset_size: int,
        noise_multiplier: float | None = None,
        target_epsilon: float | None = None,
        epochs: float | None = None,
        steps: int | None = None,
        accountant: str = "prv",
        clipping: str = "flat",
        grad_sample_mode: str = "auto",
        generator: torch.Generator | None = None,
        secure: bool = False,
        adaptive_quantile: float = 0.5,
        adaptive_lr: float = 0.2,
        adaptive_count_noise: float | None = None,
    ) -> None:
        fn = "DPSGD"
        self.delta = float(check_probability(fn, "delta", delta, allow_one=False))
        self.sample_rate = float(check_probability(fn, "sample_rate", sample_rate))
        self.dataset_size = check_int(fn, "dataset_size", dataset_size, minimum=1)
        check_one_of(fn, "accountant", accountant, ACCOUNTANTS)
        self.clipping = check_one_of(fn, "clipping", clipping, CLIPPINGS)
        self.grad_sample_mode = check_one_of(fn, "grad_sample_mode", grad_sample_mode, ENGINES)
        raise_if_invalid(fn, model)
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.groups = sorted(set(layer_groups(model).values()))
        self.thresholds = layer_thresholds(fn, max_grad_norm, self.groups, clipping)
        self.noise_multiplier = self._resolve_noise(
            noise_multiplier, target_epsilon, epochs, steps, accountant
        )
        self.expected_batch_size = self.sample_rate * self.dataset_size
        self._adaptive_setup(adaptive_quantile, adaptive_lr, adaptive_count_noise)
        self.engine = make_engine(model, loss_fn, grad_sample_mode)
        self._fingerprint = fingerprint(model)
        self.accountant = PrivacyAccountant(accountant)
        self.secure = bool(secure)
        device = next(iter(self.params.values())).device if self.params else torch.device("cpu")
        self.generator = make_generator(generator, device=device)
        seed = int(
            torch.randint(
                0, 2**62, (1,), generator=self.generator, device=self.generator.device
            ).item()
        )
        self.sampler_generator = make_generator(seed)
        self._loaders: list[PoissonLoader] = []

    def _resolve_noise(
        self,
        noise_multiplier: float | None,
        target_epsilon: float | None,
        epochs: float | None,
        steps: int | None,
        accountant: str,
    ) -> float:
        sigma, self.planned_steps = resolve_noise(
            "DPSGD",
            noise_multiplier,
            target_epsilon,
            epochs,
            steps,
            self.delta,
            self.sample_rate,
            accountant,
        )
        return sigma

    def _adaptive_setup(self, quantile: float, lr: float, count_noise: float | None) -> None:
        fn = "DPSGD"
        self.adaptive_quantile = float(
            check_probability(fn, "adaptive_quantile", quantile, allow_one=False)
        )
        self.adaptive_lr = float(check_positive(fn, "adaptive_lr", lr))
        sigma = self.noise_multiplier
        self.count_noise = (
            max(self.expected_batch_size / 20, sigma)
            if count_noise is None
            else float(check_positive(fn, "adaptive_count_noise", count_noise, allow_zero=True))
        )
        self.grad_noise_multiplier = sigma
        if self.clipping == "adaptive" and sigma > 0:
            if self.count_noise == 0 or 2 * self.count_noise <= sigma:
                raise ValueError(
                    format_message(
                        fn,
                        "adaptive_count_noise",
                        f"> noise_multiplier / 2 = {sigma / 2}",
                        self.count_noise,
                        "the count's noise must leave room for the gradient's",
                    )
                )
            count_multiplier = self.count_noise / COUNT_SENSITIVITY
            self.grad_noise_multiplier = (sigma**-2 - count_multiplier**-2) ** -0.5

    @property
    def plan(self) -> dict[str, str]:
        """How each layer's per-sample gradients are computed: ``{layer: "Type: method"}``.

        Methods: ``ghost``, ``materialized``, ``vmap (per layer)``, ``vmap (whole model)``,
        ``ghost (tied with `other`)`` / ``vmap (per layer, tied with `other`)`` for layers
        sharing a parameter, or
        ``vmap (per layer, fallback: why)`` where ``"auto"`` merged layers it could not handle
        into their parent; cost-model choices are filled in by the first step.
        """
        return self.engine.plan()

    @property
    def max_grad_norm(self) -> float:
        """The current clipping norm (the tracked one for ``"adaptive"``)."""
        return sensitivity(self.thresholds, self.clipping)

    @property
    def steps(self) -> int:
        """Logical steps taken so far."""
        return self.accountant.steps

    def loader(
        self, dataset: Any, *, max_physical_batch_size: int | None = None, steps: int | None = None
    ) -> PoissonLoader:
        """A :func:`poisson_loader` at this run's sample rate whose RNG state is checkpointed."""
        loader = poisson_loader(
            dataset,
            self.sample_rate,
            max_physical_batch_size=max_physical_batch_size,
            generator=self.sampler_generator,
            steps=steps,
        )
        self._loaders.append(loader)
        return loader

    def step(self, batch: Any) -> None:
        """One logical DP-SGD step on a batch or a list of micro-batches of it.

        A batch is ``(inputs, targets)`` with ``inputs`` a tensor, a tuple of tensors
        (``model(*inputs)``) or a mapping (``model(**inputs)``); or a mapping of named tensors
        with the targets inside, whose entries ``model.forward`` names are its inputs and which
        ``loss_fn`` receives whole. Clipped sums of the micro-batches accumulate; noise is drawn
        once; ``optimizer.step()`` runs with ``p.grad`` set to the noisy sum over qN; the
        accountant records the step. What can change after construction (train/eval modes,
        frozen parameters, hooks) is re-validated first, by a cheap fingerprint.

        Raises:
            PrivacyBudgetExceededError: when the noise was calibrated with ``target_epsilon`` and
                the planned number of steps has been taken (nothing is changed then).
            UnsupportedModuleError: when the model changed into one DP-SGD cannot train (e.g.
                BatchNorm switched to ``train()``), or a layer cannot be handled by the chosen
                ``grad_sample_mode`` (the message names it; nothing is changed then).
        """
        self._check_budget("DPSGD.step")
        self._check_model()
        micro = batch if isinstance(batch, list) else [batch]
        for p in self.params.values():
            p.grad = None  # the last step's gradients are not needed while this one is computed
        total: dict[str, torch.Tensor] = {}
        unclipped = None
        for mb in micro:
            _, _, size = split_batch("DPSGD.step", mb)
            if size == 0:
                continue
            unclipped = self._clip_into(self._run_engine(mb), total, unclipped)
        self._finish(total, unclipped)

    def _run_engine(self, batch: Any) -> dict[str, torch.Tensor]:
        """``self.engine.run(batch)``; where ``"auto"`` ends in whole-model vmap, it switches."""
        try:
            return self.engine.run(batch)
        except WholeModelFallbackError:
            return self._to_whole_model().run(batch)

    def _to_whole_model(self) -> VmapEngine:
        """The whole-model vmap engine ``"auto"`` ends in, from this step on (also the user loop's)."""
        self.engine = VmapEngine(self.model, self.loss_fn)
        return self.engine

    # The two pieces below serve both DPSGD.step and the user-loop DPOptimizer.step.

    def _check_budget(self, fn: str) -> None:
        if self.planned_steps is not None and self.steps >= self.planned_steps:
            raise PrivacyBudgetExceededError(
                f"{fn}: the noise was calibrated to target_epsilon over {self.planned_steps} "
                f"steps; step {self.steps + 1} would spend more than the target"
            )

    def _clip_into(
        self,
        sq: dict[str, torch.Tensor],
        total: dict[str, torch.Tensor],
        unclipped: torch.Tensor | None,
        grad_scale: float = 1.0,
    ) -> torch.Tensor | None:
        """Add a micro-batch's clipped sums (from the engine's last run) to ``total``.

        ``grad_scale``: the engine's per-sample gradients (and ``sq``, the squared norms) are
        those of the per-example losses divided by it (the user loop's output gradients of a
        mean loss); the norms and clip factors are scaled here, on ``(batch,)`` vectors.

        Returns the adaptive centred count accumulated so far (``None`` unless adaptive).
        """
        # Nothing here is differentiated: recording it would keep each step's graph (and the
        # captured activations) alive in ``p.grad`` until the next step. The per-layer vmap
        # rules' ``torch.func`` transforms ignore an outer ``no_grad``, so they still work.
        with torch.no_grad():
            if grad_scale == 1.0:
                sq = {name: s.detach() for name, s in sq.items()}
            else:
                sq = {name: s.detach() * grad_scale**2 for name, s in sq.items()}
            factors = clip_factors(sq, self.thresholds, self.clipping)
            if grad_scale != 1.0:
                factors = {name: f * grad_scale for name, f in factors.items()}
            for name, s in self.engine.clipped_sum(factors).items():
                total[name] = total[name] + s if name in total else s
        if self.clipping == "adaptive":
            count = centred_unclipped_count(sq, self.max_grad_norm)
            unclipped = count if unclipped is None else unclipped + count
        return unclipped

    def _finish(self, total: dict[str, torch.Tensor], unclipped: torch.Tensor | None) -> None:
        """Noise, the optimizer step, the adaptive update and accounting of one logical step."""
        self._apply(total)
        if self.clipping == "adaptive":
            self._update_clip(unclipped)
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def _check_model(self) -> None:
        """Re-validate what can change after construction (modes, frozen parameters, hooks)."""
        current = fingerprint(self.model)
        if current == self._fingerprint:
            return
        raise_if_invalid("DPSGD.step", self.model, changed=True)
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if params.keys() != self.params.keys():
            added = set(layer_groups(self.model).values()) - set(self.thresholds)
            if self.clipping == "per_layer" and added:
                raise UnsupportedModuleError(
                    f"DPSGD.step: layer groups {sorted(added)} became trainable after DPSGD was "
                    f"built and have no per-layer threshold; build a new DPSGD"
                )
            for p in self.params.values():
                p.grad = None  # a parameter frozen since the last step keeps no stale update
            self.params = params
            self.engine = make_engine(self.model, self.loss_fn, self.grad_sample_mode)
        self._fingerprint = current

    def _noise_generator(self) -> torch.Generator:
        return secure_generator(self.generator.device) if self.secure else self.generator

    def _apply(self, total: dict[str, torch.Tensor]) -> None:
        generator = self._noise_generator()
        std = self.grad_noise_multiplier * self.max_grad_norm
        scale = 1.0 / self.expected_batch_size
        for name, p in self.params.items():
            s = total.pop(name, None)
            s = torch.zeros_like(p) if s is None else s.to(p.dtype)
            # In place: the clipped sum becomes the gradient, with one noise temporary at a time.
            p.grad = add_gaussian_noise_(s, std, generator=generator).mul_(scale)
        self.optimizer.step()

    def _update_clip(self, unclipped: torch.Tensor | None) -> None:
        generator = self._noise_generator()
        count = (
            torch.zeros((), device=generator.device)
            if unclipped is None
            else unclipped.to(generator.device, torch.float64)
        )
        if self.noise_multiplier > 0:
            count = add_gaussian_noise_(count.double(), self.count_noise, generator=generator)
        # The centred count's expectation is (fraction - 1/2) qN: add the 1/2 back.
        fraction = float(count) / self.expected_batch_size + 0.5
        factor = math.exp(-self.adaptive_lr * (fraction - self.adaptive_quantile))
        self.thresholds = {k: v * factor for k, v in self.thresholds.items()}

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far at ``delta`` (default: the run's delta)."""
        return self.accountant.epsilon(self.delta if delta is None else delta)

    # -- checkpoints ---------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "noise_multiplier": self.noise_multiplier,
            "accountant": self.accountant.accountant,
            "clipping": self.clipping,
            "dataset_size": self.dataset_size,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-identical resume needs: model, optimizer, accountant, RNG states."""
        return {
            "config": self._config(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "accountant": self.accountant.state_dict(),
            "thresholds": dict(self.thresholds),
            "noise_generator": self.generator.get_state(),
            "sampler_generator": self.sampler_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; refuses one saved with other privacy settings.

        Raises:
            CheckpointMismatchError: if sample_rate, noise_multiplier, accountant, clipping or
                dataset_size differ from this run's (nothing is loaded then).
        """
        saved, mine = state["config"], self._config()
        diffs = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
        if diffs:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs run {b!r}" for k, (a, b) in diffs.items())
            raise CheckpointMismatchError(
                f"DPSGD.load_state_dict: checkpoint does not match this run ({detail})"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.accountant.load_state_dict(state["accountant"])
        self.thresholds = {k: float(v) for k, v in state["thresholds"].items()}
        self.generator.set_state(state["noise_generator"])
        self.sampler_generator.set_state(state["sampler_generator"])
        torch.set_rng_state(state["torch_rng"])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state_dict` to ``path`` atomically, with a content hash checked on load.

        A temporary file is renamed over ``path`` (``os.replace``); temporary files left by
        interrupted saves in the same directory are removed first.
        """
        write_checkpoint(self.state_dict(), path)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Load a checkpoint written by :meth:`save` (see :meth:`load_state_dict`).

        Raises:
            CheckpointError: if the file is empty, truncated, corrupt (its content hash does
                not match) or not a DPSGD checkpoint; the message names the file. Nothing is
                loaded then.
            CheckpointMismatchError: as for :meth:`load_state_dict`.
        """
        self.load_state_dict(read_checkpoint("DPSGD.load", path))
