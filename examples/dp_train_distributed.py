"""Private training across processes: DP-SGD on scikit-learn's digits under torchrun.

Launch (2 processes on this machine; gloo on CPU, nccl when every rank has a GPU):

    torchrun --standalone --nproc-per-node 2 examples/dp_train_distributed.py --epochs 10

Each rank holds a disjoint shard of the training set and Poisson-samples it at the global rate q;
the clipped gradient sums are all-reduced and the noise is drawn once, on rank 0, so the run is
the same Gaussian mechanism as single-process DP-SGD on the whole set, and the epsilon printed
is the one the accountant computes for (sigma, q, steps). Run it without torchrun and it starts a
one-process group by itself. Rank 0 prints the test accuracy and epsilon after training.
"""

import argparse
import os
import pathlib
import sys
import tempfile

import torch
import torch.distributed as dist
from torch import nn

import research_ext.privacy as rp
from research_ext.core import progress

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bundled_data import load_split  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--target-epsilon", type=float, default=3.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--sample-rate", type=float, default=0.05)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started_here = not dist.is_initialized()
    if started_here and "RANK" not in os.environ:  # plain `python`: a one-process group
        store = tempfile.NamedTemporaryFile(delete=False).name
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    elif started_here:  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    device = (
        torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    torch.set_num_threads(1)
    try:
        x_train, y_train, x_test, y_test = load_split("digits", 0)
        torch.manual_seed(args.seed)  # same initial model everywhere (rank 0's is broadcast anyway)
        model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)).to(device)
        engine = rp.DistributedDPSGD(
            model,
            torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9),
            loss_fn=nn.CrossEntropyLoss(),
            max_grad_norm=args.max_grad_norm,
            delta=args.delta,
            sample_rate=args.sample_rate,
            dataset_size=len(x_train),
            target_epsilon=args.target_epsilon,
            epochs=args.epochs,
            generator=torch.Generator(device=device).manual_seed(args.seed),
        )
        data = (x_train.to(device), y_train.to(device))
        steps_per_epoch = max(1, round(1 / args.sample_rate))
        bar = progress(
            total=args.epochs * steps_per_epoch,
            desc=f"rank {rank}",
            enable=None if rank == 0 else False,
        )
        for _ in range(args.epochs):
            for batch in engine.loader(data, steps=steps_per_epoch):
                engine.step(batch)
                bar.update(1)
        bar.close()
        with torch.no_grad():
            accuracy = (
                (model(x_test.to(device)).argmax(-1) == y_test.to(device)).float().mean().item()
            )
        if rank == 0:
            print(
                f"world size {dist.get_world_size()}: test accuracy {accuracy:.3f}, "
                f"epsilon {engine.epsilon():.2f} at delta {args.delta:g} "
                f"(noise multiplier {engine.noise_multiplier:.3f}, {engine.steps} steps)"
            )
        return accuracy
    finally:
        if started_here:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
