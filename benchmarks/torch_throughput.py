#!/usr/bin/python3
"""PyTorch peer for benchmarks/throughput.cpp: training samples per second of the
paper's network (784-1024-1024-10, tanh, float32, SGD momentum 0.9) and of the
CNN (conv 1->32 5x5 pad 2, tanh, max-pool 2; conv 32->64 5x5 pad 2, tanh,
max-pool 2; dense 3136->1024 tanh; dense 1024->10) with backprop (autograd) and
with DFA (by hand, as in torch_reference.py; the CNN's convolutions get their
weight gradients from torch.nn.grad.conv2d_weight, with no backward-data
convolution), per batch size and thread count, on random data, from the median
step time. Prints TSV: method (the CNN's as cnn_bp, cnn_dfa), batch, threads,
samples/s,
and the thread layout that gave it; and per batch and thread count an
"sgemm" line with the GFLOP/s of the first layer's GEMM in the same run.

--precision fp32,bf16 adds PyTorch's two bf16 modes of the paper's network
with backprop: bf16_bp (parameters, gradients and momentum in bf16: PyTorch's
fastest) and autocast_bp (fp32 parameters, products under
torch.autocast("cpu", dtype=torch.bfloat16): its mixed, accurate mode); with
the CNN's methods, the CNN's: cnn_bf16_bp and cnn_autocast_bp. Both run on
oneDNN in Debian's torch.

    /usr/bin/python3 benchmarks/torch_throughput.py > torch_throughput.tsv
    ./build/release/benchmarks/throughput --torch torch_throughput.tsv
    /usr/bin/python3 benchmarks/torch_throughput.py --batches 128 \
        --methods cnn_bp cnn_dfa > torch_cnn.tsv
    ./build/release/benchmarks/throughput --models cnn --batches 128 --torch torch_cnn.tsv
    /usr/bin/python3 benchmarks/torch_throughput.py --batches 128 --precision fp32,bf16 \
        > torch_bf16.tsv
    ./build/release/benchmarks/throughput --batches 128 --precision fp32,bf16 \
        --methods bp,dfa,holographic --torch torch_bf16.tsv
    /usr/bin/python3 benchmarks/torch_throughput.py --batches 128 --precision fp32,bf16 \
        --methods cnn_bp cnn_dfa > torch_cnn_bf16.tsv
    ./build/release/benchmarks/throughput --models cnn --batches 128 --precision fp32,bf16 \
        --methods bp,dfa,holographic --torch torch_cnn_bf16.tsv

Debian's torch calls the system BLAS (OpenBLAS, a pthreads build), which starts
its own threads whatever torch.set_num_threads says. With T threads to spend,
torch's OpenMP ops on T threads each calling a T-thread OpenBLAS put T*T threads
on T cores: on this 2-core machine that layout runs at half of torch's 1-thread
speed. So each budget T runs every layout that spends it -- (torch T, BLAS T),
(torch 1, BLAS T), (torch T, BLAS 1) -- each in a child process with
OMP_NUM_THREADS and OPENBLAS_NUM_THREADS set before torch loads, and the peer
is the best layout per method and batch. OPENBLAS_CORETYPE is passed through
from the caller's environment (set it as for lightloop if OpenBLAS misdetects
the CPU).
"""
import argparse
import math
import os
import subprocess
import sys
import time


def child(threads, args):
    import torch
    torch.set_num_threads(threads)
    for batch in args.batches:
        for method in args.methods:
            rate = measure(torch, method, batch, args.seconds)
            print(f"{method}\t{batch}\t{rate:.1f}", flush=True)
        print(f"sgemm\t{batch}\t{sgemm_gflops(torch, batch, args.seconds / 3):.1f}", flush=True)


def sgemm_gflops(torch, batch, seconds):
    """GFLOP/s of the first layer's GEMM (batch x 784 times 784 x 1024), the
    machine's speed during this run: throughput.cpp times the same shape in
    its own run and scales the comparison by the two."""
    x = torch.rand(batch, 784)
    w = torch.rand(1024, 784)
    out = torch.empty(batch, 1024)
    for _ in range(3):
        torch.mm(x, w.T, out=out)
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        before = time.perf_counter()
        torch.mm(x, w.T, out=out)
        times.append(time.perf_counter() - before)
    times.sort()
    return 2.0 * batch * 784 * 1024 / times[len(times) // 2] * 1e-9


def layouts(budget):
    """(torch threads, OpenBLAS threads) pairs that use `budget` cores."""
    out = [(budget, budget)]
    if budget > 1:
        out += [(1, budget), (budget, 1)]
    return out


def step_bp(torch, layers, opt, x, y):
    opt.zero_grad()
    h = x
    for i, layer in enumerate(layers):
        h = layer(h)
        if i < 2:
            h = torch.tanh(h)
    torch.nn.functional.cross_entropy(h, y).backward()
    opt.step()


def step_dfa(torch, layers, opt, x, y, feedback):
    opt.zero_grad()
    with torch.no_grad():
        h1 = torch.tanh(layers[0](x))
        h2 = torch.tanh(layers[1](h1))
        e = torch.softmax(layers[2](h2), 1)
        e[torch.arange(len(y)), y] -= 1.0
        projected = e @ feedback.T
        d1 = projected[:, :1024] * (1 - h1 * h1)
        d2 = projected[:, 1024:] * (1 - h2 * h2)
        m = float(len(y))
        for layer, delta, h in ((layers[0], d1, x), (layers[1], d2, h1), (layers[2], e, h2)):
            layer.weight.grad = delta.T @ h / m
            layer.bias.grad = delta.sum(0) / m
    opt.step()


def cnn_layers(torch):
    return [torch.nn.Conv2d(1, 32, 5, padding=2), torch.nn.Conv2d(32, 64, 5, padding=2),
            torch.nn.Linear(3136, 1024), torch.nn.Linear(1024, 10)]


def cnn_forward(torch, layers, x):
    """The CNN's hidden outputs (after tanh, before pooling for the
    convolutions) and its logits."""
    pool = torch.nn.functional.max_pool2d
    h1 = torch.tanh(layers[0](x))
    h2 = torch.tanh(layers[1](pool(h1, 2)))
    h3 = torch.tanh(layers[2](pool(h2, 2).flatten(1)))
    return h1, h2, h3, layers[3](h3)


def step_cnn_bp(torch, layers, opt, x, y):
    opt.zero_grad()
    logits = cnn_forward(torch, layers, x)[3]
    torch.nn.functional.cross_entropy(logits.float(), y).backward()
    opt.step()


def step_cnn_autocast_bp(torch, layers, opt, x, y):
    """The CNN's backprop with fp32 parameters and bf16 products."""
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = cnn_forward(torch, layers, x)[3]
    torch.nn.functional.cross_entropy(logits.float(), y).backward()
    opt.step()


def step_cnn_dfa(torch, layers, opt, x, y, feedback):
    """DFA on the CNN: e projected once into both convolutions' feature maps
    and the hidden dense layer, as lightloop's dfa does."""
    opt.zero_grad()
    pool = torch.nn.functional.max_pool2d
    with torch.no_grad():
        h1, h2, h3, logits = cnn_forward(torch, layers, x)
        e = torch.softmax(logits, 1)
        e[torch.arange(len(y)), y] -= 1.0
        projected = e @ feedback.T
        n = len(y)
        d1 = projected[:, :25088].reshape(h1.shape) * (1 - h1 * h1)
        d2 = projected[:, 25088:37632].reshape(h2.shape) * (1 - h2 * h2)
        d3 = projected[:, 37632:] * (1 - h3 * h3)
        m = float(n)
        for layer, delta, inp in ((layers[0], d1, x), (layers[1], d2, pool(h1, 2))):
            layer.weight.grad = torch.nn.grad.conv2d_weight(inp, layer.weight.shape, delta,
                                                            padding=2) / m
            layer.bias.grad = delta.sum((0, 2, 3)) / m
        flat = pool(h2, 2).flatten(1)
        for layer, delta, inp in ((layers[2], d3, flat), (layers[3], e, h3)):
            layer.weight.grad = delta.T @ inp / m
            layer.bias.grad = delta.sum(0) / m
    opt.step()


def step_autocast_bp(torch, layers, opt, x, y):
    """Backprop with fp32 parameters and bf16 products (torch.autocast)."""
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = x
        for i, layer in enumerate(layers):
            h = layer(h)
            if i < 2:
                h = torch.tanh(h)
    torch.nn.functional.cross_entropy(h.float(), y).backward()
    opt.step()


def measure(torch, method, batch, seconds):
    if method.startswith("cnn_"):
        return measure_cnn(torch, method, batch, seconds)
    torch.manual_seed(0)
    layers = [torch.nn.Linear(784, 1024), torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 10)]
    if method in ("bf16_bp", "autocast_bp"):
        x = torch.rand(batch, 784)
        y = torch.randint(0, 10, (batch,))
        if method == "bf16_bp":
            # Everything in bf16: parameters, activations, gradients, momentum.
            layers = [layer.to(torch.bfloat16) for layer in layers]
            x = x.to(torch.bfloat16)
        params = [p for layer in layers for p in layer.parameters()]
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        step = (lambda: step_bp(torch, layers, opt, x, y)) if method == "bf16_bp" else \
            (lambda: step_autocast_bp(torch, layers, opt, x, y))
        return median_rate(step, batch, seconds)
    params = [p for layer in layers for p in layer.parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x = torch.rand(batch, 784)
    y = torch.randint(0, 10, (batch,))
    feedback = torch.randn(2048, 10) / 10 ** 0.5
    step = (lambda: step_bp(torch, layers, opt, x, y)) if method == "bp" else \
        (lambda: step_dfa(torch, layers, opt, x, y, feedback))
    return median_rate(step, batch, seconds)


def measure_cnn(torch, method, batch, seconds):
    torch.manual_seed(0)
    layers = cnn_layers(torch)
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    if method == "cnn_bf16_bp":
        layers = [layer.to(torch.bfloat16) for layer in layers]
        x = x.to(torch.bfloat16)
    params = [p for layer in layers for p in layer.parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    feedback = torch.randn(25088 + 12544 + 1024, 10) / 10 ** 0.5
    if method in ("cnn_bp", "cnn_bf16_bp"):
        step = lambda: step_cnn_bp(torch, layers, opt, x, y)
    elif method == "cnn_autocast_bp":
        step = lambda: step_cnn_autocast_bp(torch, layers, opt, x, y)
    else:
        step = lambda: step_cnn_dfa(torch, layers, opt, x, y, feedback)
    return median_rate(step, batch, seconds)


def median_rate(step, batch, seconds):
    for _ in range(3):
        step()
    # The median step, as throughput.cpp reports: a neighbour's burst on this
    # shared machine moves neither side's figure.
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        before = time.perf_counter()
        step()
        times.append(time.perf_counter() - before)
    times.sort()
    return batch / times[len(times) // 2]


def positive(kind):
    """An argparse type: a number of `kind` above zero (and finite)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'")
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a positive number, got '{text}'")
        return value
    return parse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=positive(int), nargs="+", default=[32, 128, 512])
    parser.add_argument("--threads", type=positive(int), nargs="+", default=[1, 2])
    parser.add_argument("--methods", nargs="+", default=["bp", "dfa"],
                        choices=["bp", "dfa", "cnn_bp", "cnn_dfa", "bf16_bp", "autocast_bp",
                                 "cnn_bf16_bp", "cnn_autocast_bp"])
    parser.add_argument("--precision", default="fp32",
                        help="comma-separated: fp32, bf16 (adds bf16_bp and autocast_bp)")
    parser.add_argument("--seconds", type=positive(float), default=1.5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    precisions = args.precision.split(",")
    if any(p not in ("fp32", "bf16") for p in precisions):
        parser.error(f"--precision: expected fp32 and/or bf16, got {args.precision}")
    if "bf16" in precisions and not args.child:
        cnn = any(m.startswith("cnn_") for m in args.methods)
        if "fp32" not in precisions:
            args.methods = []
        args.methods = args.methods + (["cnn_bf16_bp", "cnn_autocast_bp"] if cnn
                                       else ["bf16_bp", "autocast_bp"])
    if args.child:
        child(args.threads[0], args)
        return
    print("# method batch threads samples_per_second layout", flush=True)
    for budget in args.threads:
        best = {}
        for torch_threads, blas_threads in layouts(budget):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(blas_threads),
                       OMP_NUM_THREADS=str(torch_threads))
            command = [sys.executable, __file__, "--child", "--threads", str(torch_threads),
                       "--seconds", str(args.seconds), "--batches", *map(str, args.batches),
                       "--methods", *args.methods]
            result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            layout = f"torch={torch_threads},openblas={blas_threads}"
            for line in result.stdout.splitlines():
                method, batch, rate = line.split("\t")
                print(f"# {method}\t{batch}\t{budget}\t{rate}\t{layout}", file=sys.stderr,
                      flush=True)
                key = (method, int(batch))
                if key not in best or float(rate) > best[key][0]:
                    best[key] = (float(rate), layout)
        for (method, batch), (rate, layout) in sorted(best.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            print(f"{method}\t{batch}\t{budget}\t{rate:.1f}\t{layout}", flush=True)


if __name__ == "__main__":
    main()
