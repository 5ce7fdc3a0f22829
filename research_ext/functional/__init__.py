"""Composable derivatives (jacobian, hessian, vjp, jvp, hvp, ...) and curvature operators."""

from research_ext.functional._coloring import ColoringPlan, color_hessian, color_jacobian
from research_ext.functional._curvature import (
    AbstractCurvatureOperator,
    FisherOperator,
    GGNOperator,
    HessianOperator,
    fisher_operator,
    ggn_operator,
    hessian_operator,
)
from research_ext.functional._estimators import Estimate, diagonal, trace
from research_ext.functional._sparse import (
    SparseHessian,
    SparseJacobian,
    hessian_sparsity,
    jacobian_sparsity,
    sparse_hessian,
    sparse_jacobian,
)
from research_ext.functional._spectrum import (
    EigvalshResult,
    SpectralDensity,
    eigvalsh,
    plot_spectral_density,
    spectral_density,
)

__all__ = [
    "AbstractCurvatureOperator",
    "ColoringPlan",
    "EigvalshResult",
    "Estimate",
    "FisherOperator",
    "GGNOperator",
    "HessianOperator",
    "SparseHessian",
    "SparseJacobian",
    "SpectralDensity",
    "color_hessian",
    "color_jacobian",
    "diagonal",
    "eigvalsh",
    "fisher_operator",
    "ggn_operator",
    "hessian_operator",
    "hessian_sparsity",
    "jacobian_sparsity",
    "plot_spectral_density",
    "sparse_hessian",
    "sparse_jacobian",
    "spectral_density",
    "trace",
]
