"""Real data that ships with scikit-learn (nothing is downloaded), split and standardized.

Shared by the examples: a fixed permutation from ``seed``, an 80/20 train/test split, and
features standardized with the training split's mean and std.
"""

import torch

DATASETS = ("digits", "breast_cancer")


def load_split(
    name: str = "digits", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: float32 features, int64 labels."""
    from sklearn import datasets

    if name not in DATASETS:
        raise ValueError(f"load_split: `name` must be one of {DATASETS}, got name={name!r}")
    data = datasets.load_digits() if name == "digits" else datasets.load_breast_cancer()
    x = torch.as_tensor(data.data, dtype=torch.float32)
    y = torch.as_tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    n_train = int(0.8 * len(x))
    mean, std = x[:n_train].mean(0), x[:n_train].std(0).clamp_min(1e-3)
    x = (x - mean) / std
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]
