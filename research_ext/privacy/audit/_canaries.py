r"""Canaries: examples (or gradients) planted in training to measure what the model reveals.

Three kinds:

* **Input-space** canaries (:func:`input_canaries`): random inputs with random labels, the
  black-box audit. Their membership score is the negative per-example loss of the trained model:
  a model that memorised a canary fits its random label better.
* **Gradient-space "dirac"** canaries (:func:`dirac_canaries`): the white-box audit of DP-SGD's
  worst case. Canary :math:`i` contributes the per-sample gradient
  :math:`g_i = s_i\,\|g\|\,e_{j_i}` (one parameter coordinate :math:`j_i`, a random sign
  :math:`s_i`, norm ``grad_norm``) whenever it is sampled; no real example produces such a
  gradient, so the training loop adds it through :meth:`Canaries.gradient_sum`. Its score is how
  far the coordinate moved against the canary's gradient:
  :math:`-s_i(\theta_{j_i} - \theta^{(0)}_{j_i})`.
* **Feature** canaries (:func:`feature_canaries`): gradient-space canaries that go through the
  real training engine. Each canary is an example with a private input feature: zeros on the
  data's features and ``scale`` on its own indicator feature, which no other example uses. The
  model is wrapped (:meth:`Canaries.wrap`) with a zero-initialised linear head on the indicator
  features, so canary i alone moves column i of that head, by its clipped gradient each time it
  is sampled: a white-box, last-iterate audit of the engine's clipping, noise and sampling with
  the signal isolated from the data (Nasr et al. 2023; Andrew et al. 2024 use the same idea of
  canary gradients orthogonal to the data's). With ``scale`` >> ``max_grad_norm`` a canary's
  gradient is far above the clipping norm, so an engine that skips clipping is caught as surely
  as one that skips the noise. The score is how far the column moved toward the canary's label:
  :math:`V_{y_i i} - \frac{1}{K}\sum_k V_{k i}`.

References:
    Nasr et al., "Tight Auditing of Differentially Private Machine Learning", USENIX Security
    2023 (dirac canaries). Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training
    Run", NeurIPS 2023. Andrew et al., "One-shot Empirical Privacy Estimation for Federated
    Learning", ICLR 2024.
"""

import dataclasses
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from research_ext.core import check_int, check_positive, format_message, make_generator

__all__ = ["Canaries", "FeatureCanaryModel", "dirac_canaries", "feature_canaries", "input_canaries"]


@dataclasses.dataclass(frozen=True)
class Canaries:
    """A set of canaries of one kind; build it with :func:`input_canaries` or :func:`dirac_canaries`.

    Attributes:
        kind: ``"input"``, ``"dirac"`` or ``"feature"``.
        inputs: ``(m, *input_shape)`` canary inputs (input kind; ``(m, d + m)`` for the feature
            kind), else ``None``.
        targets: ``(m,)`` int64 labels (input and feature kinds), else ``None``.
        param_names: names of the model's parameters the dirac canaries index.
        param_index: ``(m,)`` int64, which of ``param_names`` each dirac canary touches.
        flat_index: ``(m,)`` int64, which coordinate of that (flattened) parameter.
        sign: ``(m,)`` +1/-1 direction of each dirac gradient.
        grad_norm: norm of each dirac gradient.
        initial: ``(m,)`` the touched coordinates' values before training.
        num_features: feature kind: d, the data's number of input features.
        canary_ids: feature kind: ``(m,)`` int64, each canary's indicator feature (0..m_all-1).
        num_all: feature kind: the number of canaries made (indicator features of the head).
    """

    kind: str
    inputs: Tensor | None = None
    targets: Tensor | None = None
    param_names: tuple[str, ...] = ()
    param_index: Tensor | None = None
    flat_index: Tensor | None = None
    sign: Tensor | None = None
    grad_norm: float = 1.0
    initial: Tensor | None = None
    num_classes: int = 0
    num_features: int = 0
    canary_ids: Tensor | None = None
    num_all: int = 0

    def __len__(self) -> int:
        reference = self.sign if self.kind == "dirac" else self.targets
        assert reference is not None
        return int(reference.shape[0])

    def select(self, mask: Tensor) -> "Canaries":
        """The canaries where the ``(m,)`` bool ``mask`` is true (e.g. those to train on)."""
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (len(self),):
            raise TypeError(
                format_message(
                    "Canaries.select", "mask", f"a bool tensor of shape ({len(self)},)", mask
                )
            )

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[mask.to(t.device)]

        return dataclasses.replace(
            self,
            inputs=pick(self.inputs),
            targets=pick(self.targets),
            param_index=pick(self.param_index),
            flat_index=pick(self.flat_index),
            sign=pick(self.sign),
            initial=pick(self.initial),
            canary_ids=pick(self.canary_ids),
        )

    def pad(self, inputs: Tensor) -> Tensor:
        """Feature kind: the data's ``(n, d)`` inputs with m zero indicator features appended.

        The result, ``(n, d + m)``, can be concatenated with the included canaries' inputs.
        """
        if self.kind != "feature":
            raise ValueError(format_message("Canaries.pad", "kind", "'feature'", self.kind))
        if inputs.ndim != 2 or inputs.shape[1] != self.num_features:
            raise ValueError(
                format_message(
                    "Canaries.pad",
                    "inputs",
                    f"a tensor of shape (n, {self.num_features})",
                    f"<tensor of shape {tuple(inputs.shape)}>",
                )
            )
        zeros = inputs.new_zeros(inputs.shape[0], self.num_all)
        return torch.cat([inputs, zeros], dim=1)

    def wrap(self, model: nn.Module) -> "FeatureCanaryModel":
        """Feature kind: ``model`` with the canaries' zero-initialised linear head added."""
        if self.kind != "feature":
            raise ValueError(format_message("Canaries.wrap", "kind", "'feature'", self.kind))
        return FeatureCanaryModel(model, self.num_features, self.num_all, self.num_classes)

    def gradient_sum(
        self, params: Mapping[str, Tensor], mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        r"""Sum of the dirac canaries' gradients, shaped like ``params``: :math:`\sum_i g_i`.

        Add it to the clipped per-sample gradient sum of a step, before the noise, for the
        canaries Poisson-sampled into that step (``mask``).

        Args:
            params: the model's named parameters (``dict(model.named_parameters())``).
            mask: ``(m,)`` bool, the canaries sampled this step; ``None`` means all.

        Returns:
            A dict name -> tensor (zeros where no canary lands), on each parameter's device.

        Raises:
            ValueError: for input canaries, or if ``params`` lacks a canary's parameter.
        """
        if self.kind != "dirac":
            raise ValueError(format_message("Canaries.gradient_sum", "kind", "'dirac'", self.kind))
        assert (
            self.param_index is not None and self.flat_index is not None and self.sign is not None
        )
        out = {}
        for k, name in enumerate(self.param_names):
            if name not in params:
                raise ValueError(
                    format_message(
                        "Canaries.gradient_sum",
                        "params",
                        f"a mapping with key {name!r}",
                        sorted(params),
                    )
                )
            p = params[name]
            select = self.param_index == k
            if mask is not None:
                select = select & mask.to(select.device)
            flat = torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
            values = (self.sign[select] * self.grad_norm).to(dtype=p.dtype, device=p.device)
            flat.index_add_(0, self.flat_index[select].to(p.device), values)
            out[name] = flat.view_as(p)
        for name, p in params.items():
            out.setdefault(name, torch.zeros_like(p))
        return out

    @torch.no_grad()
    def scores(
        self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None
    ) -> Tensor:
        """Membership scores of every canary against a trained ``model``; higher = more likely in.

        Args:
            model: the trained model (for dirac canaries, trained from the model that
                :func:`dirac_canaries` saw).
            loss_fn: input kind only: per-example loss ``loss_fn(outputs, targets) -> (m,)``;
                default cross-entropy.

        Returns:
            ``(m,)`` scores: negative loss (input) or movement against the canary gradient (dirac).
        """
        if self.kind == "feature":
            head = getattr(model, "canary_head", None)
            if not isinstance(head, nn.Linear):
                raise TypeError(
                    format_message(
                        "Canaries.scores", "model", "the model returned by `Canaries.wrap`", model
                    )
                )
            assert self.targets is not None and self.canary_ids is not None
            columns = head.weight.detach()[:, self.canary_ids.to(head.weight.device)]  # (K, m)
            labels = self.targets.to(columns.device)
            toward = columns.gather(0, labels[None, :])[0]
            return (toward - columns.mean(0)).cpu()
        if self.kind == "input":
            assert self.inputs is not None and self.targets is not None
            outputs = model(self.inputs)
            if loss_fn is None:
                return -nn.functional.cross_entropy(outputs, self.targets, reduction="none")
            return -loss_fn(outputs, self.targets)
        assert self.param_index is not None and self.flat_index is not None
        assert self.sign is not None and self.initial is not None
        named = dict(model.named_parameters())
        current = torch.empty_like(self.initial)
        for k, name in enumerate(self.param_names):
            select = self.param_index == k
            current[select] = named[name].detach().reshape(-1)[self.flat_index[select]].to(current)
        return -self.sign * (current - self.initial)


def input_canaries(
    num_canaries: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
) -> Canaries:
    r"""Random input-space canaries: :math:`x_i \sim \mathcal{N}(0, \text{scale}^2 I)`, random labels.

    Args:
        num_canaries: :math:`m \ge 1`.
        input_shape: shape of one input, e.g. ``(784,)`` or ``(1, 28, 28)``.
        num_classes: labels are drawn uniformly from ``range(num_classes)`` (>= 2).
        scale: standard deviation of the inputs (> 0).
        dtype: floating dtype of the inputs.
        device: device of the tensors.
        generator: a ``torch.Generator`` on any device (``None``: OS-seeded on ``device``).

    Returns:
        :class:`Canaries` of kind ``"input"``.

    Raises:
        TypeError, ValueError: for non-int counts, an empty shape or a non-positive scale.

    Example:
        >>> c = input_canaries(8, (5,), 3, generator=torch.Generator().manual_seed(0))
        >>> len(c), tuple(c.inputs.shape), bool((c.targets < 3).all())
        (8, (8, 5), True)
    """
    fn = "input_canaries"
    check_int(fn, "num_canaries", num_canaries, minimum=1)
    check_int(fn, "num_classes", num_classes, minimum=2)
    check_positive(fn, "scale", scale)
    if not isinstance(input_shape, tuple) or not all(
        isinstance(d, int) and d > 0 for d in input_shape
    ):
        raise TypeError(format_message(fn, "input_shape", "a tuple of positive ints", input_shape))
    generator = generator if generator is not None else make_generator(None, device=device)
    # Drawn where the generator lives (a CPU generator gives the same canaries on any device).
    drawn_on = generator.device
    inputs = scale * torch.randn(
        (num_canaries, *input_shape), generator=generator, dtype=dtype, device=drawn_on
    ).to(device)
    targets = torch.randint(num_classes, (num_canaries,), generator=generator, device=drawn_on).to(
        device
    )
    return Canaries(kind="input", inputs=inputs, targets=targets)


def dirac_canaries(
    model: nn.Module,
    num_canaries: int,
    grad_norm: float,
    *,
    generator: torch.Generator | None = None,
) -> Canaries:
    r"""Gradient-space canaries on distinct random coordinates of ``model``'s parameters.

    Canary :math:`i` is the gradient :math:`s_i\,\text{grad\_norm}\,e_{j_i}`; with
    ``grad_norm`` equal to the clipping norm it survives clipping unchanged, DP-SGD's worst case.

    Args:
        model: the model before training; its current parameter values are recorded.
        num_canaries: :math:`m`, at most the number of trainable scalars.
        grad_norm: norm of each canary gradient (> 0), usually ``max_grad_norm``.
        generator: a CPU ``torch.Generator`` (``None``: OS-seeded).

    Returns:
        :class:`Canaries` of kind ``"dirac"``.

    Raises:
        TypeError, ValueError: for a bad count or norm, or more canaries than coordinates.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> c = dirac_canaries(model, 5, 1.0, generator=torch.Generator().manual_seed(0))
        >>> grads = c.gradient_sum(dict(model.named_parameters()))
        >>> sum(float(g.abs().sum()) for g in grads.values())
        5.0
    """
    fn = "dirac_canaries"
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = sum(p.numel() for _, p in named)
    check_int(fn, "num_canaries", num_canaries, minimum=1, maximum=max(total, 1))
    check_positive(fn, "grad_norm", grad_norm)
    generator = generator if generator is not None else make_generator(None)
    chosen = torch.randperm(total, generator=generator)[:num_canaries]
    sizes = torch.tensor([p.numel() for _, p in named])
    starts = torch.cumsum(sizes, 0) - sizes
    param_index = torch.searchsorted(starts, chosen, right=True) - 1
    flat_index = chosen - starts[param_index]
    sign = torch.randint(2, (num_canaries,), generator=generator) * 2 - 1
    dtype = named[0][1].dtype
    flat = torch.cat([p.detach().reshape(-1).cpu().to(dtype) for _, p in named])
    return Canaries(
        kind="dirac",
        param_names=tuple(n for n, _ in named),
        param_index=param_index,
        flat_index=flat_index,
        sign=sign.to(dtype),
        grad_norm=float(grad_norm),
        initial=flat[chosen],
    )


class FeatureCanaryModel(nn.Module):
    """``model(x[:, :d]) + canary_head(x[:, d:])``: a model with a head for feature canaries.

    ``canary_head`` is a bias-free ``nn.Linear(m, num_classes)`` initialised to zero; only the
    canaries' indicator features reach it.
    """

    def __init__(self, model: nn.Module, num_features: int, num_all: int, num_classes: int):
        super().__init__()
        self.model = model
        self.num_features = num_features
        self.canary_head = nn.Linear(num_all, num_classes, bias=False)
        parameter = next(model.parameters(), None)
        if parameter is not None:
            self.canary_head.to(device=parameter.device, dtype=parameter.dtype)
        nn.init.zeros_(self.canary_head.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the wrapped model plus the canary head's."""
        d = self.num_features
        return self.model(x[:, :d]) + self.canary_head(x[:, d:])


def feature_canaries(
    num_canaries: int,
    num_features: int,
    num_classes: int,
    *,
    scale: float = 100.0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
) -> Canaries:
    r"""Gradient-space canaries that train through the real engine, on private indicator features.

    Canary i is the input :math:`(0_d, \text{scale}\,e_i)` with a random label; pad the data
    with :meth:`Canaries.pad`, train :meth:`Canaries.wrap` of the model on the data plus the
    included canaries, and score with :meth:`Canaries.scores` (see the module docstring).

    Args:
        num_canaries: :math:`m \ge 1`.
        num_features: d, the number of features of the data's (flat) inputs.
        num_classes: labels are drawn uniformly from ``range(num_classes)`` (>= 2).
        scale: the indicator value (> 0); a canary's gradient norm is about ``scale`` times the
            norm of (softmax - one-hot), so ``scale`` >> ``max_grad_norm`` tests clipping too.
        dtype: floating dtype of the inputs.
        device: device of the tensors.
        generator: a ``torch.Generator`` on any device (``None``: OS-seeded on ``device``).

    Returns:
        :class:`Canaries` of kind ``"feature"``.

    Raises:
        TypeError, ValueError: for non-int counts or a non-positive scale.

    Example:
        >>> c = feature_canaries(3, 4, 2, scale=5.0, generator=torch.Generator().manual_seed(0))
        >>> c.inputs
        tensor([[0., 0., 0., 0., 5., 0., 0.],
                [0., 0., 0., 0., 0., 5., 0.],
                [0., 0., 0., 0., 0., 0., 5.]])
        >>> tuple(c.pad(torch.ones(2, 4)).shape)
        (2, 7)
    """
    fn = "feature_canaries"
    check_int(fn, "num_canaries", num_canaries, minimum=1)
    check_int(fn, "num_features", num_features, minimum=1)
    check_int(fn, "num_classes", num_classes, minimum=2)
    check_positive(fn, "scale", scale)
    generator = generator if generator is not None else make_generator(None, device=device)
    inputs = torch.zeros(num_canaries, num_features + num_canaries, dtype=dtype, device=device)
    ids = torch.arange(num_canaries, device=device)
    inputs[ids, num_features + ids] = float(scale)
    targets = torch.randint(
        num_classes, (num_canaries,), generator=generator, device=generator.device
    ).to(device)
    return Canaries(
        kind="feature",
        inputs=inputs,
        targets=targets,
        num_classes=num_classes,
        num_features=num_features,
        canary_ids=ids.cpu(),
        num_all=num_canaries,
    )
