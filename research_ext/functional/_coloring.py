"""Graph colorings of sparsity patterns, and the plans that compress and recover sparse derivatives.

A coloring groups columns (or rows) that can share one Jacobian-vector product: structurally
orthogonal columns never meet in a row, so ``J @ (e_j + e_k)`` holds both columns' entries without
overlap. Colorings are computed once, on the host (a greedy pass over the pattern, like every
sparse-AD tool does), and stored in a :class:`ColoringPlan` whose recovery is a single device-side
gather; the plan is reused for every input with the same pattern.
"""

import warnings
from collections import Counter
from typing import Any, final

import numpy as np
import scipy.sparse
import torch

from research_ext.core import check_one_of, format_message

__all__ = ["ColoringPlan", "color_hessian", "color_jacobian"]


def _pattern(
    fn: str, sparsity: Any, shape: tuple[int, int] | None = None
) -> scipy.sparse.csr_array:
    """The pattern of a dense or sparse torch tensor as a boolean scipy CSR array."""
    if not isinstance(sparsity, torch.Tensor):
        raise TypeError(
            format_message(fn, "sparsity", "a dense or sparse 2-D torch.Tensor", type(sparsity))
        )
    if sparsity.ndim != 2:
        raise ValueError(
            f"{fn}: `sparsity` must be 2-D (outputs, inputs), got shape {tuple(sparsity.shape)}"
        )
    if shape is not None and tuple(sparsity.shape) != shape:
        raise ValueError(
            f"{fn}: `sparsity` has the wrong shape: expected {shape}, got {tuple(sparsity.shape)}"
        )
    if sparsity.layout == torch.strided:
        rows, cols = (sparsity != 0).nonzero(as_tuple=True)
    else:
        coo = sparsity.to_sparse_coo().coalesce()
        keep = coo.values() != 0
        rows, cols = coo.indices()[:, keep]
    m, n = sparsity.shape
    data = np.ones(rows.numel(), dtype=bool)
    rows_np, cols_np = rows.cpu().numpy(), cols.cpu().numpy()
    return scipy.sparse.csr_array((data, (rows_np, cols_np)), shape=(m, n))


def _greedy_in_order(adjacency: scipy.sparse.csr_array, order: np.ndarray) -> np.ndarray:
    n = adjacency.shape[0]
    indptr, indices = adjacency.indptr, adjacency.indices
    colors = np.full(n, -1, dtype=np.int64)
    mark = np.full(n + 1, -1, dtype=np.int64)
    for v in order:
        used = colors[indices[indptr[v] : indptr[v + 1]]]
        mark[used[used >= 0]] = v
        c = 0
        while mark[c] == v:
            c += 1
        colors[v] = c
    return colors


def _greedy(adjacency: scipy.sparse.csr_array) -> np.ndarray:
    """Greedy distance-1 coloring: the better of natural and largest-degree-first orders.

    Natural order is optimal on bands; largest-first often wins on irregular patterns. Both are
    cheap next to the products they save, so both are tried.
    """
    n = adjacency.shape[0]
    orders = (np.arange(n), np.argsort(-np.diff(adjacency.indptr), kind="stable"))
    return min((_greedy_in_order(adjacency, o) for o in orders), key=lambda c: c.max(initial=-1))


def _intersection_graph(pattern: scipy.sparse.csr_array) -> scipy.sparse.csr_array:
    """Columns adjacent when they share a row (``S^T S`` without its diagonal)."""
    p = pattern.astype(np.int32)
    graph = (p.T @ p).tocsr()
    graph.setdiag(0)
    graph.eliminate_zeros()
    return graph


def _star_coloring(graph: scipy.sparse.csr_array) -> np.ndarray:
    """Greedy star coloring: distance-1 proper, and every path on 4 vertices uses >= 3 colors."""
    n = graph.shape[0]
    indptr, indices = graph.indptr, graph.indices
    neighbors = [indices[indptr[v] : indptr[v + 1]].tolist() for v in range(n)]
    order = np.argsort(-np.diff(indptr), kind="stable")
    colors = [-1] * n
    counts: list[Counter[int]] = [Counter() for _ in range(n)]  # colored neighbours of x, by color
    for v in order.tolist():
        forbidden: set[int] = set()
        around = Counter(colors[w] for w in neighbors[v] if colors[w] >= 0)
        for w in neighbors[v]:
            cw = colors[w]
            if cw < 0:
                continue
            forbidden.add(cw)
            for x in neighbors[w]:
                cx = colors[x]
                if x == v or cx < 0:
                    continue
                # v-w-x-y with c(y) = c(w), or u-v-w-x with c(u) = c(w): c(v) = c(x) would make
                # a two-colored path on four vertices.
                if counts[x][cw] >= 2 or around[cw] >= 2:
                    forbidden.add(cx)
        c = 0
        while c in forbidden:
            c += 1
        colors[v] = c
        for w in neighbors[v]:
            counts[w][c] += 1
    return np.asarray(colors, dtype=np.int64)


@final
class ColoringPlan:
    """A coloring of a sparsity pattern and the gather that recovers entries from products.

    ``kind="column"``: ``B = J S`` (one JVP per color, ``S[j, c] = [color_j = c]``) and
    ``J_ij = B[i, color_j]``. ``kind="row"``: ``B = S^T J`` (one VJP per color) and
    ``J_ij = B[color_i, j]``. ``kind="star"`` (symmetric Hessians): ``B = H S`` and
    ``H_ij = B[i, color_j]`` when ``j`` is the only neighbour of ``i`` with its color, otherwise
    ``B[j, color_i]`` (a star coloring guarantees one of the two).

    Attributes:
        kind: ``"column"``, ``"row"`` or ``"star"``.
        shape: ``(m, n)`` of the pattern.
        rows, cols: ``(nnz,)`` int64 indices of the pattern, sorted row-major.
        colors: ``(n,)`` (or ``(m,)`` for ``"row"``) int64 color of each column (row).
        num_colors: number of colors = number of products per evaluation.
    """

    def __init__(self, kind: str, pattern: scipy.sparse.csr_array, colors: np.ndarray) -> None:
        self.kind = kind
        self.shape: tuple[int, int] = (int(pattern.shape[0]), int(pattern.shape[1]))
        coo = pattern.tocoo()
        order = np.lexsort((coo.col, coo.row))
        rows, cols = coo.row[order].astype(np.int64), coo.col[order].astype(np.int64)
        self.rows, self.cols = torch.from_numpy(rows), torch.from_numpy(cols)
        self.colors = torch.from_numpy(colors)
        self.num_colors = int(colors.max()) + 1 if colors.size else 0
        if kind == "column":
            gather = (torch.from_numpy(colors[cols]), self.rows)
        elif kind == "row":
            gather = (torch.from_numpy(colors[rows]), self.cols)
        else:
            count = np.zeros((self.shape[0], max(self.num_colors, 1)), dtype=np.int64)
            np.add.at(count, (rows, colors[cols]), 1)
            direct = count[rows, colors[cols]] == 1
            pick_c = np.where(direct, colors[cols], colors[rows])
            pick_i = np.where(direct, rows, cols)
            gather = (torch.from_numpy(pick_c), torch.from_numpy(pick_i))
        self._gather = gather
        self._on: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    @property
    def nnz(self) -> int:
        """Number of structural nonzeros."""
        return int(self.rows.numel())

    def _tensors(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        key = (device, dtype)
        if key not in self._on:
            size = self.shape[0] if self.kind == "row" else self.shape[1]
            seeds = torch.zeros((self.num_colors, size), dtype=dtype, device=device)
            seeds[self.colors.to(device), torch.arange(size, device=device)] = 1
            indices = torch.stack([self.rows, self.cols]).to(device)
            c, i = (t.to(device) for t in self._gather)
            self._on[key] = (seeds, indices, c, i)
        return self._on[key]

    def seeds(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(num_colors, n)`` (``(num_colors, m)`` for ``"row"``) 0/1 seed vectors, one per color."""
        return self._tensors(device, dtype)[0]

    def recover(self, compressed: torch.Tensor, layout: str = "coo") -> torch.Tensor:
        """The sparse ``(m, n)`` matrix from the ``(num_colors, n or m)`` compressed products.

        Args:
            compressed: one product per color, stacked: ``(num_colors, m)`` for ``"column"``
                (JVPs), ``(num_colors, n)`` for ``"row"`` (VJPs) and ``"star"`` (HVPs).
            layout: ``"coo"`` or ``"csr"``.

        Returns:
            A torch sparse tensor of shape ``(m, n)`` with the compressed dtype and device.
        """
        _, indices, c, i = self._tensors(compressed.device, compressed.dtype)
        values = compressed[c, i]
        out = torch.sparse_coo_tensor(
            indices, values, self.shape, is_coalesced=True, check_invariants=False
        )
        if layout == "coo":
            return out
        with warnings.catch_warnings():  # torch flags every CSR construction as "beta"
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return out.to_sparse_csr()

    def __repr__(self) -> str:
        return (
            f"ColoringPlan(kind={self.kind!r}, shape={self.shape}, nnz={self.nnz}, "
            f"num_colors={self.num_colors})"
        )


def color_jacobian(sparsity: torch.Tensor, mode: str = "auto") -> ColoringPlan:
    """Color the columns (or rows) of a Jacobian sparsity pattern for compressed evaluation.

    Distance-1 coloring of the column intersection graph (columns adjacent when they share a
    row), greedy in natural and in largest-degree-first order, keeping the fewer colors; ``mode="row"`` colors ``J^T`` instead. The number
    of colors is at least the most nonzeros in any row (column) and, for a band of width ``w``,
    equals ``w``.

    Args:
        sparsity: ``(m, n)`` pattern as a dense (nonzero = structural entry) or sparse tensor.
        mode: ``"column"`` (forward mode, one JVP per color), ``"row"`` (reverse mode, one VJP
            per color) or ``"auto"`` (whichever needs fewer colors; columns on a tie).

    Returns:
        A reusable :class:`ColoringPlan`.

    Raises:
        TypeError: if ``sparsity`` is not a tensor.
        ValueError: if ``sparsity`` is not 2-D or ``mode`` is unknown.

    Example:
        >>> band = torch.ones(6, 6).triu(-1).tril(1)  # tridiagonal
        >>> color_jacobian(band).num_colors
        3

    References:
        Curtis, Powell, Reid, "On the estimation of sparse Jacobian matrices", 1974. Gebremedhin,
        Manne, Pothen, "What color is your Jacobian? Graph coloring for computing derivatives",
        SIAM Review 2005.
    """
    fn = "color_jacobian"
    check_one_of(fn, "mode", mode, ("auto", "column", "row"))
    pattern = _pattern(fn, sparsity)
    plans = []
    if mode in ("auto", "column"):
        plans.append(ColoringPlan("column", pattern, _greedy(_intersection_graph(pattern))))
    if mode in ("auto", "row"):
        transposed = pattern.T.tocsr()
        plans.append(ColoringPlan("row", pattern, _greedy(_intersection_graph(transposed))))
    return min(plans, key=lambda plan: plan.num_colors)


def color_hessian(sparsity: torch.Tensor) -> ColoringPlan:
    """Star-color a symmetric Hessian sparsity pattern for direct recovery from HVPs.

    A star coloring is a proper coloring of the adjacency graph (``i ~ j`` when ``H_ij != 0``)
    in which every path on four vertices uses at least three colors; it lets each entry be read
    off one compressed product ``H S`` with no linear solve, with fewer colors than the
    distance-2 coloring a plain column coloring of ``H`` would need.

    Args:
        sparsity: ``(n, n)`` pattern (dense or sparse tensor); it is symmetrized and its diagonal
            is always included.

    Returns:
        A reusable :class:`ColoringPlan` with ``kind="star"``.

    Raises:
        TypeError: if ``sparsity`` is not a tensor.
        ValueError: if ``sparsity`` is not square.

    Example:
        >>> tri = torch.ones(8, 8).triu(-1).tril(1)
        >>> color_hessian(tri).num_colors
        3

    References:
        Coleman, Moré, "Estimation of sparse Hessian matrices and graph coloring problems",
        Mathematical Programming 1984. Gebremedhin, Manne, Pothen, SIAM Review 2005 (section 4).
    """
    fn = "color_hessian"
    pattern = _pattern(fn, sparsity)
    if pattern.shape[0] != pattern.shape[1]:
        raise ValueError(format_message(fn, "sparsity", "square", f"shape {pattern.shape}"))
    n = pattern.shape[0]
    sym = (pattern + pattern.T + scipy.sparse.eye_array(n, dtype=bool, format="csr")).astype(bool)
    graph = sym.tocsr().astype(np.int32)
    graph.setdiag(0)
    graph.eliminate_zeros()
    return ColoringPlan("star", sym.tocsr(), _star_coloring(graph))
