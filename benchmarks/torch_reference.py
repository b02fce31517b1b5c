#!/usr/bin/python3
"""PyTorch reference for lightloop's Fashion-MNIST experiment.

Trains the paper's network (784-1024-1024-10, tanh, Glorot-uniform weights,
zero biases) with backprop (autograd) and with direct feedback alignment
(written by hand: e = softmax(a3) - y, delta_i = (e B_i^T) * (1 - h_i^2),
B = one Gaussian matrix with entries N(0, 1/10), sliced per hidden layer), on
the same data, batch size, optimizer and learning rate as
examples/light_in_the_loop.cpp and benchmarks/fashion_check.cpp.

With --model cnn it trains the CNN of examples/fashion_cnn.cpp instead (conv
1->32 5x5 pad 2, tanh, max-pool 2; conv 32->64 5x5 pad 2, tanh, max-pool 2;
dense 3136->1024 tanh; dense 1024->10; Glorot-uniform weights with PyTorch's
fans for convolutions, zero biases), with backprop and with DFA by hand: e
projected once by B (38656 x 10, N(0, 1/10)) into both convolutions' maps and
the hidden dense layer, each convolution's weight gradient from its own input
and signal (torch.nn.grad.conv2d_weight), nothing back through a convolution.

Writes one line per (method, seed, epoch) with the test accuracy, as TSV:

    /usr/bin/python3 benchmarks/torch_reference.py --epochs 1 --seeds 0 1 2 \
        > benchmarks/torch_reference.tsv
    /usr/bin/python3 benchmarks/torch_reference.py --model cnn --epochs 3 --seeds 0 1 2 \
        > benchmarks/torch_cnn_reference.tsv

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


def make_cnn_layers(seed):
    torch.manual_seed(seed)
    layers = [torch.nn.Conv2d(1, 32, 5, padding=2), torch.nn.Conv2d(32, 64, 5, padding=2),
              torch.nn.Linear(3136, 1024), torch.nn.Linear(1024, 10)]
    for layer in layers:
        torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    return layers


def cnn_forward(layers, x):
    """Hidden outputs (the convolutions' before pooling) and logits."""
    pool = torch.nn.functional.max_pool2d
    h1 = torch.tanh(layers[0](x.reshape(-1, 1, 28, 28)))
    h2 = torch.tanh(layers[1](pool(h1, 2)))
    h3 = torch.tanh(layers[2](pool(h2, 2).flatten(1)))
    return h1, h2, h3, layers[3](h3)


def cnn_dfa_gradients(layers, x, y, feedback):
    pool = torch.nn.functional.max_pool2d
    h1, h2, h3, logits = cnn_forward(layers, x)
    e = torch.softmax(logits, 1)
    e[torch.arange(len(y)), y] -= 1.0
    projected = e @ feedback.T
    d1 = projected[:, :25088].reshape(h1.shape) * (1 - h1 * h1)
    d2 = projected[:, 25088:37632].reshape(h2.shape) * (1 - h2 * h2)
    d3 = projected[:, 37632:] * (1 - h3 * h3)
    m = float(len(y))
    image = x.reshape(-1, 1, 28, 28)
    for layer, delta, inp in ((layers[0], d1, image), (layers[1], d2, pool(h1, 2))):
        layer.weight.grad = torch.nn.grad.conv2d_weight(inp, layer.weight.shape, delta,
                                                        padding=2) / m
        layer.bias.grad = delta.sum((0, 2, 3)) / m
    for layer, delta, inp in ((layers[2], d3, pool(h2, 2).flatten(1)), (layers[3], e, h3)):
        layer.weight.grad = delta.T @ inp / m
        layer.bias.grad = delta.sum(0) / m


def forward(layers, x):
    h1 = torch.tanh(layers[0](x))
    h2 = torch.tanh(layers[1](h1))
    return h1, h2, layers[2](h2)


def accuracy(layers, x, y, cnn):
    with torch.no_grad():
        if cnn:
            correct = sum((cnn_forward(layers, x[i:i + 1000])[3].argmax(1) == y[i:i + 1000]).sum().item()
                          for i in range(0, len(x), 1000))
            return correct / len(x)
        return (forward(layers, x)[2].argmax(1) == y).float().mean().item()


def train(method, seed, args, data):
    (x_train, y_train), (x_test, y_test) = data
    cnn = args.model == "cnn"
    layers = make_cnn_layers(seed) if cnn else make_layers(seed)
    params = [p for layer in layers for p in layer.parameters()]
    if args.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=args.lr)
    else:
        opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    feedback = torch.randn(38656 if cnn else 2048, 10, generator=generator) / np.sqrt(10.0)
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
                logits = cnn_forward(layers, x)[3] if cnn else forward(layers, x)[2]
                loss = torch.nn.functional.cross_entropy(logits, y)
                loss.backward()
            elif cnn:
                with torch.no_grad():
                    cnn_dfa_gradients(layers, x, y, feedback)
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
        acc = accuracy(layers, x_test, y_test, cnn)
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
    parser.add_argument("--methods", nargs="+", default=["bp", "dfa"], choices=["bp", "dfa"])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.data)
    print(f"# torch {torch.__version__}, {args.model}, {args.threads} threads, "
          f"{args.optimizer} lr {args.lr}, "
          f"batch {args.batch}, {args.epochs} epochs", flush=True)
    print("method\tseed\tepoch\ttest_accuracy\tsamples_per_second", flush=True)
    for method in args.methods:
        for seed in args.seeds:
            train(method, seed, args, data)


if __name__ == "__main__":
    sys.exit(main())
