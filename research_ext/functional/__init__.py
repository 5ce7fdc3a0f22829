"""Composable derivatives (jacobian, hessian, vjp, jvp, hvp, ...) and curvature operators."""

__all__: list[str] = []
