#!/usr/bin/env python3
"""Reference values for lightloop's convolution and pooling layers, from PyTorch.

Every tensor is filled by one formula both sides can compute:
    fill(count, salt, scale)[i] = scale * sin(0.731 * i + salt)
in row-major order (NCHW for batches, (out, in, k, k) for filters), in double.
For each case the script writes the forward output and the gradients of
    L = (1/n) * sum(h * G)            (G another fill)
or, for the stack, the mean softmax cross-entropy. Input gradients are
written per sample (times n): lightloop's backward signal is d l_s / d x_s,
and its parameter gradients are the mean over the batch, as here.

Regenerate (Debian's python3-torch):
    /usr/bin/python3 tests/layers/torch_layers.py > tests/layers/torch_layers.tsv
"""
import math
import sys

import torch
import torch.nn.functional as F


def fill(count, salt, scale):
    return torch.tensor([scale * math.sin(0.731 * i + salt) for i in range(count)],
                        dtype=torch.float64)


def tensor(shape, salt, scale):
    count = math.prod(shape)
    return fill(count, salt, scale).reshape(shape).requires_grad_(True)


def emit(case, quantity, t):
    values = t.detach().reshape(-1).tolist()
    print(f"{case}\t{quantity}\t" + " ".join(f"{v:.17g}" for v in values))


def conv_case(name, n, in_shape, out_channels, kernel, stride, padding, activation):
    c, h, w = in_shape
    x = tensor((n, c, h, w), 0.1, 1.0)
    weight = tensor((out_channels, c, kernel, kernel), 0.2, 0.4)
    bias = tensor((out_channels,), 0.3, 0.2)
    out = activation(F.conv2d(x, weight, bias, stride=stride, padding=padding))
    g = fill(out.numel(), 0.4, 1.0).reshape(out.shape)
    loss = (out * g).sum() / n
    loss.backward()
    emit(name, "output", out)
    emit(name, "input_gradient", x.grad * n)
    emit(name, "weight_gradient", weight.grad)
    emit(name, "bias_gradient", bias.grad)


def pool_case(name, n, in_shape, pool, window, stride):
    c, h, w = in_shape
    x = tensor((n, c, h, w), 0.1, 1.0)
    out = pool(x, window, stride)
    g = fill(out.numel(), 0.4, 1.0).reshape(out.shape)
    ((out * g).sum() / n).backward()
    emit(name, "output", out)
    emit(name, "input_gradient", x.grad * n)


def layer_norm_case(name, n, shape, activation):
    """LayerNorm over a whole sample of `shape`, with γ and β filled (not 1
    and 0) so that both show."""
    x = tensor((n, *shape), 0.1, 1.0)
    weight = tensor(shape, 0.2, 0.4)
    bias = tensor(shape, 0.3, 0.2)
    out = activation(F.layer_norm(x, shape, weight, bias, eps=1e-5))
    g = fill(out.numel(), 0.4, 1.0).reshape(out.shape)
    ((out * g).sum() / n).backward()
    emit(name, "output", out)
    emit(name, "input_gradient", x.grad * n)
    emit(name, "weight_gradient", weight.grad)
    emit(name, "bias_gradient", bias.grad)


def batch_norm_case(name, n, shape, activation):
    """BatchNorm2d in training mode (batch statistics; the running estimates
    move once, momentum 0.1), then in evaluation mode on the same input."""
    c = shape[0]
    x = tensor((n, *shape), 0.1, 1.0)
    norm = torch.nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        norm.weight.copy_(fill(c, 0.2, 0.4))
        norm.bias.copy_(fill(c, 0.3, 0.2))
    out = activation(norm(x))
    g = fill(out.numel(), 0.4, 1.0).reshape(out.shape)
    ((out * g).sum() / n).backward()
    emit(name, "output", out)
    emit(name, "input_gradient", x.grad * n)
    emit(name, "weight_gradient", norm.weight.grad)
    emit(name, "bias_gradient", norm.bias.grad)
    emit(name, "running_mean", norm.running_mean)
    emit(name, "running_var", norm.running_var)
    norm.eval()
    emit(name, "evaluation_output", activation(norm(x)))


def stack_case(name):
    """conv 1x6x6 -> 3x6x6 (k3 p1, tanh), max-pool 2, flatten, dense 27 -> 4,
    softmax cross-entropy over a batch of 3 with labels 0, 2, 3."""
    n = 3
    x = tensor((n, 1, 6, 6), 0.1, 1.0)
    conv_w = tensor((3, 1, 3, 3), 0.2, 0.4)
    conv_b = tensor((3,), 0.3, 0.2)
    dense_w = tensor((4, 27), 0.5, 0.3)
    dense_b = tensor((4,), 0.6, 0.1)
    h = torch.tanh(F.conv2d(x, conv_w, conv_b, padding=1))
    h = F.max_pool2d(h, 2).reshape(n, -1)
    logits = h @ dense_w.T + dense_b
    loss = F.cross_entropy(logits, torch.tensor([0, 2, 3]))
    loss.backward()
    emit(name, "output", logits)
    emit(name, "loss", loss.reshape(1))
    emit(name, "conv_weight_gradient", conv_w.grad)
    emit(name, "conv_bias_gradient", conv_b.grad)
    emit(name, "dense_weight_gradient", dense_w.grad)
    emit(name, "dense_bias_gradient", dense_b.grad)


def main():
    torch.set_default_dtype(torch.float64)
    print("# case\tquantity\tvalues: made by tests/layers/torch_layers.py with PyTorch "
          + torch.__version__)
    # Three channels in, stride 2, padding 1, non-square maps.
    conv_case("conv_s2_p1_tanh", 2, (3, 7, 6), 4, 3, 2, 1, torch.tanh)
    # An even kernel, no padding, no activation.
    conv_case("conv_k2_identity", 1, (2, 5, 5), 3, 2, 1, 0, lambda a: a)
    # PyTorch's example shape: 5x5, padding 2 keeps the map.
    conv_case("conv_k5_p2_tanh", 2, (1, 8, 8), 2, 5, 1, 2, torch.tanh)
    pool_case("max_pool_k3_s2", 2, (2, 7, 7), F.max_pool2d, 3, 2)
    pool_case("avg_pool_k2_s1", 1, (2, 4, 5), F.avg_pool2d, 2, 1)
    layer_norm_case("layer_norm_tanh", 3, (3, 2, 2), torch.tanh)
    batch_norm_case("batch_norm_tanh", 3, (2, 3, 3), torch.tanh)
    stack_case("stack")


if __name__ == "__main__":
    sys.exit(main())
