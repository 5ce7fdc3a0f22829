"""A DP training script written for Opacus 1.5/1.6 (sklearn digits, an MLP, the Opacus idiom).

tests/privacy/test_opacus_compat.py runs this file as it is and with its import line changed to
``from research_ext.privacy import PrivacyEngine``; nothing else differs.
"""

import torch
from opacus import PrivacyEngine
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def data(dtype=torch.float32):
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=dtype)
    y = torch.tensor(digits.target)
    return TensorDataset(x[:1400], y[:1400]), (x[1400:], y[1400:])


def model_for(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).to(dtype)


def train(epochs=4, target_epsilon=4.0, seed=0, mode="hooks"):
    """Train privately; return (test accuracy, epsilon spent, noise multiplier)."""
    train_set, (x_test, y_test) = data()
    model = model_for(seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.5)
    loader = DataLoader(train_set, batch_size=64, shuffle=True)
    criterion = nn.CrossEntropyLoss()
    privacy_engine = PrivacyEngine()
    model, optimizer, loader = privacy_engine.make_private_with_epsilon(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        target_epsilon=target_epsilon,
        target_delta=1e-5,
        epochs=epochs,
        max_grad_norm=1.0,
        grad_sample_mode=mode,
    )
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).double().mean().item()
    return accuracy, privacy_engine.get_epsilon(1e-5), optimizer.noise_multiplier


def one_step(clipping="flat", max_grad_norm=0.5, mode="hooks"):
    """One step without noise or Poisson sampling (float64): return each p.grad * batch size."""
    train_set, _ = data(torch.float64)
    model = model_for(torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(train_set, batch_size=50)
    privacy_engine = PrivacyEngine()
    model, optimizer, loader = privacy_engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        poisson_sampling=False,
        clipping=clipping,
        grad_sample_mode=mode,
    )
    x, y = next(iter(loader))
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    return [p.grad * optimizer.expected_batch_size for p in model.parameters()]
