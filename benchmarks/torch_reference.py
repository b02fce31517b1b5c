#!/usr/bin/python3
"""PyTorch reference for lightloop's Fashion-MNIST experiment.

Trains the paper's network (784-1024-1024-10, tanh, Glorot-uniform weights,
zero biases) with backprop (autograd) and with direct feedback alignment
(written by hand: e = softmax(a3) - y, delta_i = (e B_i^T) * (1 - h_i^2),
B = one Gaussian matrix with entries N(0, 1/10), sliced per hidden layer), on
the same data, batch size, optimizer and learning rate as
examples/light_in_the_loop.cpp and benchmarks/fashion_check.cpp.

Writes one line per (method, seed, epoch) with the test accuracy, as TSV:

    /usr/bin/python3 benchmarks/torch_reference.py --epochs 1 --seeds 0 1 2 \
        > benchmarks/torch_reference.tsv

Uses Debian's python3-torch and numpy only; reads the IDX files directly.
"""
import argparse
import gzip
import os
import sys
import time

import numpy as np
import torch


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    return values.reshape(dims)


def find(directory, stem):
    for suffix in ("", ".gz"):
        path = os.path.join(directory, stem + suffix)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(os.path.join(directory, stem) + "[.gz]")


def load(directory):
    def split(prefix):
        x = read_idx(find(directory, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(find(directory, f"{prefix}-labels-idx1-ubyte"))
        x = torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0)
        y = torch.from_numpy(y.astype(np.int64))
        return x, y
    return split("train"), split("t10k")


def make_layers(seed):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(784, 1024), torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 10)]
    for layer in layers:
        torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    return layers


def forward(layers, x):
    h1 = torch.tanh(layers[0](x))
    h2 = torch.tanh(layers[1](h1))
    return h1, h2, layers[2](h2)


def accuracy(layers, x, y):
    with torch.no_grad():
        return (forward(layers, x)[2].argmax(1) == y).float().mean().item()


def train(method, seed, args, data):
    (x_train, y_train), (x_test, y_test) = data
    layers = make_layers(seed)
    params = [p for layer in layers for p in layer.parameters()]
    if args.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=args.lr)
    else:
        opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    feedback = torch.randn(2048, 10, generator=generator) / np.sqrt(10.0)
    n = len(x_train)
    results = []
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(n, generator=generator)
        start = time.perf_counter()
        for b in range(0, n, args.batch):
            idx = order[b:b + args.batch]
            x, y = x_train[idx], y_train[idx]
            opt.zero_grad()
            if method == "bp":
                loss = torch.nn.functional.cross_entropy(forward(layers, x)[2], y)
                loss.backward()
            else:
                with torch.no_grad():
                    h1, h2, a3 = forward(layers, x)
                    e = torch.softmax(a3, 1)
                    e[torch.arange(len(y)), y] -= 1.0
                    projected = e @ feedback.T
                    d2 = projected[:, 1024:] * (1 - h2 * h2)
                    d1 = projected[:, :1024] * (1 - h1 * h1)
                    m = float(len(y))
                    for layer, delta, h in ((layers[0], d1, x), (layers[1], d2, h1), (layers[2], e, h2)):
                        layer.weight.grad = delta.T @ h / m
                        layer.bias.grad = delta.sum(0) / m
            opt.step()
        seconds = time.perf_counter() - start
        acc = accuracy(layers, x_test, y_test)
        results.append((epoch, acc, seconds))
        print(f"{method}\t{seed}\t{epoch}\t{acc:.4f}\t{n / seconds:.0f}", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["bp", "dfa"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.data)
    print(f"# torch {torch.__version__}, {args.threads} threads, {args.optimizer} lr {args.lr}, "
          f"batch {args.batch}, {args.epochs} epochs", flush=True)
    print("method\tseed\tepoch\ttest_accuracy\tsamples_per_second", flush=True)
    for method in args.methods:
        for seed in args.seeds:
            train(method, seed, args, data)


if __name__ == "__main__":
    sys.exit(main())
