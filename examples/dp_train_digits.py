"""Private training on real bundled data: DP-SGD on scikit-learn's digits or breast cancer.

    python examples/dp_train_digits.py                       # digits, epsilon 3
    python examples/dp_train_digits.py --dataset breast_cancer --target-epsilon 1
    python examples/dp_train_digits.py --noise-multiplier 1.2 --clipping per_layer

Poisson-sampled batches, per-sample clipping, Gaussian noise calibrated to the target epsilon
(PRV accountant), a progress bar per epoch, and a last line with test accuracy and epsilon.
"""

import argparse
import pathlib
import sys

import torch
from torch import nn

import research_ext.privacy as rp
from research_ext.core import progress, seed_everything

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bundled_data import load_split  # noqa: E402


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "breast_cancer"], default="digits")
    privacy = parser.add_mutually_exclusive_group()
    privacy.add_argument("--target-epsilon", type=float, default=None)
    privacy.add_argument("--noise-multiplier", type=float, default=None)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256, help="expected (Poisson) batch size")
    parser.add_argument("--max-grad-norm", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=4.0)
    parser.add_argument("--clipping", choices=["flat", "per_layer", "adaptive"], default="flat")
    parser.add_argument("--grad-sample-mode", default="auto")
    parser.add_argument("--accountant", choices=["prv", "rdp", "pld"], default="prv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.target_epsilon is None and args.noise_multiplier is None:
        args.target_epsilon = 3.0

    generator = seed_everything(args.seed)
    x_train, y_train, x_test, y_test = load_split(args.dataset, args.seed)
    classes = int(y_train.max()) + 1
    model = nn.Sequential(nn.Linear(x_train.shape[1], 64), nn.Tanh(), nn.Linear(64, classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    sample_rate = min(1.0, args.batch_size / len(x_train))
    budget = (
        {"target_epsilon": args.target_epsilon, "epochs": args.epochs}
        if args.target_epsilon is not None
        else {"noise_multiplier": args.noise_multiplier}
    )
    engine = rp.DPSGD(
        model,
        optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=args.max_grad_norm,
        delta=args.delta,
        sample_rate=sample_rate,
        dataset_size=len(x_train),
        accountant=args.accountant,
        clipping=args.clipping,
        grad_sample_mode=args.grad_sample_mode,
        generator=generator,
        **budget,
    )
    loader = engine.loader((x_train, y_train))
    bar = progress(total=args.epochs * len(loader), desc=f"DP-SGD {args.dataset}", enable=None)
    for _ in range(args.epochs):
        model.train()
        for batch in loader:
            engine.step(batch)
            bar.update(1)
    bar.close()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(-1) == y_test).float().mean().item()
    print(
        f"{args.dataset}: test accuracy {accuracy:.3f}, epsilon {engine.epsilon():.2f} "
        f"(delta {args.delta:g}, noise multiplier {engine.noise_multiplier:.3f}, "
        f"{engine.steps} steps, accountant {args.accountant})"
    )
    return accuracy


if __name__ == "__main__":
    main()
