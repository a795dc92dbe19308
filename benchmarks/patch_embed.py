"""ViT-B/32's patch embedding (a 32×32 convolution with stride 32) forward and weight gradient, four ways, on CUDA.

Not a test. cuDNN's kernels for it were among the busiest of the compiled student step on an H200 (about 1.5 ms
forward and 2.8 ms weight gradient per batch of 256 under the profiler), though as a matrix product it is only
(256·49 × 3072) · (3072 × 768). Times, in one process, on the same input and weights:
  - cuDNN as a run calls it (its heuristics);
  - cuDNN with torch.backends.cudnn.benchmark (it times its algorithms once per shape);
  - cuDNN on a channels-last input;
  - the same product as a matmul of the unfolded patches.
Usage: python benchmarks/patch_embed.py [--batch-size 256] [--steps 20]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


def conv(x, weight, bias):
    return F.conv2d(x, weight, bias, stride=weight.shape[-1])


def as_matmul(x, weight, bias):
    n, c, h, w = x.shape
    p = weight.shape[-1]
    patches = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n * (h // p) * (w // p), -1)
    out = F.linear(patches, weight.reshape(len(weight), -1), bias)
    return out.reshape(n, h // p, w // p, -1).permute(0, 3, 1, 2)


def timed(fn, x, weight, bias, steps) -> float:
    """Milliseconds per forward and weight gradient, bf16 autocast, after 3 warm-up steps."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(steps + 3):
        if i == 3:
            start.record()
        weight.grad = bias.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fn(x, weight, bias)
        out.float().square().mean().backward()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark times CUDA kernels: no CUDA device here")
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 224, 224, device="cuda")
    weight = (torch.randn(768, 3, 32, 32, device="cuda") / 55).requires_grad_()
    bias = torch.zeros(768, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        reference, product = conv(x, weight, bias), as_matmul(x, weight, bias)
    print(f"patch embedding, batch {args.batch_size}, on {torch.cuda.get_device_name()}; matmul vs cuDNN output: "
          f"max |difference| {(reference.float() - product.float()).abs().max().item():.3g} "
          f"(outputs up to {reference.float().abs().max().item():.3g})")
    baseline = timed(conv, x, weight, bias, args.steps)
    print(f"cuDNN, heuristics: {baseline:.3f} ms")
    torch.backends.cudnn.benchmark = True
    tuned = timed(conv, x, weight, bias, args.steps)
    torch.backends.cudnn.benchmark = False
    print(f"cuDNN, benchmark mode: {tuned:.3f} ms ({baseline / tuned:.2f}x)")
    last = timed(conv, x.contiguous(memory_format=torch.channels_last), weight, bias, args.steps)
    print(f"cuDNN, channels-last input: {last:.3f} ms ({baseline / last:.2f}x)")
    matmul = timed(as_matmul, x, weight, bias, args.steps)
    print(f"as a matmul: {matmul:.3f} ms ({baseline / matmul:.2f}x)")


if __name__ == "__main__":
    main()
