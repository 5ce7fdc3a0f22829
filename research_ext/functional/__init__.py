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
from research_ext.functional._hvp import HessianVectorProduct, hessian_vector_product, hvp, vhp
from research_ext.functional._jacobian import hessian, jacobian
from research_ext.functional._jet import derivatives, jet
from research_ext.functional._modules import module_function, module_hessian, module_jacobian
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
from research_ext.functional._transforms import jvp, linearize, vjp

__all__ = [
    "AbstractCurvatureOperator",
    "ColoringPlan",
    "EigvalshResult",
    "Estimate",
    "FisherOperator",
    "GGNOperator",
    "HessianOperator",
    "HessianVectorProduct",
    "SparseHessian",
    "SparseJacobian",
    "SpectralDensity",
    "color_hessian",
    "color_jacobian",
    "derivatives",
    "diagonal",
    "eigvalsh",
    "fisher_operator",
    "ggn_operator",
    "hessian",
    "hessian_operator",
    "hessian_sparsity",
    "hessian_vector_product",
    "hvp",
    "jacobian",
    "jacobian_sparsity",
    "jet",
    "jvp",
    "linearize",
    "module_function",
    "module_hessian",
    "module_jacobian",
    "plot_spectral_density",
    "sparse_hessian",
    "sparse_jacobian",
    "spectral_density",
    "trace",
    "vhp",
    "vjp",
]
