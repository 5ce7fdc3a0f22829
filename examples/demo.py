"""`make demo`: what research_ext does today, end to end, printed for a person to read."""

import numpy as np
import scipy.sparse.linalg
import torch

import research_ext.core as rcore


def main() -> None:
    rcore.seed_everything(0)
    n = 1000
    # A matrix-free 1-D Laplacian: only its product is written.
    lap = rcore.DenseOperator(
        torch.diag(torch.full((n,), 2.0, dtype=torch.float64))
        - torch.diag(torch.ones(n - 1, dtype=torch.float64), 1)
        - torch.diag(torch.ones(n - 1, dtype=torch.float64), -1),
        is_hermitian=True,
    )
    values = np.sort(scipy.sparse.linalg.eigsh(lap.to_scipy(), k=4, which="SA")[0])
    exact = 4 * np.sin(np.arange(1, 5) * np.pi / (2 * (n + 1))) ** 2
    print(
        f"research_ext core demo: lowest Laplacian eigenvalues (n={n}) via LinearOperator.to_scipy()"
    )
    print(f"{'k':>3} {'eigsh':>14} {'closed form':>14} {'rel. error':>11}")
    for k, (v, e) in enumerate(zip(values, exact, strict=True), start=1):
        print(f"{k:>3} {v:>14.8e} {e:>14.8e} {abs(v - e) / e:>11.1e}")


if __name__ == "__main__":
    main()
