"""Curvature of a model's loss as matrix-free operators over its flattened parameters.

Every operator linearizes once: at its first product (for a single batch) it runs one forward pass
and keeps the autograd graph of the gradient (Hessian) or of the outputs (GGN, Fisher); each
product ``A @ V`` is then a double-backward pass over that graph, never a fresh forward pass. The
``k`` columns of a block run as one vmapped pass (``is_grads_batched``) on accelerators and as a
loop on the CPU, where the loop measured faster; ``RESEARCH_EXT_VMAP_ON_CPU=1`` in the environment
forces the vmapped branch on the CPU too (the test suite runs both). Products are device-native: nothing leaves the device and nothing syncs with the
host. For an iterable of batches the graphs are kept only with ``cache=True`` (memory grows with the
number of batches); otherwise each product re-runs the forward pass batch by batch and accumulates.

GGN and Fisher share one product ``J^T M J`` (:class:`_OutputCurvatureOperator`) and differ
only in the output-space matrix ``M``: the loss's Hessian in the outputs (the GGN, and the exact
Fisher of the losses whose likelihood is known) or a sum of score outer products (the sampled and
empirical Fishers). Reading the data lives in ``_batches``, the likelihoods in ``_likelihood``.
The module stays one unit past the usual ~500 lines: the three operators share the flattening and
linearization machinery, and about a third of it is the public factories' docstrings.
"""

import abc
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, final

import torch
from torch import nn

from research_ext.core import (
    LinearOperator,
    check_int,
    check_one_of,
    check_type,
    format_message,
    progress,
)
from research_ext.functional._batches import (
    as_batches,
    batch_size,
    call_model,
    loss_reduction,
)
from research_ext.functional._hvp import batched_backward
from research_ext.functional._likelihood import likelihood_of, sample_targets

__all__ = [
    "AbstractCurvatureOperator",
    "FisherOperator",
    "GGNOperator",
    "HessianOperator",
    "fisher_operator",
    "ggn_operator",
    "hessian_operator",
]

#: Vectorize block products with vmap on the CPU too (on accelerators they always are). Off by
#: default: at one CPU thread a loop over the columns was faster (vmap added ~40% per product).
#: The environment variable ``RESEARCH_EXT_VMAP_ON_CPU=1`` (read at every product) switches it
#: on, so the branch an accelerator runs can be run, and tested, on the CPU.
_VMAP_ON_CPU = False
VMAP_ON_CPU_ENV = "RESEARCH_EXT_VMAP_ON_CPU"


def _vmap_block(device: torch.device) -> bool:
    """Whether block products run as one vmapped pass on ``device``."""
    if device.type != "cpu" or _VMAP_ON_CPU:
        return True
    return os.environ.get(VMAP_ON_CPU_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


Apply = Callable[[list[torch.Tensor], bool], list[torch.Tensor]]
#: ``(W, batched) -> M W``: an output-space matrix ``M`` applied to a block of output tangents.
OutputApply = Callable[[torch.Tensor, bool], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _grad(
    outputs: Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    grad_outputs: Sequence[torch.Tensor],
    *,
    batched: bool,
    create_graph: bool = False,
) -> list[torch.Tensor]:
    """Vector-Jacobian products that keep the graph and give zeros for unreachable inputs.

    With ``batched``, every ``grad_outputs`` entry carries a leading dimension ``k`` and the k
    products run as one vmapped backward pass (``is_grads_batched``).
    """
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs, strict=True) if o.requires_grad]
    if not pairs:
        lead = (grad_outputs[0].shape[0],) if batched else ()
        return [torch.zeros(lead + p.shape, dtype=p.dtype, device=p.device) for p in inputs]
    outs, cotangents = [o for o, _ in pairs], [g for _, g in pairs]

    def vjp(cots: list[torch.Tensor], vmapped: bool) -> list[torch.Tensor]:
        grads = torch.autograd.grad(
            outs,
            list(inputs),
            grad_outputs=cots,
            retain_graph=True,
            create_graph=create_graph,
            allow_unused=True,
            materialize_grads=True,
            is_grads_batched=vmapped,
        )
        if vmapped:  # materialize_grads gives an unreachable input zeros without the batch dim
            k = cots[0].shape[0]
            grads = tuple(
                g if g.dim() == p.dim() + 1 else g.expand((k, *p.shape))
                for g, p in zip(grads, inputs, strict=True)
            )
        return list(grads)

    if batched:  # is_grads_batched, or one pass per vector where torch cannot batch it
        return list(batched_backward(lambda c, v: tuple(vjp(list(c), v)), tuple(cotangents)))
    return vjp(cotangents, False)


class AbstractCurvatureOperator(LinearOperator):
    """A symmetric curvature matrix of ``loss_fn(model(x), y)`` over the flattened parameters.

    Subclasses linearize one batch in ``_linearize`` (returning a closure ``V -> A_b V`` on a block
    of per-parameter tangents); this base class handles parameter selection, flattening, batching
    over data and accumulation with the loss's reduction.
    """

    is_hermitian = True
    _name = "curvature_operator"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Any,
        *,
        params: Sequence[str] | None = None,
        reduction: str | None = None,
        cache: bool | None = None,
        show_progress: bool | None = None,
    ) -> None:
        fn = self._name
        check_type(fn, "model", model, nn.Module, "an nn.Module")
        if not callable(loss_fn):
            raise TypeError(format_message(fn, "loss_fn", "callable", loss_fn))
        named = dict(model.named_parameters())
        if params is None:
            names = [n for n, p in named.items() if p.requires_grad]
        else:
            if isinstance(params, str):
                raise TypeError(format_message(fn, "params", "a sequence of names", params))
            unknown = [n for n in params if n not in named]
            if unknown:
                raise ValueError(
                    format_message(fn, "params", "names of parameters of `model`", unknown)
                )
            names = list(params)
        if not names:
            raise ValueError(
                format_message(
                    fn, "model", "a module with trainable parameters", type(model).__name__
                )
            )
        self.model, self.loss_fn = model, loss_fn
        self.reduction = loss_reduction(fn, loss_fn, reduction)
        self.names = names
        # Clones fix the linearization point: later optimizer steps do not leak into products.
        self._params = {n: named[n].detach().clone().requires_grad_(True) for n in names}
        self._fixed = {n: p.detach().clone() for n, p in named.items() if n not in self._params}
        self._shapes = [tuple(self._params[n].shape) for n in names]
        self._sizes = [self._params[n].numel() for n in names]
        first = self._params[names[0]]
        self._dtype, self._device = first.dtype, first.device
        self._batches, self._single = as_batches(fn, data)
        self.cache = self._single if cache is None else bool(cache)
        self.show_progress = show_progress
        self._cached: list[tuple[int, Apply]] = []

    @property
    def shape(self) -> tuple[int, int]:
        """``(P, P)`` with ``P`` the number of selected parameter entries."""
        n = sum(self._sizes)
        return (n, n)

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """The parameters' device."""
        return self._device

    def _forward(self, x: Any) -> torch.Tensor:
        leaves = list(self._params.values())
        params = dict(self._fixed)
        params.update(zip(self.names, leaves, strict=True))
        return call_model(self.model, params, x)

    @abc.abstractmethod
    def _linearize(self, x: Any, y: torch.Tensor) -> Apply:
        """Return ``V -> A_b V`` for one batch, on blocks ``[(k, *shape) per parameter]``."""

    def _pieces(self) -> Iterable[tuple[int, Apply]]:
        return self._cached if self._cached else self._replay()

    def _replay(self) -> Iterable[tuple[int, Apply]]:
        batches = self._batches
        if not self._single:
            batches = progress(batches, desc=self._name, enable=self.show_progress, leave=False)
        for x, y in batches:
            piece = (batch_size(x), self._linearize(x, y))
            if self.cache:
                self._cached.append(piece)
            yield piece

    def _accumulate(self, run: Callable[[Apply], torch.Tensor]) -> torch.Tensor:
        """Sum ``run(apply_b)`` over batches, weighted by batch size for a mean reduction."""
        if self._single and self._cached:  # the common case, kept free of per-call overhead
            return run(self._cached[0][1])
        total: torch.Tensor | None = None
        count = 0
        for size, apply in self._pieces():
            out = run(apply)
            if self.reduction == "mean" and not self._single:
                out = out * size
            total = out if total is None else total + out
            count += size
        if total is None:
            raise ValueError(format_message(self._name, "data", "a non-empty iterable", []))
        if self.reduction == "mean" and not self._single:
            total = total / count
        return total

    def _split(self, vector: torch.Tensor) -> list[torch.Tensor]:
        return [t.reshape(s) for t, s in zip(vector.split(self._sizes), self._shapes, strict=True)]

    def _matvec(self, vector: torch.Tensor) -> torch.Tensor:
        parts = self._split(vector)
        return self._accumulate(lambda apply: _flatten(apply(parts, False)))

    def _matmat(self, matrix: torch.Tensor) -> torch.Tensor:
        k = matrix.shape[1]
        if _vmap_block(matrix.device):
            block = [
                t.reshape((k, *s))
                for t, s in zip(matrix.mT.split(self._sizes, dim=1), self._shapes, strict=True)
            ]
            flat = self._accumulate(
                lambda apply: torch.cat([t.reshape(k, -1) for t in apply(block, True)], dim=1)
            )
            return flat.mT
        columns = [self._split(column) for column in matrix.mT.contiguous()]
        return self._accumulate(
            lambda apply: torch.stack([_flatten(apply(c, False)) for c in columns], dim=1)
        )


def _flatten(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in parts])


@final
class HessianOperator(AbstractCurvatureOperator):
    """The Hessian ``H = d^2 L / d theta^2`` of the loss; see :func:`hessian_operator`."""

    _name = "hessian_operator"

    def _linearize(self, x: Any, y: torch.Tensor) -> Apply:
        leaves = list(self._params.values())
        loss = self.loss_fn(self._forward(x), y)
        grads = torch.autograd.grad(loss, leaves, create_graph=True, materialize_grads=True)

        def apply(block: list[torch.Tensor], batched: bool) -> list[torch.Tensor]:
            return _grad(grads, leaves, block, batched=batched)

        return apply


class _OutputLinearization:
    """Cached ``J V`` and ``J^T W`` for the Jacobian ``J`` of the model outputs of one batch."""

    def __init__(self, outputs: torch.Tensor, leaves: list[torch.Tensor]) -> None:
        self.outputs, self.leaves = outputs, leaves
        # J^T u is linear in a dummy u; differentiating it w.r.t. u gives J v (double-vjp trick).
        self.dummy = torch.zeros_like(outputs, requires_grad=True)
        self.jt_dummy = _grad([outputs], leaves, [self.dummy], batched=False, create_graph=True)

    def jvp(self, block: list[torch.Tensor], batched: bool) -> torch.Tensor:
        return _grad(self.jt_dummy, [self.dummy], block, batched=batched)[0]

    def vjp(self, block: torch.Tensor, batched: bool) -> list[torch.Tensor]:
        return _grad([self.outputs], self.leaves, [block], batched=batched)


class _OutputCurvatureOperator(AbstractCurvatureOperator):
    """``J^T M J``: a curvature ``M`` in the model's outputs, pulled back through their Jacobian.

    The one product behind the GGN and every Fisher: subclasses give ``M`` for one batch in
    ``_output_curvature``; ``J V`` and ``J^T W`` run over the batch's cached output graph.
    """

    def _linearize(self, x: Any, y: torch.Tensor) -> Apply:
        lin = _OutputLinearization(self._forward(x), list(self._params.values()))
        middle = self._output_curvature(lin.outputs.detach().requires_grad_(True), y)

        def apply(block: list[torch.Tensor], batched: bool) -> list[torch.Tensor]:
            return lin.vjp(middle(lin.jvp(block, batched), batched), batched)

        return apply

    @abc.abstractmethod
    def _output_curvature(self, out: torch.Tensor, y: torch.Tensor) -> OutputApply:
        """``W -> M W`` at the outputs ``out`` (a leaf that requires grad) and targets ``y``."""

    def _loss_hessian(self, out: torch.Tensor, y: torch.Tensor) -> OutputApply:
        """``W -> (d^2 L / d f^2) W``, by differentiating the loss's output gradient once more."""
        (grad_out,) = torch.autograd.grad(
            self.loss_fn(out, y), out, create_graph=True, materialize_grads=True
        )

        def apply(block: torch.Tensor, batched: bool) -> torch.Tensor:
            return _grad([grad_out], [out], [block], batched=batched)[0]

        return apply


@final
class GGNOperator(_OutputCurvatureOperator):
    """The generalized Gauss-Newton ``J^T H_f J``; see :func:`ggn_operator`."""

    _name = "ggn_operator"

    def _output_curvature(self, out: torch.Tensor, y: torch.Tensor) -> OutputApply:
        return self._loss_hessian(out, y)


_FISHER_KINDS = ("empirical", "mc", "exact")


@final
class FisherOperator(_OutputCurvatureOperator):
    """The Fisher information of the model's likelihood; see :func:`fisher_operator`."""

    _name = "fisher_operator"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Any,
        *,
        kind: str = "mc",
        mc_samples: int = 1,
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> None:
        self.kind = check_one_of(self._name, "kind", kind, _FISHER_KINDS)
        self.mc_samples = check_int(self._name, "mc_samples", mc_samples, minimum=1)
        self.generator = generator
        self.likelihood = likelihood_of(loss_fn)
        if kind != "empirical" and self.likelihood is None:
            raise NotImplementedError(
                f"fisher_operator: kind={kind!r} needs the model's likelihood, known only for "
                f"nn.MSELoss and nn.CrossEntropyLoss, got loss_fn={loss_fn!r}; "
                "use kind='empirical' or ggn_operator"
            )
        super().__init__(model, loss_fn, data, **kwargs)
        if self.kind == "mc" and not self.cache and not self._single:
            self.cache = True  # sampled targets must stay fixed for the operator to be linear

    def _output_curvature(self, out: torch.Tensor, y: torch.Tensor) -> OutputApply:
        if self.kind == "exact":
            # For these exponential-family likelihoods, E_y[g g^T] is the output Hessian.
            return self._loss_hessian(out, y)
        if self.kind == "empirical":
            targets = y.unsqueeze(0)
        else:
            assert self.likelihood is not None  # checked at construction
            targets = sample_targets(
                self.likelihood, out.detach(), self.mc_samples, self.reduction, self.generator
            )
        # sum_i w * grad l_i grad l_i^T = (1/w) sum_i s_i s_i^T, with s_i = dL/df_i = w grad l_i.
        weight = out.shape[0] if self.reduction == "mean" else 1
        scores = (
            torch.stack([torch.autograd.grad(self.loss_fn(out, t), out)[0] for t in targets])
            * (weight / targets.shape[0]) ** 0.5
        )
        dims = tuple(range(2, scores.ndim))

        def apply(jv: torch.Tensor, batched: bool) -> torch.Tensor:
            if not batched:
                jv = jv.unsqueeze(0)  # (k, N, ...) with k = 1
            coef = (scores.unsqueeze(1) * jv.unsqueeze(0)).sum(dim=tuple(d + 1 for d in dims))
            w = (scores.unsqueeze(1) * coef.reshape(coef.shape + (1,) * len(dims))).sum(dim=0)
            return w if batched else w.squeeze(0)

        return apply


def hessian_operator(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    params: Sequence[str] | None = None,
    reduction: str | None = None,
    cache: bool | None = None,
    show_progress: bool | None = None,
) -> HessianOperator:
    """The Hessian of the loss over the flattened parameters, as a matrix-free operator.

    ``H = d^2 L / d theta^2`` with ``L(theta) = reduce_b loss_fn(model(x_b; theta), y_b)`` (the
    loss's own reduction: a mean over all samples, or a sum). ``H @ V`` for ``V`` of shape
    ``(P, k)`` differentiates the cached gradient graph once more (Pearlmutter's ``R``-operator),
    about one gradient's cost per column; the parameter order is ``model.named_parameters()``.

    Args:
        model: an ``nn.Module`` mapping inputs to outputs of shape ``(N, ...)``.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, e.g. ``nn.CrossEntropyLoss()``.
        data: one batch ``(inputs, targets)``, or an iterable of batches (a ``DataLoader``).
        params: names of the parameters to differentiate (default: every trainable one); the
            others stay fixed.
        reduction: ``"mean"`` or ``"sum"``: how batches combine (default: ``loss_fn.reduction``,
            else ``"mean"``).
        cache: keep each batch's graph between products (default: only for a single batch;
            memory grows with the number of batches).
        show_progress: progress bar over batches (default: in notebooks and terminals only).

    Returns:
        A symmetric :class:`HessianOperator` of shape ``(P, P)``, with the parameters' dtype and
        device, linearized at the parameters' current values (later training does not move it).

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``, ``loss_fn`` is not callable or ``data``
            is neither a batch nor an iterable.
        ValueError: if there is no trainable parameter, ``params`` names an unknown parameter or
            ``reduction`` is unknown.

    Example:
        >>> lin = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> H = hessian_operator(lin, torch.nn.MSELoss(), (x, torch.zeros(2, 1, dtype=x.dtype)))
        >>> H.to_dense().tolist()  # (2 / N) x^T x for a linear least-squares model
        [[1.0, 0.0], [0.0, 4.0]]

    References:
        Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural Computation 1994.
    """
    return HessianOperator(
        model,
        loss_fn,
        data,
        params=params,
        reduction=reduction,
        cache=cache,
        show_progress=show_progress,
    )


def ggn_operator(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    params: Sequence[str] | None = None,
    reduction: str | None = None,
    cache: bool | None = None,
    show_progress: bool | None = None,
) -> GGNOperator:
    """The generalized Gauss-Newton matrix of the loss, as a matrix-free operator.

    ``G = sum_b J_b^T (d^2 L / d f^2) J_b`` with ``J_b = d f(x_b; theta) / d theta`` the Jacobian
    of the model outputs: the Hessian with the model's own curvature dropped, positive
    semi-definite for convex losses (MSE, cross-entropy); any twice-differentiable loss works.
    ``G @ V`` is ``J V`` (a double-vjp over the cached output graph), the output Hessian, then
    ``J^T``.

    Args:
        model: an ``nn.Module`` mapping inputs to outputs of shape ``(N, ...)``.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, e.g. ``nn.MSELoss()``.
        data: one batch ``(inputs, targets)``, or an iterable of batches (a ``DataLoader``).
        params: names of the parameters to differentiate (default: every trainable one).
        reduction: ``"mean"`` or ``"sum"`` (default: ``loss_fn.reduction``, else ``"mean"``).
        cache: keep each batch's graph between products (default: only for a single batch).
        show_progress: progress bar over batches (default: in notebooks and terminals only).

    Returns:
        A symmetric :class:`GGNOperator` of shape ``(P, P)``.

    Raises:
        TypeError: if ``model``, ``loss_fn`` or ``data`` has the wrong type.
        ValueError: if there is no trainable parameter, or ``params``/``reduction`` is invalid.

    Example:
        >>> lin = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> G = ggn_operator(lin, torch.nn.MSELoss(), (x, torch.zeros(2, 1, dtype=x.dtype)))
        >>> G.to_dense().tolist()  # equals the Hessian for a linear model
        [[1.0, 0.0], [0.0, 4.0]]

    References:
        Schraudolph, "Fast Curvature Matrix-Vector Products for Second-Order Gradient Descent",
        Neural Computation 2002. Martens, "New Insights and Perspectives on the Natural Gradient
        Method", JMLR 2020.
    """
    return GGNOperator(
        model,
        loss_fn,
        data,
        params=params,
        reduction=reduction,
        cache=cache,
        show_progress=show_progress,
    )


def fisher_operator(
    model: nn.Module,
    loss_fn: LossFn,
    data: Any,
    *,
    kind: str = "mc",
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    params: Sequence[str] | None = None,
    reduction: str | None = None,
    cache: bool | None = None,
    show_progress: bool | None = None,
) -> FisherOperator:
    """The Fisher information matrix of the model's likelihood, as a matrix-free operator.

    With per-sample losses ``l_i(y) = -log p(y | f(x_i))`` and weight ``w`` (``1/N`` for a mean
    reduction, 1 for a sum): ``F = sum_i w E_y[grad l_i(y) grad l_i(y)^T]``. ``kind="exact"``
    takes the expectation in closed form, which for Gaussian (MSE) and categorical
    (cross-entropy) likelihoods equals the GGN; ``"mc"`` averages ``mc_samples`` targets drawn
    from the model's predictive distribution once, at construction (so the operator is a fixed
    linear map); ``"empirical"`` uses the data's own targets (any per-sample loss).

    Args:
        model: an ``nn.Module`` mapping inputs to outputs of shape ``(N, ...)``; samples must be
            processed independently (no batch statistics).
        loss_fn: ``nn.MSELoss`` / ``nn.CrossEntropyLoss`` (modules or their functional forms);
            ``"empirical"`` accepts any loss that is a sum or mean of per-sample terms.
        data: one batch ``(inputs, targets)``, or an iterable of batches (a ``DataLoader``).
        kind: ``"empirical"``, ``"mc"`` or ``"exact"``.
        mc_samples: targets drawn per sample for ``"mc"``.
        generator: random source for the ``"mc"`` targets.
        params: names of the parameters to differentiate (default: every trainable one).
        reduction: ``"mean"`` or ``"sum"`` (default: ``loss_fn.reduction``, else ``"mean"``).
        cache: keep each batch's graph between products (forced on for ``"mc"`` over many
            batches, so the drawn targets stay fixed).
        show_progress: progress bar over batches (default: in notebooks and terminals only).

    Returns:
        A symmetric positive semi-definite :class:`FisherOperator` of shape ``(P, P)``.

    Raises:
        TypeError: if ``model``, ``loss_fn`` or ``data`` has the wrong type.
        ValueError: if ``kind``, ``mc_samples``, ``params`` or ``reduction`` is invalid, or the
            model has no trainable parameter.
        NotImplementedError: for ``"mc"``/``"exact"`` with a loss whose likelihood is unknown.

    Example:
        >>> lin = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=x.dtype)
        >>> fisher_operator(lin, torch.nn.MSELoss(), (x, y), kind="exact").to_dense().tolist()
        [[1.0, 0.0], [0.0, 4.0]]

    References:
        Martens, "New Insights and Perspectives on the Natural Gradient Method", JMLR 2020.
        Kunstner, Balles, Hennig, "Limitations of the Empirical Fisher Approximation for Natural
        Gradient Descent", NeurIPS 2019.
    """
    return FisherOperator(
        model,
        loss_fn,
        data,
        kind=kind,
        mc_samples=mc_samples,
        generator=generator,
        params=params,
        reduction=reduction,
        cache=cache,
        show_progress=show_progress,
    )
